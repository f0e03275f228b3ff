"""OTLP/JSON encoding of requests, for tests: what an SDK sends with `application/json`.

otelpg only decodes OTLP/JSON requests (`sidecar.receivers.encoding`); the JSON it writes is
responses and statuses, which carry no ids. Requests carry trace and span ids, which OTLP/JSON
spells as hex where proto3 JSON (json_format) writes base64: this rewrites them.
"""

from __future__ import annotations

import base64
from typing import Any, NamedTuple

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

# Bytes fields carried as hex in OTLP/JSON (the receiver's decoder reads the same set).
_HEX_ID_FIELDS = frozenset({"trace_id", "span_id", "parent_span_id", "profile_id"})


def message_to_otlp_json(message: Message) -> dict[str, Any]:
    """OTLP/JSON as a dict: lowerCamelCase keys, lowercase hex ids, integer enums, int64 strings."""
    obj = json_format.MessageToDict(message, use_integers_for_enums=True)
    _hexify(obj, message.DESCRIPTOR)
    return obj


def otlp_json(message: Message) -> bytes:
    """The OTLP/JSON body of a request."""
    return orjson.dumps(message_to_otlp_json(message))


def _is_hex_id(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_BYTES and field.name in _HEX_ID_FIELDS


def _is_plain_message(field: FieldDescriptor) -> bool:
    """A message field that is neither a map nor a well-known type (their JSON differs)."""
    sub = field.message_type
    return sub is not None and not sub.GetOptions().map_entry and not sub.full_name.startswith("google.protobuf.")


class _HexStep(NamedTuple):
    sub: Descriptor | None  # None: the field is a hex id itself
    repeated: bool


_HEX_PLANS: dict[Descriptor, dict[str, _HexStep]] = {}


def _hexify(obj: dict[str, Any], descriptor: Descriptor) -> None:
    """Rewrite json_format's base64 ids as hex, visiting only fields that can lead to an id."""
    for key, step in _hex_plan(descriptor).items():
        value = obj.get(key)
        if value is None:
            continue
        if step.sub is None:
            obj[key] = [_b64_to_hex(v) for v in value] if step.repeated else _b64_to_hex(value)
        elif step.repeated:
            for item in value:
                _hexify(item, step.sub)
        else:
            _hexify(value, step.sub)


def _b64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()


def _hex_plan(descriptor: Descriptor) -> dict[str, _HexStep]:
    plan = _HEX_PLANS.get(descriptor)
    if plan is None:
        _HEX_PLANS.update(_build_hex_plans(descriptor))
        plan = _HEX_PLANS[descriptor]
    return plan


def _build_hex_plans(root: Descriptor) -> dict[Descriptor, dict[str, _HexStep]]:
    """For every message type reachable from `root`: the fields that are, or lead to, hex ids."""
    reachable = _reachable(root)
    leads_to_ids: set[Descriptor] = set()
    changed = True
    while changed:  # fixed point: message types can be recursive (AnyValue <-> ArrayValue)
        changed = False
        for descriptor in reachable - leads_to_ids:
            if any(_is_hex_id(f) or f.message_type in leads_to_ids for f in descriptor.fields):
                leads_to_ids.add(descriptor)
                changed = True
    return {
        descriptor: {
            f.json_name: _HexStep(None if _is_hex_id(f) else f.message_type, f.is_repeated)
            for f in descriptor.fields
            if _is_hex_id(f) or f.message_type in leads_to_ids
        }
        for descriptor in reachable
    }


def _reachable(root: Descriptor) -> set[Descriptor]:
    """Message types under `root`, not entering maps or well-known types."""
    seen = {root}
    todo = [root]
    while todo:
        for field in todo.pop().fields:
            if not _is_plain_message(field) or field.message_type in seen:
                continue
            seen.add(field.message_type)
            todo.append(field.message_type)
    return seen
