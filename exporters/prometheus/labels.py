"""OTel attributes → Prometheus label sets, on the hot path.

One point's labels are its attributes plus labels shared by every point of its scope and resource
(`otel_scope_*`, `job`, `instance`). The shared part is built once per scope and resource
(`BaseLabels`); per point only the attributes are converted, and a finished label set is cached by the
attributes' wire fingerprint (wire.py), so a series seen before costs a dict lookup. Collisions
(`http.method` + `http_method`, or an attribute called `job`) take a slow path that merges values
with `;` as the spec requires.
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

    id: int  # distinguishes cached label sets of different scopes/resources
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
    """Converts point attributes to a label set and its series key.

    Three caches, all bounded because their keys come from clients (each is cleared when full rather
    than allowed to grow): sanitized attribute names; the base labels of each scope/resource; and
    finished label sets by attribute fingerprint (wire.py). The last one is filled only through
    `remember`, for label sets that got a series of their own, so a flood of one-off values can't
    fill it and its size follows the series caps.
    """

    def __init__(self, max_label_sets: int = 20_000, max_names: int = 4096, max_bases: int = 1024) -> None:
        self._names: dict[str, str | None] = {}
        self._bases: dict[tuple, BaseLabels] = {}
        self._label_sets: dict[tuple[int, bytes], tuple[LabelKey, dict[str, str]]] = {}
        self._max_label_sets, self._max_names, self._max_bases = max_label_sets, max_names, max_bases
        self._next_id = 0

    def attribute_name(self, key: str) -> str | None:
        """The label for a point attribute key, or None when the key sanitizes to nothing."""
        name = self._names.get(key, _MISSING)
        if name is _MISSING:
            try:
                name = attribute_label_name(key)
            except InvalidNameError:
                name = None
            if len(self._names) >= self._max_names:
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
        scope_items = tuple((kv.key, any_value_str(kv.value)) for kv in scope_attributes) if scope_labels else ()
        job, instance = (identity.job, identity.instance) if identity is not None else ("", "")
        signature = (job, instance, scope_name, scope_version, schema_url, scope_items, scope_labels)
        base = self._bases.get(signature)
        if base is None:
            if len(self._bases) >= self._max_bases:
                self._bases.clear()
                self._label_sets.clear()  # keyed by base ids that are now unreachable
            base = self._bases[signature] = self._build_base(
                identity, scope_name, scope_version, schema_url, scope_items, scope_labels
            )
        return base

    def _build_base(
        self,
        identity: ResourceIdentity | None,
        scope_name: str,
        scope_version: str,
        schema_url: str,
        scope_items: tuple[tuple[str, str], ...],
        scope_labels: bool,
    ) -> BaseLabels:
        items: list[tuple[str, str, str]] = []
        if scope_labels:
            reserved = ("otel_scope_name", "otel_scope_version", "otel_scope_schema_url")
            for key, value in scope_items:
                original = "otel_scope_" + key
                try:
                    label = label_name(original)
                except InvalidNameError:
                    continue
                if label not in reserved:  # the compatibility spec: such a scope attribute MUST be dropped
                    items.append((label, original, value))
            items.append(("otel_scope_name", "otel_scope_name", scope_name))
            items.append(("otel_scope_version", "otel_scope_version", scope_version))
            items.append(("otel_scope_schema_url", "otel_scope_schema_url", schema_url))
        if identity is not None:
            items.append(("job", "job", identity.job))
            items.append(("instance", "instance", identity.instance))
        self._next_id += 1
        return BaseLabels(self._next_id, merge_labels(items), tuple(items))

    def cached(self, base: BaseLabels, fingerprint: bytes) -> tuple[LabelKey, dict[str, str]] | None:
        """A label set remembered for these attributes (by wire fingerprint) under this base."""
        return self._label_sets.get((base.id, fingerprint))

    def remember(self, base: BaseLabels, fingerprint: bytes, key: LabelKey, labels: dict[str, str]) -> None:
        if len(self._label_sets) >= self._max_label_sets:
            self._label_sets.clear()
        self._label_sets[(base.id, fingerprint)] = (key, labels)

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
