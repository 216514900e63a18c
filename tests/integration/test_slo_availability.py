"""The availability SLI against the real Triton: each failed request counts once.

N good and M corrupt frames go through the `detector` ensemble; the counters Triton then
exports are fed to the generated availability rules in promtool, which must read an error
ratio of exactly M / (N + M) over N + M requests."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.request

import pytest
import yaml
from corpus import good_jpeg

from sightline.client import DetectorClient, InferenceError
from sightline.runtime import REPO_ROOT

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is installed by `make`")]

COUNTERS = re.compile(r'^(nv_inference_request_(?:success|failure)\{[^}]*\}) (\S+)$', re.M)
NOT_A_JPEG = b"GIF89a this is not a frame we accept"


def scrape(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {m.group(1): float(m.group(2)) for m in COUNTERS.finditer(text)}


def settled(url: str, timeout_s: float = 10.0) -> dict[str, float]:
    """The counters once two scrapes half a second apart agree."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        now = scrape(url)
        if now == last:
            return now
        last = now
        time.sleep(0.5)
    return last


def test_each_failed_request_counts_once_in_the_availability_sli(triton, tmp_path):
    good, corrupt = 12, 8
    before = scrape(triton.metrics_url)
    refused = []
    with DetectorClient(triton.grpc_url) as client:
        for seed in range(good):
            client.infer(good_jpeg(320, 240, seed=seed), camera_id="cam-1")
        for _ in range(corrupt):
            with pytest.raises(InferenceError) as caught:
                client.infer(NOT_A_JPEG, camera_id="cam-1")
            refused.append(caught.value.status)
    assert len(refused) == corrupt and all("INVALID_ARGUMENT" in status for status in refused), refused
    after = settled(triton.metrics_url)

    # Ten minutes of the counters as they were, then five as they are: the 5m window holds
    # exactly this test's requests (no extrapolation: samples cover the whole window).
    series = [{"series": name, "values": f"{before.get(name, 0):.0f}x9 {value:.0f}x5"} for name, value in after.items()]
    series.append({"series": 'up{job="triton",instance="triton"}', "values": "1x15"})
    labels = '{sloth_id="detector-availability", sloth_service="detector", sloth_slo="availability"}'
    ratio = corrupt / (good + corrupt)
    test = {"rule_files": [str(REPO_ROOT / "prometheus" / "rules" / "slo-availability.yaml")],
            "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": [
                {"expr": f"max without (sloth_window) (abs(slo:sli_error:ratio_rate5m - {ratio!r}) < bool 1e-9)",
                 "eval_time": "14m", "exp_samples": [{"labels": labels, "value": 1}]},
                {"expr": "round(slo:sli_events:total_rate5m * 300)", "eval_time": "14m",
                 "exp_samples": [{"labels": labels, "value": good + corrupt}]},
                {"expr": "round(slo:sli_events:error_rate5m * 300)", "eval_time": "14m",
                 "exp_samples": [{"labels": labels, "value": corrupt}]},
            ]}]}
    path = tmp_path / "availability.test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    deltas = {name: value - before.get(name, 0) for name, value in after.items() if value != before.get(name, 0)}
    assert result.returncode == 0, f"counters moved by {deltas}\n{result.stdout}{result.stderr}"
