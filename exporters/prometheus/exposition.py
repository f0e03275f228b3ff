"""Rendering a registry for one scrape: content negotiation, gzip, headers.

Synchronous on purpose: the admin server calls `render` in a worker thread so a large exposition
never blocks the event loop. That is safe because collect() only reads aggregator snapshots
(see aggregator.py).
"""

from __future__ import annotations

import gzip

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, generate_latest
from prometheus_client.registry import CollectorRegistry

OPENMETRICS = "application/openmetrics-text"
GZIP_LEVEL = 6  # ~40x smaller bodies at a fraction of level 9's CPU


def _items(header: str) -> list[tuple[str, float, str]]:
    """(media type lowercased, q, the raw item) for each item of an Accept-like header."""
    items = []
    for item in header.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        items.append((media.lower(), q, item))
    return items


def _gzip_accepted(accept_encoding: str) -> bool:
    return any(media in ("gzip", "*") and q > 0 for media, q, _ in _items(accept_encoding))


def _preferred_openmetrics(accept_header: str) -> str | None:
    """The Accept item to serve OpenMetrics for, or None for text 0.0.4.

    Unlike prometheus_client's choose_encoder, which takes the first known item whatever its `q`,
    this honours weights: OpenMetrics wins only when no text/plain (or */*) item is weighted higher
    (ties go to the earlier item, Prometheus lists its preferred protocol first).
    """
    best: tuple[float, int] | None = None
    chosen: str | None = None
    for position, (media, q, item) in enumerate(_items(accept_header)):
        if q <= 0 or media not in (OPENMETRICS, "text/plain", "text/*", "*/*"):
            continue
        rank = (q, -position)
        if best is None or rank > best:
            best, chosen = rank, item if media == OPENMETRICS else None
    return chosen


def render(
    registry: CollectorRegistry, accept_header: str | None, accept_encoding: str | None
) -> tuple[bytes, dict[str, str]]:
    """(body, headers) for GET /metrics. Content-Type is always set: Prometheus 3 fails a scrape
    without one. OpenMetrics 1.0 when asked for, else text 0.0.4; gzip when accepted."""
    item = _preferred_openmetrics(accept_header or "")
    if item is not None:
        encoder, content_type = choose_encoder(item)
        if not content_type.startswith(OPENMETRICS):  # e.g. an unsupported OpenMetrics version
            encoder, content_type = generate_latest, CONTENT_TYPE_PLAIN_0_0_4
    else:
        encoder, content_type = generate_latest, CONTENT_TYPE_PLAIN_0_0_4
    body = encoder(registry)
    headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
    if _gzip_accepted(accept_encoding or ""):
        body = gzip.compress(body, compresslevel=GZIP_LEVEL)
        headers["Content-Encoding"] = "gzip"
    return body, headers
