"""The batching advisor's pure parts: its rules, its choice, and the diff it writes."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sightline import advise
from sightline.advise import Observation, StepObservation, StepSettings, Trial

ROOT = Path(__file__).resolve().parents[2]

CURRENT = {
    "preprocess": StepSettings("preprocess", 2, batching=True, max_batch_size=32),
    "detector_model": StepSettings("detector_model", 1, batching=True, preferred=(4, 8, 16),
                                   max_queue_delay_us=2000, max_batch_size=32),
    "postprocess": StepSettings("postprocess", 1, batching=True, max_batch_size=32),
}


def observed(p95_s=0.05, **steps: StepObservation) -> Observation:
    base = {m: StepObservation(m, 60.0, 1.0, 0.0002, 0.002) for m in advise.STEPS}
    return Observation(600, p95_s, {**base, **steps})


def test_settings_read_from_tritons_json_config_and_written_back_as_an_override():
    config = {"name": "detector_model", "max_batch_size": 32,
              "instance_group": [{"name": "x", "kind": "KIND_CPU", "count": 1}],
              "dynamic_batching": {"preferred_batch_size": [4, 8, 16], "max_queue_delay_microseconds": "2000"}}
    settings_ = StepSettings.from_triton(config)
    assert settings_ == CURRENT["detector_model"]
    new = dataclasses.replace(settings_, instances=2, preferred=(), max_queue_delay_us=500)
    override = new.apply_to(config)
    assert StepSettings.from_triton(override) == new
    assert config["dynamic_batching"]["preferred_batch_size"] == [4, 8, 16]  # the served config is not touched


def test_a_busy_python_step_gets_one_more_instance_and_a_quiet_one_keeps_its_count():
    busy = observed(preprocess=StepObservation("preprocess", 150.0, 1.2, 0.01, 0.011))  # 150 x 11 ms / 2 = 82 %
    proposal, reasons = advise.rules_proposal(CURRENT, busy, 0.12, cpus=4)
    assert proposal["preprocess"].instances == 3
    assert any(r.model == "preprocess" and "82% busy" in r.text for r in reasons)
    quiet, _ = advise.rules_proposal(CURRENT, observed(), 0.12, cpus=4)
    assert quiet == CURRENT
    capped, _ = advise.rules_proposal(CURRENT, busy, 0.12, cpus=2)  # never more instances than cores
    assert capped["preprocess"].instances == 2


def test_batches_of_one_waiting_out_the_delay_get_a_shorter_delay_and_a_busy_model_bigger_batches():
    waiting = observed(detector_model=StepObservation("detector_model", 60.0, 1.05, 0.0018, 0.004))
    proposal, _ = advise.rules_proposal(CURRENT, waiting, 0.12, cpus=2)
    assert proposal["detector_model"].max_queue_delay_us == 500
    busy = observed(detector_model=StepObservation("detector_model", 150.0, 2.0, 0.004, 0.006))  # 90 % busy
    proposal, _ = advise.rules_proposal(CURRENT, busy, 0.12, cpus=2)
    assert proposal["detector_model"].preferred == ()
    assert proposal["detector_model"].max_queue_delay_us == 4000
    tight, _ = advise.rules_proposal(CURRENT, busy, 0.02, cpus=2)  # the delay stays under a tenth of the target
    assert tight["detector_model"].max_queue_delay_us == 2000


def test_no_traffic_proposes_nothing():
    empty = Observation(600, None, {m: StepObservation(m) for m in advise.STEPS})
    proposal, reasons = advise.rules_proposal(CURRENT, empty, 0.12)
    assert proposal == CURRENT
    assert any("no traffic" in r.text for r in reasons)


def test_candidates_start_with_the_committed_settings_are_distinct_and_bounded():
    listed = advise.candidates(CURRENT, CURRENT, limit=20, cpus=2)
    assert listed[0] == ("committed", CURRENT)
    assert len({repr(s) for _, s in listed}) == len(listed)
    assert all(s["preprocess"].instances <= 2 for _, s in listed)
    assert len(advise.candidates(CURRENT, CURRENT, limit=3, cpus=2)) == 3


def trial(label, p95, served=60.0, errors=0, settings_=CURRENT):
    return Trial(label, settings_, 60.0, served, p95 / 2, p95, errors, 0, 1.0)


def test_the_lowest_p95_that_serves_the_whole_load_wins_and_near_ties_keep_the_committed_config():
    trials = [trial("committed", 50), trial("fast but failing", 20, errors=3), trial("faster", 40)]
    best, meets = advise.choose(trials, 120)
    assert (best.label, meets) == ("faster", True)
    best, _ = advise.choose([trial("committed", 50), trial("within the noise", 46)], 120)
    assert best.label == "committed"  # a change must cut the P95 by 10 % to be proposed
    best, meets = advise.choose([trial("committed", 300), trial("b", 200)], 120)
    assert (best.label, meets) == ("b", False)


def test_the_diff_changes_only_what_the_proposal_changes_and_applies_with_git(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "model_repository", repo / "model_repository", ignore=shutil.ignore_patterns("*.onnx"))
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    proposal = {**CURRENT,
                "detector_model": dataclasses.replace(CURRENT["detector_model"], instances=2, preferred=(),
                                                      max_queue_delay_us=500),
                "preprocess": dataclasses.replace(CURRENT["preprocess"], instances=3)}
    diff = advise.proposal_diff(repo / "model_repository", CURRENT, proposal, relative_to=repo)
    assert "postprocess" not in diff
    assert "+instance_group [ { kind: KIND_CPU count: 3 } ]" in diff
    assert diff.count("+  max_queue_delay_microseconds: 500") == 3  # every profile of the model
    # an instance count measured on CPU goes only into the CPU profile, never into the GPU ones
    assert diff.count("+  count: 2") == 1
    assert "+  count: 2" in diff.split("detector_model/configs/local.pbtxt")[2].split("--- a/")[0]
    (tmp_path / "p.diff").write_text(diff)
    subprocess.run(["git", "apply", "--check", str(tmp_path / "p.diff")], cwd=repo, check=True)
    subprocess.run(["git", "apply", str(tmp_path / "p.diff")], cwd=repo, check=True)
    assert advise.proposal_diff(repo / "model_repository", proposal, proposal, relative_to=repo) == ""


@settings(max_examples=60, deadline=None)
@given(preferred=st.lists(st.integers(1, 32), max_size=4, unique=True).map(sorted),
       delay=st.integers(0, 10**6), instances=st.integers(1, 64))
def test_every_edited_config_parses_as_a_triton_model_config_and_keeps_its_comments(preferred, delay, instances):
    text = (ROOT / "model_repository" / "preprocess" / "config.pbtxt").read_text()
    new = advise.edit_pbtxt(text, StepSettings("preprocess", instances, batching=True, preferred=tuple(preferred),
                                               max_queue_delay_us=delay))
    parsed = advise._parse_model_config(new, "preprocess")
    assert list(parsed.dynamic_batching.preferred_batch_size) == preferred
    assert parsed.dynamic_batching.max_queue_delay_microseconds == delay
    assert parsed.instance_group[0].count == instances
    assert [line for line in new.splitlines() if line.startswith("#")] == \
        [line for line in text.splitlines() if line.startswith("#")]


def test_a_config_that_triton_would_refuse_is_an_error_not_a_diff():
    with pytest.raises(advise.AdviceError, match="does not parse"):
        advise.edit_pbtxt("name: \"m\"\ninstance_group [ { count: 1 } ]\nbogus_field: 3\n",
                          StepSettings("m", 2), batching=False)
