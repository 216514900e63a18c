"""The pod does not share its process namespace (the steps report their own memory and CPU),
so the sidecar cannot read Triton's command line (the admin token) or environment (S3 keys).
The sidecar also runs as another user: where a namespace is shared (a host, or someone's
overlay), the kernel still keeps Triton's environment and memory from it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from sightline.runtime import REPO_ROOT


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


def pod_spec(overlay: str) -> dict:
    result = subprocess.run(["kubectl", "kustomize", str(REPO_ROOT / "k8s" / "overlays" / overlay)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.load_all(result.stdout, Loader=_Loader) if d]
    return next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]


def effective(pod: dict, container: dict, field: str):
    return container.get("securityContext", {}).get(field, pod.get("securityContext", {}).get(field))


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) is not installed")
@pytest.mark.parametrize("overlay", ("cpu", "gpu"))
def test_the_sidecar_cannot_see_tritons_processes_and_runs_as_another_user(overlay):
    pod = pod_spec(overlay)
    containers = {c["name"]: c for c in pod["containers"]}
    triton, monitor = containers["triton"], containers["monitor"]
    assert not pod.get("shareProcessNamespace")  # Triton's command line holds the admin token
    assert not pod.get("hostPID")
    assert effective(pod, monitor, "runAsUser") != effective(pod, triton, "runAsUser")
    assert effective(pod, monitor, "runAsGroup") != effective(pod, triton, "runAsGroup")
    for container in pod["containers"]:  # no capability that would let one container trace another
        assert not container["securityContext"]["capabilities"].get("add"), container["name"]
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # the sidecar shares no writable volume with Triton (its /tmp is its own)
    writable = {m["name"] for m in triton["volumeMounts"] if not m.get("readOnly")}
    assert not writable & {m["name"] for m in monitor["volumeMounts"]}
    # the S3 keys and the admin token reach Triton alone through the environment
    secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in triton.get("env", []) if "valueFrom" in e}
    for name in secrets - {"sightline-admin"}:
        assert name not in json.dumps(monitor), name


def read_as(uid: int, gid: int, pid: int) -> dict:
    """What a process of ``uid``/``gid`` (no other groups, no capabilities) reads of ``pid``:
    the resource collector's samples, its environment and its command line."""
    from sightline.sidecars.resources import scan_processes

    readable, writable = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        code = 1
        try:
            os.close(readable)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            seen = [[s.name, s.rss_bytes] for s in scan_processes() if s.pid == pid]
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    environ = f.read().decode(errors="replace")
            except PermissionError:
                environ = "denied"
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().split(b"\0")[0].decode()
            os.write(writable, json.dumps({"seen": seen, "environ": environ, "cmdline": cmdline}).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(writable)
    with os.fdopen(readable, "rb") as f:
        data = f.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(data)


@pytest.mark.skipif(os.geteuid() != 0 or not sys.platform.startswith("linux"), reason="needs root to switch users")
def test_as_another_user_the_collector_still_sees_triton_but_not_its_environment():
    """Where a process namespace is shared after all (a host, an overlay that turns it on),
    on this kernel: Triton as 1000, the sidecar as 1001."""
    triton = subprocess.Popen(["bash", "-c", "exec -a tritonserver sleep 60"], user=1000, group=1000,
                              extra_groups=[], cwd="/", env={"AWS_SECRET_ACCESS_KEY": "s3-secret-key",
                                                             "PATH": os.environ.get("PATH", "")})
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(f"/proc/{triton.pid}/cmdline", "rb") as f:
                if f.read().startswith(b"tritonserver"):
                    break
            time.sleep(0.05)
        sidecar = read_as(1001, 1001, triton.pid)
        assert sidecar["seen"] and sidecar["seen"][0][0] == "tritonserver" and sidecar["seen"][0][1] > 0
        assert sidecar["environ"] == "denied"
        # the same user (the old manifest: everything as 1000) reads the keys
        assert "s3-secret-key" in read_as(1000, 1000, triton.pid)["environ"]
        # what a separate user does not hide: the command line (why the admin token's place matters)
        assert sidecar["cmdline"] == "tritonserver"
    finally:
        triton.kill()
        triton.wait(timeout=10)
