"""Attribute values and label sets: the spec's AnyValue rules, collisions, job/instance, target_info."""

from __future__ import annotations

import pytest

from exporters.prometheus.labels import (
    LabelBuilder,
    any_value_str,
    format_double,
    resource_identity,
    target_labels,
)
from tests.unit.prometheus.builders import any_value, attrs


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("GET", "GET"),
        (True, "true"),  # JSON, not Python's True (a known exporter pitfall)
        (False, "false"),
        (42, "42"),
        (-7, "-7"),
        (1.5, "1.5"),
        (3.0, "3"),
        (1e-7, "0.0000001"),
        (1e21, "1000000000000000000000"),
        (float("nan"), "NaN"),
        (b"\x00\xff", "AP8="),  # base64
        (["a", 1, True], '["a",1,true]'),
        ({"k": "v"}, '{"k":"v"}'),
    ],
)
def test_any_value_str(value, expected):
    assert any_value_str(any_value(value)) == expected


def test_empty_any_value_is_the_empty_string():
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    assert any_value_str(AnyValue()) == ""


def test_format_double_infinities():
    assert format_double(float("inf")) == "+Inf"
    assert format_double(float("-inf")) == "-Inf"


def test_point_labels_add_scope_and_resource_labels():
    builder = LabelBuilder()
    identity = resource_identity(attrs({"service.name": "api", "service.instance.id": "i-1", "host.name": "h"}))
    base = builder.base(identity, "lib", "1.0", "https://schema", attrs({"team": "core"}))
    key, labels = builder.point(base, attrs({"http.route": "/x", "ok": True}))
    assert labels == {
        "http_route": "/x",
        "ok": "true",
        "otel_scope_team": "core",
        "otel_scope_name": "lib",
        "otel_scope_version": "1.0",
        "otel_scope_schema_url": "https://schema",
        "job": "api",
        "instance": "i-1",
    }
    assert key == tuple(sorted(labels.items()))


def test_point_labels_merge_collisions_from_attributes_and_added_labels():
    builder = LabelBuilder()
    base = builder.base(resource_identity(attrs({"service.name": "api"})), "lib", "", "")
    _, labels = builder.point(base, attrs({"http.method": "GET", "http_method": "POST", "job": "batch"}))
    assert labels["http_method"] == "GET;POST"
    assert labels["job"] == "batch;api"  # equal original keys keep input order: attributes first
    assert "otel_scope_version" not in labels  # empty values are absent labels


def test_reserved_and_invalid_attribute_names():
    builder = LabelBuilder()
    base = builder.base(None, scope_labels=False)
    _, labels = builder.point(base, attrs({"le": "1", "quantile": "q", "__name__": "x", "ようこそ": "y", "": "z"}))
    assert labels == {"key_le": "1", "key_quantile": "q", "key_name_": "x"}


def test_scope_attribute_taking_a_reserved_scope_label_is_dropped():
    builder = LabelBuilder()
    base = builder.base(None, "lib", "1", "", attrs({"name": "other", "version": "2"}))
    assert base.labels == {"otel_scope_name": "lib", "otel_scope_version": "1"}


def test_label_name_cache_is_bounded():
    builder = LabelBuilder(max_names=10)
    base = builder.base(None, scope_labels=False)
    for i in range(100):
        builder.point(base, attrs({f"key.{i}": "v"}))
    assert len(builder._names) <= 10


@pytest.mark.parametrize(
    ("resource", "job", "instance", "service"),
    [
        (
            {"service.name": "api", "service.namespace": "shop", "service.instance.id": "i-1"},
            "shop/api",
            "i-1",
            "api",
        ),
        ({"service.name": "api"}, "api", "", "api"),
        ({"service.namespace": "shop"}, "", "", "unknown_service"),  # no name → no job (Collector)
        ({}, "", "", "unknown_service"),
    ],
)
def test_job_and_instance(resource, job, instance, service):
    identity = resource_identity(attrs(resource))
    assert (identity.job, identity.instance, identity.service_name) == (job, instance, service)


def test_target_labels_carry_other_resource_attributes_and_keep_job_instance_joinable():
    identity = resource_identity(
        attrs(
            {
                "service.name": "api",
                "service.instance.id": "i-1",
                "k8s.pod.name": "p",
                "k8s_pod_name": "q",
                "job": "impostor",
                "host.arch": "amd64",
            }
        )
    )
    assert target_labels(identity) == {
        "k8s_pod_name": "p;q",
        "host_arch": "amd64",
        "job": "api",
        "instance": "i-1",
    }
