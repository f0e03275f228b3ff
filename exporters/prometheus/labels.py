"""OTel attributes → Prometheus label sets, on the hot path.

One point's labels are its attributes plus labels shared by every point of its scope and resource
(`otel_scope_*`, `job`, `instance`). The shared part is built once per scope (`BaseLabels`); per point
only the attributes are converted, with label names cached. Collisions (`http.method` + `http_method`,
or an attribute called `job`) take a slow path that merges values with `;` as the spec requires.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from exporters.prometheus.naming import InvalidNameError, attribute_label_name, label_name, merge_labels

LabelKey = tuple[tuple[str, str], ...]
"""A series identity inside one family: its labels as sorted (name, value) pairs."""

UNKNOWN_SERVICE = "unknown_service"  # what the SDKs report when service.name is not set

_IDENTITY_KEYS = frozenset({"service.name", "service.namespace", "service.instance.id"})
_MISSING = object()


def format_double(value: float) -> str:
    """A double as a JSON-style number without exponent, like Go's FormatFloat(v, 'f', -1, 64).

    That is what the Collector writes for double attributes (`1.5`, `3`, `0.0000001`).
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(value)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text.removesuffix(".0")


def _native(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind == "array_value":
        return [_native(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _native(kv.value) for kv in value.kvlist_value.values}
    return None


def any_value_str(value: AnyValue) -> str:
    """An AnyValue as a label value, per the spec's "AnyValue representation for non-OTLP protocols".

    Booleans are JSON `true`/`false` (not Python's `True`), arrays and maps JSON, bytes base64,
    an empty value the empty string.
    """
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return format_double(value.double_value)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind in ("array_value", "kvlist_value"):
        return json.dumps(_native(value), separators=(",", ":"), ensure_ascii=False)
    return ""


class ResourceIdentity(NamedTuple):
    """What a resource contributes: `job`/`instance` for series, the rest for `target_info`."""

    job: str
    instance: str
    service_name: str
    other: tuple[tuple[str, str], ...]  # (attribute key, value) minus service.name/namespace/instance.id


def resource_identity(attributes: Sequence[KeyValue]) -> ResourceIdentity:
    """job = `<service.namespace>/<service.name>` (or the name alone), instance = `service.instance.id`.

    The Collector only sets `job` when `service.name` is present; `service_name` (used by span and
    log metrics) falls back to `unknown_service` like the SDKs do.
    """
    name = namespace = instance = ""
    other: list[tuple[str, str]] = []
    for kv in attributes:
        if kv.key in _IDENTITY_KEYS:
            value = any_value_str(kv.value)
            if kv.key == "service.name":
                name = value
            elif kv.key == "service.namespace":
                namespace = value
            else:
                instance = value
        else:
            other.append((kv.key, any_value_str(kv.value)))
    job = (f"{namespace}/{name}" if namespace else name) if name else ""
    return ResourceIdentity(job, instance, name or UNKNOWN_SERVICE, tuple(other))


class BaseLabels(NamedTuple):
    """Labels shared by every point of one scope of one resource."""

    labels: dict[str, str]  # merged; copied for each point
    items: tuple[tuple[str, str, str], ...]  # (label, original key, value) for the collision slow path


def target_labels(identity: ResourceIdentity) -> dict[str, str]:
    """`target_info` labels: resource attributes (sanitized, collisions merged) plus job and instance.

    A resource attribute that sanitizes to `job` or `instance` is dropped here, so the
    `* on(job, instance) group_left target_info` join always matches the series' own labels.
    """
    items: list[tuple[str, str, str]] = []
    for key, value in identity.other:
        try:
            label = label_name(key)
        except InvalidNameError:
            continue
        if label not in ("job", "instance"):
            items.append((label, key, value))
    labels = merge_labels(items)
    if identity.job:
        labels["job"] = identity.job
    if identity.instance:
        labels["instance"] = identity.instance
    return labels


class LabelBuilder:
    """Converts point attributes to a label set and its series key, caching sanitized names.

    The name cache is bounded: attribute keys come from clients, so it is cleared when full
    rather than allowed to grow.
    """

    def __init__(self, max_cached_names: int = 4096) -> None:
        self._names: dict[str, str | None] = {}
        self._max = max_cached_names

    def attribute_name(self, key: str) -> str | None:
        """The label for a point attribute key, or None when the key sanitizes to nothing."""
        name = self._names.get(key, _MISSING)
        if name is _MISSING:
            try:
                name = attribute_label_name(key)
            except InvalidNameError:
                name = None
            if len(self._names) >= self._max:
                self._names.clear()
            self._names[key] = name
        return name  # type: ignore[return-value]

    def base(
        self,
        identity: ResourceIdentity | None,
        scope_name: str = "",
        scope_version: str = "",
        schema_url: str = "",
        scope_attributes: Iterable[KeyValue] = (),
        *,
        scope_labels: bool = True,
    ) -> BaseLabels:
        """The labels every point of a scope carries: `otel_scope_*` and `job`/`instance`."""
        items: list[tuple[str, str, str]] = []
        if scope_labels:
            reserved = ("otel_scope_name", "otel_scope_version", "otel_scope_schema_url")
            for kv in scope_attributes:
                original = "otel_scope_" + kv.key
                try:
                    label = label_name(original)
                except InvalidNameError:
                    continue
                if label not in reserved:  # spec §1.3: such a scope attribute MUST be dropped
                    items.append((label, original, any_value_str(kv.value)))
            items.append(("otel_scope_name", "otel_scope_name", scope_name))
            items.append(("otel_scope_version", "otel_scope_version", scope_version))
            items.append(("otel_scope_schema_url", "otel_scope_schema_url", schema_url))
        if identity is not None:
            items.append(("job", "job", identity.job))
            items.append(("instance", "instance", identity.instance))
        return BaseLabels(merge_labels(items), tuple(items))

    def point(self, base: BaseLabels, attributes: Sequence[KeyValue]) -> tuple[LabelKey, dict[str, str]]:
        """(series key, labels) for one data point."""
        labels = base.labels.copy()
        names = self._names
        for kv in attributes:
            key = kv.key
            label = names.get(key, _MISSING)
            if label is _MISSING:
                label = self.attribute_name(key)
            if label is None:
                continue
            value = kv.value
            # string_value is "" for any other kind, and "" means absent anyway: one cheap test first.
            text = value.string_value or any_value_str(value)
            if not text:
                continue
            if label in labels:
                return self._merged(base, attributes)
            labels[label] = text  # type: ignore[index]
        return tuple(sorted(labels.items())), labels

    def _merged(self, base: BaseLabels, attributes: Sequence[KeyValue]) -> tuple[LabelKey, dict[str, str]]:
        items: list[tuple[str, str, str]] = []
        for kv in attributes:
            label = self.attribute_name(kv.key)
            if label is not None:
                items.append((label, kv.key, any_value_str(kv.value)))
        items.extend(base.items)
        labels = merge_labels(items)
        return tuple(sorted(labels.items())), labels
