from pathlib import Path

import pytest

from exporters.postgres.config import redact_dsn
from sidecar.config import (
    SETTINGS,
    Config,
    documented_yaml,
    effective_config,
    load_config,
)
from sidecar.pipeline.errors import ConfigError
from sidecar.receivers.config import parse_endpoint

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_match_the_design_contract():
    c = load_config(env={})
    assert c.database.url is None
    assert c.grpc.endpoint == "127.0.0.1:4317"
    assert c.http.endpoint == "127.0.0.1:4318"
    assert c.admin.endpoint == "127.0.0.1:9464"
    assert c.data_dir == ".otelpg"
    assert c.log_level == "info"


def test_documented_yaml_is_generated_from_the_settings():
    assert (ROOT / "config" / "otelpg.yaml").read_text() == documented_yaml(), (
        "config/otelpg.yaml is stale: python -m sidecar.config > config/otelpg.yaml"
    )


def test_documented_yaml_lists_every_key_with_its_default():
    text = (ROOT / "config" / "otelpg.yaml").read_text()
    for s in SETTINGS:
        assert f"{s.key.split('.')[-1]}:" in text, s.key
    assert load_config(ROOT / "config" / "otelpg.yaml", env={}) == Config()


def test_file_then_environment_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("batch:\n  max_rows: 100\nhttp:\n  endpoint: 0.0.0.0:9999\nlog_level: debug\n")
    c = load_config(f, env={"OTELPG_HTTP_ENDPOINT": "127.0.0.1:0", "DATABASE_URL": "postgresql://u@h/d"})
    assert c.batch.max_rows == 100
    assert c.http.endpoint == "127.0.0.1:0"
    assert c.log_level == "debug"
    assert c.database.url == "postgresql://u@h/d"


def test_otelpg_database_url_wins_over_database_url():
    c = load_config(env={"OTELPG_DATABASE_URL": "postgresql://a@h/x", "DATABASE_URL": "postgresql://b@h/y"})
    assert c.database.url == "postgresql://a@h/x"


def test_config_file_from_environment(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("batch: {max_delay: 0.05}\n")
    assert load_config(env={"OTELPG_CONFIG": str(f)}).batch.max_delay == 0.05


@pytest.mark.parametrize(
    ("yaml_text", "env", "key"),
    [
        ("batch:\n  max_rows: lots\n", {}, "batch.max_rows"),
        ("batch:\n  max_rows: 0\n", {}, "batch.max_rows"),
        ("nonsense: 1\n", {}, "nonsense"),
        ("http:\n  endpointt: x\n", {}, "http.endpointt"),
        ("", {"OTELPG_HTTP_ENDPOINT": "localhost"}, "http.endpoint"),
        ("", {"OTELPG_ADMIN_ENDPOINT": "127.0.0.1:70000"}, "admin.endpoint"),
        ("", {"OTELPG_LOG_LEVEL": "loud"}, "log_level"),
        ("", {"OTELPG_DATABASE_URL": "mysql://x"}, "database.url"),
        ("queue: {high_water_mark: 2}\n", {}, "queue.high_water_mark"),
        ("http: {enabled: maybe}\n", {}, "http.enabled"),
        ("tls: {cert_file: /nonexistent.pem, key_file: /nonexistent.key}\n", {}, "tls.cert_file"),
    ],
)
def test_invalid_config_names_the_key(tmp_path, yaml_text, env, key):
    f = tmp_path / "c.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(f, env=env)
    assert info.value.exit_code == 2
    assert key in str(info.value)
    assert "\n" not in str(info.value)


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="can't read"):
        load_config(tmp_path / "missing.yaml", env={})
    f = tmp_path / "bad.yaml"
    f.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(f, env={})


def test_endpoints():
    assert parse_endpoint("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_endpoint("[::1]:4317") == ("::1", 4317)
    assert parse_endpoint(":4318") == ("0.0.0.0", 4318)


def test_secrets_are_redacted():
    c = load_config(
        env={
            "OTELPG_DATABASE_URL": "postgresql://user:s3cret@db:5432/x?sslmode=require",
            "OTELPG_BEARER_TOKEN": "tok-123",
        }
    )
    eff = effective_config(c)
    assert eff["database.url"] == "postgresql://user:***@db:5432/x?sslmode=require"
    assert eff["auth.bearer_token"] == "***"
    assert "s3cret" not in str(eff) and "tok-123" not in str(eff)
    assert redact_dsn("postgresql://h/db?password=pw&x=1") == "postgresql://h/db?password=***&x=1"
