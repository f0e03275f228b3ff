"""deploy/: every YAML parses, every file a manifest, compose file, Dockerfile or provisioning file
refers to exists, the sidecar is wired the way otelpg needs, and promtool accepts the Prometheus
configuration and rules (and their unit tests)."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
PROM = DEPLOY / "prometheus"
PROMTOOL = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`, installed by .ci/run)"
)

YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path):
    docs = list(yaml.safe_load_all(path.read_text()))
    assert docs and all(isinstance(d, dict) for d in docs)


def test_dashboard_json_parses():
    files = list((DEPLOY / "grafana").rglob("*.json"))
    assert len(files) == 5
    for f in files:
        assert json.loads(f.read_text())["uid"]


# --- Kubernetes -----------------------------------------------------------------------------------------


def _k8s_objects() -> list[dict]:
    kustomization = _load(K8S / "kustomization.yaml")
    objects = []
    for resource in kustomization["resources"]:
        path = K8S / resource
        assert path.is_file(), f"kustomization.yaml lists {resource}, which does not exist"
        objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return objects


def test_kustomization_references_existing_files():
    kustomization = _load(K8S / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    for key in ("patches", "configMapGenerator", "secretGenerator"):
        for entry in kustomization.get(key, []):
            for f in [entry.get("path"), *entry.get("files", []), *entry.get("envs", [])]:
                if f:
                    assert (K8S / f.split("=")[-1]).is_file(), f
    for obj in _k8s_objects():
        assert obj["apiVersion"] and obj["kind"] and obj["metadata"]["name"]


def _deployment() -> dict:
    return next(o for o in _k8s_objects() if o["kind"] == "Deployment")


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_deployment_runs_otelpg_as_a_sidecar_of_the_app():
    deployment = _deployment()
    spec = deployment["spec"]
    pod = spec["template"]
    assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    containers = pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
    otelpg = next(c for c in containers if c["name"] == "otelpg")
    app = next(c for c in pod["spec"]["containers"] if c["name"] != "otelpg")
    if otelpg in pod["spec"].get("initContainers", []):
        assert otelpg.get("restartPolicy") == "Always", "an init container is a sidecar only with restartPolicy"

    env = _env(otelpg)
    # DSN from a Secret, never inline
    assert env["OTELPG_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"]
    assert "value" not in env["OTELPG_DATABASE_URL"]
    # OTLP on loopback is enough in a pod; the admin port must be reachable by Prometheus and the kubelet
    ports = {p["name"]: p["containerPort"] for p in otelpg["ports"]}
    assert env["OTELPG_ADMIN_ENDPOINT"]["value"] == f"0.0.0.0:{ports['otelpg-admin']}"
    grpc_port = int(env["OTELPG_GRPC_ENDPOINT"]["value"].rsplit(":", 1)[1])
    assert _env(app)["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == f"http://127.0.0.1:{grpc_port}"
    # probes on the admin endpoints
    probes = {
        kind: otelpg[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe", "startupProbe") if kind in otelpg
    }
    assert probes["readinessProbe"]["path"] == "/api/health/ready"
    # not /health (503 while the database is away): a restart during an outage must be able to start
    assert probes["startupProbe"]["path"] == probes["livenessProbe"]["path"] == "/metrics"
    for probe in probes.values():
        assert probe["port"] in ports or probe["port"] == ports["otelpg-admin"]
    # the spool in an emptyDir mounted at the data dir
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in otelpg["volumeMounts"]}
    spool = mounts[env["OTELPG_DATA_DIR"]["value"]]
    assert "emptyDir" in volumes[spool]
    # resource requests on both containers
    for c in (otelpg, app):
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], c["name"]
    # Prometheus scrape annotations point at the admin port
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports["otelpg-admin"]
    # the Kubernetes scrape job keeps exactly that port
    job = next(j for j in _load(PROM / "prometheus-kubernetes.yml")["scrape_configs"] if j["job_name"] == "otelpg")
    assert any(r.get("regex") == "otelpg-admin" for r in job["relabel_configs"])
    # shutdown: the pod waits longer than otelpg's drain (shutdown.grace_period, 20 s by default)
    assert pod["spec"]["terminationGracePeriodSeconds"] > 20


def test_service_selects_the_deployment_pods():
    deployment = _deployment()
    for svc in (o for o in _k8s_objects() if o["kind"] == "Service"):
        assert svc["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


# --- compose --------------------------------------------------------------------------------------


def _compose() -> dict:
    return _load(DEPLOY / "compose.yaml")


def _bind_mounts(service: dict) -> list[tuple[Path, str]]:
    out = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            out.append(((DEPLOY / source).resolve(), target))
    return out


def _to_host(service: dict, container_path: str) -> Path | None:
    for host, target in _bind_mounts(service):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return host / PurePosixPath(container_path).relative_to(target)
    return None


def test_compose_references_existing_files_and_services():
    compose = _compose()
    services = compose["services"]
    assert {"postgres", "otelpg", "prometheus", "grafana", "example-app"} <= set(services)
    named_volumes = set(compose.get("volumes", {}))
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = (DEPLOY / (build if isinstance(build, str) else build["context"])).resolve()
            assert context.is_dir(), (name, context)
            dockerfile = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
            assert dockerfile.is_file(), (name, dockerfile)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in named_volumes, (name, volume)
        for host, _ in _bind_mounts(service):
            assert host.exists(), (name, host)
        for dep in service.get("depends_on", []):
            assert dep in services, (name, dep)
        # environment values that are paths inside a bind mount name files that exist
        for key, value in (service.get("environment") or {}).items():
            if isinstance(value, str) and value.startswith("/"):
                host = _to_host(service, value)
                if host is not None:
                    assert host.exists(), (name, key, value)


def test_compose_otelpg_listens_on_all_interfaces_and_is_scraped():
    services = _compose()["services"]
    env = services["otelpg"]["environment"]
    for key in ("OTELPG_GRPC_ENDPOINT", "OTELPG_HTTP_ENDPOINT", "OTELPG_ADMIN_ENDPOINT"):
        assert env[key].startswith("0.0.0.0:"), key
    assert "@postgres:5432/" in env["OTELPG_DATABASE_URL"]
    admin_port = env["OTELPG_ADMIN_ENDPOINT"].rsplit(":", 1)[1]
    grpc_port = env["OTELPG_GRPC_ENDPOINT"].rsplit(":", 1)[1]
    assert services["example-app"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://otelpg:{grpc_port}"

    prometheus = services["prometheus"]
    config_path = _to_host(prometheus, "/etc/prometheus/prometheus.yml")
    assert config_path is not None
    config = _load(config_path)
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "otelpg")
    assert job["honor_labels"] is True
    assert job["static_configs"][0]["targets"] == [f"otelpg:{admin_port}"]
    for rules in config["rule_files"]:
        assert _to_host(prometheus, f"/etc/prometheus/{rules}") is not None, f"{rules} is not mounted"


def test_compose_grafana_gets_its_provisioning_and_every_variable_it_uses():
    grafana = _compose()["services"]["grafana"]
    provisioning = _to_host(grafana, "/etc/grafana/provisioning")
    assert provisioning == DEPLOY / "grafana" / "provisioning"
    env = grafana["environment"]
    for path in (provisioning / "datasources").glob("*.yaml"):
        values = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        used = set(re.findall(r"\$\{?(\w+)\}?", values))
        assert used <= set(env), f"{path.name} uses {sorted(used - set(env))}, not set for grafana"
    for provider in _load(provisioning / "dashboards" / "otelpg.yaml")["providers"]:
        folder = _to_host(grafana, provider["options"]["path"])
        assert folder is not None and len(list(folder.glob("*.json"))) == 5


# --- Dockerfiles ----------------------------------------------------------------------------------


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics: the last matching pattern wins; a pattern matching a parent matches."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.rstrip("/")
        prefix = ""
        if pattern.startswith("**/"):  # any depth
            prefix, pattern = "(?:.*/)?", pattern[3:]
        regex = prefix + fnmatch.translate(pattern).replace(".*", "[^/]*")  # `*` stops at `/`
        if any(re.fullmatch(regex, c) for c in candidates):
            ignored = not negate
    return ignored


@pytest.mark.parametrize(
    ("dockerfile", "context"),
    [
        (DEPLOY / "Dockerfile", ROOT),
        (DEPLOY / "example-app" / "Dockerfile", DEPLOY / "example-app"),
    ],
    ids=["otelpg", "example-app"],
)
def test_dockerfile_copies_existing_files_runs_as_non_root_with_a_healthcheck(dockerfile: Path, context: Path):
    instructions = _instructions(dockerfile)
    ignore_file = dockerfile.with_name(dockerfile.name + ".dockerignore")
    patterns = (
        [p.strip() for p in ignore_file.read_text().splitlines() if p.strip() and not p.startswith("#")]
        if ignore_file.exists()
        else []
    )
    for word, rest in instructions:
        if word in ("COPY", "ADD") and "--from=" not in rest:
            *sources, _dest = rest.split()
            for source in sources:
                assert (context / source).exists(), f"{dockerfile.name}: COPY {source}: no such file"
                assert not _ignored(source, patterns), f"{source} is excluded by {ignore_file.name}"
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert all(
        rest.split()[0].endswith("-slim") or " AS " in rest or "slim" in rest
        for word, rest in instructions
        if word == "FROM"
    )
    if dockerfile.parent == DEPLOY:
        assert any(word == "HEALTHCHECK" for word, _ in instructions)
        env = " ".join(rest for word, rest in instructions if word == "ENV")
        # the wheel built in the image carries the migrations (tests/deploy/test_wheel.py)
        assert ("COPY", "migrations ./migrations") in instructions
        for key in ("OTELPG_GRPC_ENDPOINT", "OTELPG_HTTP_ENDPOINT", "OTELPG_ADMIN_ENDPOINT"):
            assert f"{key}=0.0.0.0:" in env, key


def test_dockerignore_semantics():
    patterns = ["*", "!sidecar/", "!config/otelpg.yaml", "**/__pycache__"]
    assert not _ignored("sidecar/app.py", patterns)
    assert _ignored("tests/conftest.py", patterns)
    assert _ignored("config/other.yaml", patterns)
    assert not _ignored("config/otelpg.yaml", patterns)
    assert _ignored("sidecar/__pycache__/app.pyc", patterns)


# --- Prometheus -------------------------------------------------------------------------------------


def _promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@needs_promtool
def test_promtool_check_config():
    out = _promtool("check", "config", "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_promtool_check_config_kubernetes(tmp_path: Path):
    out = _promtool("check", "config", "prometheus-kubernetes.yml")
    if out.returncode != 0 and "field kubernetes_sd_configs not found" in out.stdout + out.stderr:
        # Debian builds Prometheus without Kubernetes discovery: check everything else, with the
        # discovery block swapped for a file-based one.
        config = _load(PROM / "prometheus-kubernetes.yml")
        for job in config["scrape_configs"]:
            assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
            job["file_sd_configs"] = [{"files": ["targets.json"]}]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        shutil.copy(PROM / "otelpg-rules.yml", tmp_path)
        out = _promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_promtool_check_rules():
    out = _promtool("check", "rules", "otelpg-rules.yml")
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_promtool_test_rules():
    out = _promtool("test", "rules", "otelpg-rules.test.yml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_alerts_cover_refused_data_spool_growth_and_database_down():
    rules = _load(PROM / "otelpg-rules.yml")
    alerts = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert "otelpg_database_up" in alerts["OtelpgDatabaseDown"]
    assert "refused" in alerts["OtelpgRefusingData"]
    assert "spool" in alerts["OtelpgSpoolGrowing"]
    for path in (PROM / "prometheus.yml", PROM / "prometheus-kubernetes.yml"):
        jobs = _load(path)["scrape_configs"]
        assert all(j["honor_labels"] is True for j in jobs if j["job_name"] == "otelpg"), path.name


# --- docs -------------------------------------------------------------------------------------------


def test_deploy_readme_covers_every_path():
    readme = (DEPLOY / "README.md").read_text()
    for entry in sorted(DEPLOY.iterdir()):
        if entry.name.startswith(".") or entry.name == "README.md":
            continue
        assert entry.name in readme, f"deploy/README.md does not mention {entry.name}"
    assert "## Deploy" in (ROOT / "README.md").read_text()
