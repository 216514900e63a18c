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


# -- alert routing as the Prometheus Operator builds it ----------------------------------------

def rendered_with_fresh_monitoring_objects(tmp_path: Path, name: str) -> list[dict]:
    """An overlay rendered with k8s/base/generated/ regenerated from today's sources (the
    committed copies are checked by test_the_generated_monitoring_objects_match_their_sources)."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    k8s.generate(copy / "base" / "generated")
    return render(copy / "overlays" / name)


def operator_alertmanager_config(amc: dict, receivers: dict) -> dict:
    """The Alertmanager configuration the operator makes of an AlertmanagerConfig: its route
    under the root with namespace="<its namespace>" added to the matchers, the same matcher on
    both sides of each inhibition rule, receivers named <namespace>/<name>/<receiver>."""
    ns, name = amc["metadata"]["namespace"], amc["metadata"]["name"]
    spec = amc["spec"]

    def matchers(items):
        return [f'{m["name"]}{m.get("matchType", "=")}"{m["value"]}"' for m in items]

    def receiver(r):
        return f"{ns}/{name}/{r}"

    route = spec["route"]
    return {
        "route": {"receiver": "null", "routes": [{
            "receiver": receiver(route["receiver"]), "group_by": route["groupBy"],
            "matchers": [f'namespace="{ns}"'], "continue": True,
            "routes": [{"receiver": receiver(r["receiver"]), "matchers": matchers(r["matchers"])} for r in route["routes"]],
        }]},
        "inhibit_rules": [{"source_matchers": matchers(rule["sourceMatch"]) + [f'namespace="{ns}"'],
                           "target_matchers": matchers(rule["targetMatch"]) + [f'namespace="{ns}"'],
                           **({"equal": rule["equal"]} if "equal" in rule else {})}
                          for rule in spec["inhibitRules"]],
        "receivers": [{"name": "null"}] + [
            {"name": receiver(r["name"]), **({"webhook_configs": [{"url": receivers[r["name"]]}]} if r["name"] in receivers else {})}
            for r in spec["receivers"]],
    }


@pytest.mark.skipif(shutil.which("amtool") is None, reason="amtool is installed by `make`")
@pytest.mark.parametrize("name", OVERLAYS)
def test_every_alert_reaches_its_receiver_through_the_operators_namespace_matcher(name, tmp_path):
    """Each alert's own labels (those its rule sets: the expression may aggregate every
    other label away) routed by amtool through the config the operator builds."""
    docs = rendered_with_fresh_monitoring_objects(tmp_path, name)
    amc = one(docs, "AlertmanagerConfig")
    config = operator_alertmanager_config(amc, {"pager": "http://pager.invalid/", "ticket": "http://ticket.invalid/"})
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    assert subprocess.run(["amtool", "check-config", str(path)], capture_output=True).returncode == 0
    wanted = {"critical": "pager", "warning": "ticket", "info": "blackhole"}
    ns = amc["metadata"]["namespace"]
    for rule in (r for g in one(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"] if "alert" in r):
        labels = {"alertname": rule["alert"], **rule["labels"]}
        routed = subprocess.run(["amtool", "config", "routes", "test", f"--config.file={path}",
                                 *(f"{k}={v}" for k, v in labels.items())], capture_output=True, text=True)
        assert routed.stdout.strip() == f"{ns}/sightline/{wanted[labels['severity']]}", (labels, routed.stdout)


class Alertmanager:
    """The real Alertmanager on a free loopback port, for inhibition checks."""

    def __init__(self, config: Path, tmp_path: Path):
        import socket

        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.path={tmp_path / 'am-data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def api(self, path: str, body: list | None = None):
        import json
        import urllib.request

        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/v2/{path}",
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read() or b"null")

    def inhibited(self, alerts: list[dict]) -> dict:
        """Post firing alerts; {alertname and labels: inhibited?} once every one is listed."""
        import time

        # The inhibitor learns of source alerts asynchronously, so an alert can be listed
        # (processed) before the alert that inhibits it has reached the inhibitor: the
        # answer counts once three readings in a row agree.
        deadline = time.monotonic() + 20
        readings: list[dict] = []
        while True:
            try:
                self.api("alerts", [{"labels": labels} for labels in alerts])
                listed = self.api("alerts")
                if len(listed) == len(alerts) and all(a["status"]["state"] != "unprocessed" for a in listed):
                    readings.append({tuple(sorted(a["labels"].items())): bool(a["status"]["inhibitedBy"]) for a in listed})
                    if len(readings) >= 3 and readings[-1] == readings[-2] == readings[-3]:
                        return readings[-1]
            except OSError:
                pass
            assert time.monotonic() < deadline and self.process.poll() is None, "Alertmanager did not answer"
            time.sleep(0.2)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


def key(labels: dict) -> tuple:
    return tuple(sorted(labels.items()))


def inhibition_scenario(namespace: dict) -> tuple[list[dict], dict]:
    """Alerts at once, and which must be inhibited: one Triton pod of several down, a
    latency page beside the P95 ticket."""
    down = {"alertname": "SightlineTritonDown", "severity": "critical", "scope": "target", "pod": "pod-1", **namespace}
    own = {"alertname": "SightlineProcessMemoryGrowing", "severity": "warning", "process": "tritonserver", "pod": "pod-1", **namespace}
    other = {"alertname": "SightlineProcessMemoryGrowing", "severity": "warning", "process": "tritonserver", "pod": "pod-2", **namespace}
    fleet = {"alertname": "SightlineQueueWaitHigh", "severity": "warning", "stage": "detector_model", **namespace}
    burn = {"alertname": "SightlineLatencyBudgetBurn", "severity": "critical", "burnrate_tier": "page_fast",
            "sloth_slo": "latency", **namespace}
    p95 = {"alertname": "SightlineLatencyP95High", "severity": "warning", "model": "detector", **namespace}
    alerts = [down, own, other, fleet, burn, p95]
    return alerts, {key(down): False, key(own): True, key(other): False, key(fleet): False, key(burn): False, key(p95): True}


@pytest.mark.skipif(not (shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")),
                    reason="Alertmanager is installed by `make`")
@pytest.mark.parametrize("where", ["cluster", "local"])
def test_one_triton_pod_down_silences_its_own_warnings_only_and_the_latency_page_the_p95_ticket(where, tmp_path):
    if where == "cluster":
        amc = one(rendered_with_fresh_monitoring_objects(tmp_path, "gpu"), "AlertmanagerConfig")
        config = tmp_path / "alertmanager.yml"
        config.write_text(yaml.safe_dump(operator_alertmanager_config(amc, {})))
        alerts, wanted = inhibition_scenario({"namespace": amc["metadata"]["namespace"]})
    else:
        config = REPO_ROOT / "prometheus" / "alertmanager.yml"
        alerts, wanted = inhibition_scenario({})
    manager = Alertmanager(config, tmp_path)
    try:
        assert manager.inhibited(alerts) == wanted
    finally:
        manager.stop()


@pytest.mark.skipif(not (shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")),
                    reason="Alertmanager is installed by `make`")
def test_every_triton_down_is_one_page_not_two_with_the_availability_burn(tmp_path):
    manager = Alertmanager(REPO_ROOT / "prometheus" / "alertmanager.yml", tmp_path)
    down = {"alertname": "SightlineTritonDown", "severity": "critical", "scope": "all"}
    burn = {"alertname": "SightlineAvailabilityBudgetBurn", "severity": "critical", "burnrate_tier": "page_fast",
            "sloth_slo": "availability"}
    pod = {"alertname": "SightlineTritonDown", "severity": "critical", "scope": "target", "pod": "pod-1"}
    try:
        assert manager.inhibited([down, burn]) == {key(down): False, key(burn): True}
    finally:
        manager.stop()
    manager = Alertmanager(REPO_ROOT / "prometheus" / "alertmanager.yml", tmp_path)
    try:  # one pod of several down: the availability burn it causes is still paged
        assert manager.inhibited([pod, burn]) == {key(pod): False, key(burn): False}
    finally:
        manager.stop()


@pytest.mark.skipif(not (shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")),
                    reason="Alertmanager is installed by `make`")
def test_on_the_local_stack_the_one_triton_down_silences_every_warning(tmp_path):
    manager = Alertmanager(REPO_ROOT / "prometheus" / "alertmanager.yml", tmp_path)
    down = {"alertname": "SightlineTritonDown", "severity": "critical", "scope": "target", "instance": "127.0.0.1:8002"}
    fleet = {"alertname": "SightlineQueueWaitHigh", "severity": "warning", "stage": "detector_model"}
    try:
        assert manager.inhibited([down, fleet]) == {key(down): False, key(fleet): True}
    finally:
        manager.stop()
