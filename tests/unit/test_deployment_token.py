"""The rendered Deployment gives the monitor the admin token Triton's restricted model-repository
API expects, from the same Secret, under the header Triton checks."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from sightline.runtime import REPO_ROOT
from sightline.sidecars.monitor import admin_token, load_config

K8S = REPO_ROOT / "k8s"
pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) is not installed")


class _Loader(yaml.SafeLoader):
    """kustomize writes `matchType: =` bare; PyYAML 1.1 reads that as the !!value tag."""


_Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


@pytest.fixture(scope="module", params=("cpu", "gpu"))
def rendered(request) -> list[dict]:
    result = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays" / request.param)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.load_all(result.stdout, Loader=_Loader) if doc]


def container(docs: list[dict], name: str) -> dict:
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "sightline-triton")
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def secret_of(c: dict, env_name: str) -> tuple[str, str]:
    entry = next((e for e in c.get("env", []) if e["name"] == env_name), None)
    assert entry is not None, f"{c['name']} has no {env_name}"
    ref = entry["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def test_the_monitor_gets_tritons_admin_token_from_the_same_secret_and_sends_the_header_triton_checks(rendered, tmp_path):
    triton = container(rendered, "triton")
    restricted = [a for a in triton["args"] if a.startswith("--http-restricted-api=")]
    assert len(restricted) == 1
    apis, header, variable = re.fullmatch(r"--http-restricted-api=([^:]+):([^=]+)=\$\((\w+)\)", restricted[0]).groups()
    assert "model-repository" in apis.split(",")  # the repository index is restricted...
    monitor = container(rendered, "monitor")
    secret = secret_of(triton, variable)
    env_name = "SIGHTLINE_MONITOR_TRITON_ADMIN_TOKEN"
    assert secret_of(monitor, env_name) == secret  # ...and the monitor holds the same token
    # the monitor, configured as deployed, sends that token under that header
    config_map = next(d for d in rendered if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "sightline-monitor")
    mount = next(m for m in monitor["volumeMounts"] if m["name"] == "monitor-config")
    config_arg = monitor["args"][monitor["args"].index("--config") + 1]
    assert config_arg.startswith(mount["mountPath"].rstrip("/") + "/")
    path = tmp_path / "monitor.yaml"
    path.write_text(config_map["data"][config_arg.rsplit("/", 1)[1]])
    config = load_config(path, environ={env_name: "the-secret-value"})
    assert admin_token(config) == "the-secret-value"
    assert config.triton_admin_header == header
    assert config.triton_url.rstrip("/").endswith(f":{next(p['containerPort'] for p in triton['ports'] if p['name'] == 'http')}")
