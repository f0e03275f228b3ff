"""`Authorization: Bearer <token>` check, the same for both receivers.

RFC 6750 / RFC 7235: the scheme is case-insensitive and is followed by one or more spaces (tabs
tolerated); a request carries one set of credentials, so more than one Authorization value is
refused rather than guessing which one counts (HTTP's first and gRPC's last used to differ). The
token is compared in constant time, as bytes; error messages never echo what was sent.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from sidecar.pipeline.errors import UnauthenticatedError

_SCHEME = b"bearer"
_BLANK = b" \t"


class BearerAuth:
    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("bearer token must not be empty")
        self._token = token.encode("utf-8")

    def check(self, values: Sequence[str | bytes]) -> None:
        """Return if `values` (every Authorization value of the request) is exactly one bearer
        credential with the configured token; raise UnauthenticatedError otherwise."""
        if not values:
            raise UnauthenticatedError("missing bearer token")
        if len(values) > 1:
            raise UnauthenticatedError("multiple Authorization headers")
        value = _as_bytes(values[0]).strip(_BLANK)  # OWS around a field value isn't part of it
        scheme, rest = value[: len(_SCHEME)], value[len(_SCHEME) :]
        if scheme.lower() != _SCHEME or rest[:1] not in (b" ", b"\t"):
            raise UnauthenticatedError("Authorization is not a bearer token")
        token = rest.lstrip(_BLANK)
        if not token:
            raise UnauthenticatedError("empty bearer token")
        if not hmac.compare_digest(token, self._token):
            raise UnauthenticatedError("invalid bearer token")


def _as_bytes(value: str | bytes) -> bytes:
    """A header value as sent: aiohttp decodes bytes that aren't UTF-8 as surrogates (undone here);
    a lone surrogate no encoder takes can't match any token."""
    if isinstance(value, bytes):
        return value
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise UnauthenticatedError("invalid bearer token") from None
