"""Kubernetes manifests: every overlay renders, validates offline, and passes policy."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sightline import k8s
from sightline.runtime import REPO_ROOT

K8S = REPO_ROOT / "k8s"
OVERLAYS = ("gpu", "cpu")
CORE_VERSION = "1.30.0"
# NGC container releases (year, month). Tracing every request crashed Triton 2.51 / 24.10
# under load (server issue #7795); the fix (server PR #8144) shipped first in 2.57 / 25.04.
# --metrics-config=histogram_latencies=true covers non-decoupled models from 2.65 / 26.01
# (core PR #464).
TRACING_FIX_RELEASE = (25, 4)
HISTOGRAM_LATENCIES_RELEASE = (26, 1)
pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) is not installed")


class _Loader(yaml.SafeLoader):
    """kustomize writes `matchType: =` bare; that is a plain string in YAML 1.2 (what the
    API server reads) but PyYAML's 1.1 resolver calls it the !!value tag."""


_Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


def render(path: Path, *flags: str) -> list[dict]:
    result = subprocess.run(["kubectl", "kustomize", *flags, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.load_all(result.stdout, Loader=_Loader) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, list[dict]]:
    return request.param, render(K8S / "overlays" / request.param)


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def flag(args: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    assert values, f"--{name} missing from Triton's args"
    return values[-1]


def test_the_generated_monitoring_objects_match_their_sources():
    assert k8s.stale() == [], "run `sightline k8s generate`"


def test_core_kinds_validate_against_the_kubernetes_schema(overlay):
    import kubernetes_validate

    _, docs = overlay
    core = [d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com")]
    assert {d["kind"] for d in core} >= {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                                          "NetworkPolicy", "ServiceAccount", "ConfigMap", "Namespace",
                                          "PersistentVolumeClaim"}
    for doc in core:
        kubernetes_validate.validate(doc, CORE_VERSION, strict=True)


def test_monitoring_kinds_have_the_structure_the_operator_needs(overlay, tmp_path):
    _, docs = overlay
    rule = one(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    groups = rule["spec"]["groups"]
    assert groups and all(g["name"] and g["rules"] for g in groups)
    for r in (r for g in groups for r in g["rules"]):
        assert r["expr"] and (("record" in r) != ("alert" in r))
    # the operator hands these groups to Prometheus unchanged: promtool must accept them
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    if shutil.which("promtool"):
        checked = subprocess.run(["promtool", "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    monitor = one(docs, "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] and monitor["spec"]["podMetricsEndpoints"]
    am = one(docs, "AlertmanagerConfig")
    assert am["apiVersion"] == "monitoring.coreos.com/v1alpha1"
    receivers = {r["name"] for r in am["spec"]["receivers"]}
    assert {r["receiver"] for r in am["spec"]["route"]["routes"]} <= receivers
    for receiver in am["spec"]["receivers"]:
        for webhook in receiver.get("webhookConfigs", []):
            assert "url" not in webhook and webhook["urlSecret"]["name"]  # no URL, no secret in git
    boards = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    assert {name for b in boards for name in b["data"]} == {p.name for p in (REPO_ROOT / "grafana" / "dashboards").glob("*.json")}


def test_every_container_has_limits_probes_and_a_restricted_security_context(overlay):
    _, docs = overlay
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            name = container["name"]
            limits = container["resources"]["limits"]
            assert "cpu" in limits and "memory" in limits, name
            assert "livenessProbe" in container and "readinessProbe" in container, name
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            image = container["image"]
            assert re.search(r":[\w][\w.-]*$", image) and not image.endswith(":latest"), f"{name}: {image} is not pinned"
    sa = one(docs, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False


def test_ports_agree_across_args_containers_service_probes_and_monitors(overlay):
    _, docs = overlay
    deployment = one(docs, "Deployment", "sightline-triton")
    pod = deployment["spec"]["template"]["spec"]
    triton, monitor = (next(c for c in pod["containers"] if c["name"] == n) for n in ("triton", "monitor"))
    ports = {p["name"]: p["containerPort"] for c in pod["containers"] for p in c["ports"]}
    args = triton["args"]
    assert int(flag(args, "http-port")) == ports["http"]
    assert int(flag(args, "grpc-port")) == ports["grpc"]
    assert int(flag(args, "metrics-port")) == ports["metrics"]
    trace_url = next(a for a in args if "opentelemetry,url=" in a)
    assert f":{ports['otlp']}/v1/traces" in trace_url
    tap = next(e["value"] for e in triton["env"] if e["name"] == "SIGHTLINE_TAP_ADDRESS")
    assert tap.endswith(f":{ports['tap']}")
    for container in (triton, monitor):
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if probe in container:
                assert container[probe]["httpGet"]["port"] in ports, (container["name"], probe)
    for service in (d for d in docs if d["kind"] == "Service"):
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports and ports[port["targetPort"]] == port["port"], port
    for endpoint in one(docs, "PodMonitor")["spec"]["podMetricsEndpoints"]:
        assert endpoint["port"] in ports
    config = yaml.safe_load(one(docs, "ConfigMap", "sightline-monitor")["data"]["monitor.yaml"])
    assert (config["metrics_port"], config["otlp_port"], config["tap_port"]) == (
        ports["monitor-metrics"], ports["otlp"], ports["tap"])
    policy_ports = {p["port"] for rule in one(docs, "NetworkPolicy")["spec"]["ingress"] for p in rule["ports"]}
    assert policy_ports == {ports["http"], ports["grpc"], ports["metrics"], ports["monitor-metrics"]}
    assert pod["terminationGracePeriodSeconds"] > int(flag(args, "exit-timeout-secs"))


def test_the_overlays_choose_the_right_model_profile_and_resources(overlay):
    name, docs = overlay
    triton = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    config_name = [a for a in triton["args"] if a.startswith("--model-config-name=")]
    if name == "gpu":
        assert triton["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert config_name == []  # config.pbtxt: onnxruntime_onnx + TensorRT
        assert flag(triton["args"], "allow-gpu-metrics") == "true"
    else:
        assert "nvidia.com/gpu" not in triton["resources"]["limits"]
        assert config_name == ["--model-config-name=local"]
        assert flag(triton["args"], "allow-gpu-metrics") == "false"


def container(docs: list[dict], name: str) -> dict:
    pod = one(docs, "Deployment", "sightline-triton")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == name)


def container_release(tag: str) -> tuple[int, int]:
    """(year, month) of the NGC container a tag names: `0.1.0-26.07`, `26.07-py3`."""
    found = re.search(r"(?:^|-)(\d{2})\.(\d{2})(?:-py3)?$", tag)
    assert found, f"{tag} names no Triton container release"
    return int(found[1]), int(found[2])


def test_tracing_is_sampled_on_a_release_past_the_tracing_fix(overlay):
    _, docs = overlay
    triton = container(docs, "triton")
    release = container_release(triton["image"].rsplit(":", 1)[1])
    # The tag says which container the image was built from: it must be the Dockerfile's.
    base = re.search(r"^FROM nvcr\.io/nvidia/tritonserver:(\S+)$",
                     (K8S / "images" / "triton.Dockerfile").read_text(), re.MULTILINE)
    assert base and container_release(base[1]) == release, (triton["image"], base and base[1])
    assert release >= TRACING_FIX_RELEASE, f"{triton['image']} predates the tracing fix (25.04)"

    trace = dict(a.removeprefix("--trace-config=").split("=", 1)
                 for a in triton["args"] if a.startswith("--trace-config="))
    level, rate = trace.get("level", "OFF").upper(), int(trace.get("rate", "1000"))  # Triton's defaults
    # Off, context-propagated requests only (rate 0), or one in `rate`; never every request.
    assert level == "OFF" or rate != 1, f"every request is traced: {trace}"

    assert flag(triton["args"], "metrics-config") == "histogram_latencies=true"
    assert release >= HISTOGRAM_LATENCIES_RELEASE


def test_an_overlay_points_at_another_registry_with_kustomize_images(tmp_path):
    """The `images:` list that `kustomize edit set image OLD=NEW:TAG` writes (docs/cluster.md)
    moves both containers of either overlay."""
    for name in OVERLAYS:
        pod = one(render(K8S / "overlays" / name), "Deployment")["spec"]["template"]["spec"]
        images, wanted = [], {}
        for c in pod["containers"]:
            repo, tag = c["image"].rsplit(":", 1)
            new_name = "mirror.invalid/team/sightline/" + repo.rsplit("/", 1)[1]
            images.append({"name": repo, "newName": new_name, "newTag": tag})
            wanted[c["name"]] = f"{new_name}:{tag}"
        assert set(wanted) == {"triton", "monitor"}
        overlay = tmp_path / name
        overlay.mkdir()
        (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": [os.path.relpath(K8S / "overlays" / name, overlay)], "images": images,
        }))
        docs = render(overlay)
        assert {c: container(docs, c)["image"] for c in wanted} == wanted


def test_the_s3_component_reads_the_repository_from_object_storage(tmp_path):
    overlay = tmp_path / "s3"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "overlays" / "gpu", overlay)],
        "components": [os.path.relpath(K8S / "components" / "s3-model-repository", overlay)],
    }))
    docs = render(overlay, "--load-restrictor", "LoadRestrictionsNone")
    triton = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert flag(triton["args"], "model-repository").startswith("s3://")
    assert triton["envFrom"][0]["secretRef"]["name"] == "sightline-model-store"
