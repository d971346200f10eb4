"""`wvm experiment retries`: the scoring on hand-made attempts, injection draws, and one
short end-to-end run (untrained tiny WVM: checks the pipeline, not the numbers) that also
checks that the run without retries equals the first attempt of the run with retries."""
from __future__ import annotations

import json

import pytest

from wvm_ros.core.experiment import (AttemptResult, ExperimentConfig, InjectionMix, check_targets, summarise)


def att(seed, attempt, gt_t, dec_t, outcome, kind, retries=True, inj="none"):
    detected = outcome == "success"
    false = detected and (gt_t is None or gt_t > dec_t)
    return AttemptResult(
        episode_seed=seed, retries=retries, attempt=attempt, scene_seed=seed * 1000 + attempt, injection=inj,
        outcome=outcome, decided_by=kind, reason="", duration_s=dec_t, gt_success=gt_t is not None,
        t_gt_success=gt_t, t_decision=dec_t, detection_delay_s=(dec_t - gt_t) if detected and not false else None,
        false_success=false, missed_success=gt_t is not None and not detected, final_gt_progress=0.0,
        final_pred_progress=0.0, estimates=1, mean_latency_ms=1.0)


def test_summary_on_hand_made_attempts():
    # seed 1: stuck first attempt (stall), retry succeeds (gt 9.0 s, detected 9.5 s)
    # seed 2: first attempt succeeds (gt 8.0, detected 8.7)
    # seed 3: false success at 5.0 (gt never) -> ends the episode, a ground-truth failure
    # seed 4: missed success (gt at 7.0, timeout at 40) then retry succeeds (gt 6, detected 7.2)
    a = [att(1, 1, None, 6.0, "failure", "STALL", inj="stuck"), att(1, 2, 9.0, 9.5, "success", "SUCCESS"),
         att(2, 1, 8.0, 8.7, "success", "SUCCESS"),
         att(3, 1, None, 5.0, "success", "SUCCESS"),
         att(4, 1, 7.0, 40.0, "failure", "TIMEOUT"), att(4, 2, 6.0, 7.2, "success", "SUCCESS")]
    eps = [
        {"episode_seed": 1, "retries": True, "attempts": 2, "success": True, "time_to_success_s": 15.0},
        {"episode_seed": 2, "retries": True, "attempts": 1, "success": True, "time_to_success_s": 8.0},
        {"episode_seed": 3, "retries": True, "attempts": 1, "success": False, "time_to_success_s": None},
        {"episode_seed": 4, "retries": True, "attempts": 2, "success": True, "time_to_success_s": 7.0},
        {"episode_seed": 1, "retries": False, "attempts": 1, "success": False, "time_to_success_s": None},
        {"episode_seed": 2, "retries": False, "attempts": 1, "success": True, "time_to_success_s": 8.0},
        {"episode_seed": 3, "retries": False, "attempts": 1, "success": False, "time_to_success_s": None},
        {"episode_seed": 4, "retries": False, "attempts": 1, "success": True, "time_to_success_s": 7.0},
    ]
    # the runs without retries repeat first attempts: counted once
    dup = [att(s, 1, x.t_gt_success, x.t_decision, x.outcome, x.decided_by, retries=False)
           for s, x in ((1, a[0]), (2, a[2]), (3, a[3]), (4, a[4]))]
    s = summarise(eps, a + dup)
    assert s["attempts"] == 6
    assert s["success_rate_with_retries"] == pytest.approx(0.75)
    assert s["success_rate_without_retries"] == pytest.approx(0.5)
    assert s["median_time_to_success_s_with_retries"] == pytest.approx(8.0)
    assert s["median_detection_delay_s"] == pytest.approx(0.7)         # delays 0.5, 0.7, 1.2
    assert s["false_successes"] == 1 and s["false_success_rate"] == pytest.approx(1 / 6)
    assert s["missed_successes"] == 1 and s["missed_success_rate"] == pytest.approx(1 / 4)
    assert s["decisions"]["SUCCESS"] == 4 and s["decisions"]["STALL"] == 1 and s["decisions"]["TIMEOUT"] == 1
    assert s["decisions_by_injection"]["stuck"]["STALL"] == 1
    ok = check_targets(s)
    assert ok["median_detection_delay_s"] and not ok["false_success_rate"]
    assert ok["success_rate_with_retries > without"]


def test_injection_draws_are_seeded_and_follow_the_mix():
    mix = InjectionMix(p_stuck=0.5, p_random=0.25, p_hesitation=0.25)
    assert mix.draw(7, 1, 10.0) == mix.draw(7, 1, 10.0)
    kinds = [(mix.draw(s, 1, 10.0) or [{"kind": "none"}])[0]["kind"] for s in range(400)]
    assert 0.4 < kinds.count("stuck") / 400 < 0.6 and kinds.count("none") == 0
    assert all(0 <= i["start"] for s in range(50) for i in mix.draw(s, 2, 10.0))
    assert InjectionMix(0, 0, 0).draw(1, 1, 10.0) == []
    with pytest.raises(ValueError, match="expected <= 1"):
        InjectionMix(0.6, 0.6, 0.0)
    with pytest.raises(ValueError, match="p_stuck"):
        InjectionMix(-0.1, 0.0, 0.0)


@pytest.mark.slow
def test_cli_end_to_end_and_single_run_equals_first_attempt(tmp_path):
    """Pipeline check with an untrained model (flat progress: stalls), short attempts."""
    from wvm_ros.cli.main import main
    from wvm_ros.core.episode import EpisodeConfig
    from wvm_ros.core.experiment import run_experiment
    from wvm_ros.core.model import load_value_model

    out = tmp_path / "exp"
    rc = main(["experiment", "retries", "--output", str(out), "--untrained", "--episodes", "1",
               "--max-attempts", "2", "--timeout-s", "3", "--stall-window-s", "2.0", "--p-stuck", "1.0",
               "--p-random", "0", "--p-hesitation", "0"])
    assert rc == 0
    doc = json.loads((out / "retries.json").read_text())
    for key in ("median_detection_delay_s", "false_success_rate", "success_rate_with_retries",
                "success_rate_without_retries"):
        assert key in doc
    assert doc["model"]["untrained"] is True and doc["episodes_with_retries"] == 1
    assert (out / "retries.png").stat().st_size > 1000 and "| success rate" in (out / "retries.md").read_text()
    lines = (out / "attempts.jsonl").read_text().splitlines()
    assert len(lines) == 3                                   # 2 attempts with retries + 1 without
    first = json.loads(lines[0])
    assert first["injection"] == "stuck" and first["decided_by"] in ("STALL", "TIMEOUT")

    # simulate the single-attempt run for real: identical to the first attempt (same model object:
    # two untrained models differ)
    model = load_value_model(None, "tiny")
    runs = {}
    for reuse in (True, False):
        cfg = ExperimentConfig(episodes=1, seed=1000, max_attempts=2, reuse_first_attempt=reuse, keep_traces=0,
                               episode=EpisodeConfig(timeout_s=3.0, stall_window_s=2.0),
                               injections=InjectionMix(1.0, 0.0, 0.0))
        runs[reuse] = [a for a in run_experiment(model, cfg, progress=False)["attempts"] if not a["retries"]]
    assert len(runs[True]) == len(runs[False]) == 1
    a, b = runs[True][0], runs[False][0]
    for k in ("decided_by", "t_decision", "t_gt_success", "final_pred_progress", "final_gt_progress", "injection",
              "estimates"):
        assert a[k] == b[k], (k, a[k], b[k])


def test_cli_bad_input(tmp_path, capsys):
    from wvm_ros.cli.main import main

    assert main(["experiment", "retries", "--output", str(tmp_path), "--checkpoint",
                 str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["experiment", "retries", "--output", str(tmp_path), "--untrained", "--episodes", "0"]) == 2
    assert main(["experiment", "retries", "--output", str(tmp_path), "--untrained",
                 "--success-threshold", "1.5"]) == 2
    assert "success_threshold" in capsys.readouterr().err


def test_replay_decides_like_the_live_state_machine():
    from wvm_ros.core.episode import EpisodeConfig
    from wvm_ros.core.experiment import replay, score_replays

    # estimates at 2 Hz: a ramp reaching 1.0 at t = 10 s; ground truth succeeds at 9.6 s
    t = [0.5 * i for i in range(27)]
    ramp = {"injection": "none", "t": t, "pred": [min(1.0, x / 10) for x in t], "t_gt": 9.6, "t_end": 13.0}
    flat = {"injection": "stuck", "t": t, "pred": [0.2] * len(t), "t_gt": None, "t_end": 13.0}
    early = {"injection": "none", "t": t, "pred": [min(1.0, x / 8) for x in t], "t_gt": 12.0, "t_end": 13.0}
    cfg = EpisodeConfig(success_threshold=0.95, success_dwell_s=0.4, stall_window_s=4.0)
    assert replay(ramp, cfg) == ("SUCCESS", pytest.approx(10.0))        # 0.95 at 9.5, dwell to 10.0
    kind, t_dec = replay(flat, cfg)
    assert kind == "STALL" and t_dec == pytest.approx(4.0)
    s = score_replays([ramp, flat, early], cfg)
    assert s["median_delay_s"] == pytest.approx(0.4)
    assert s["false_success_rate"] == pytest.approx(1 / 3)               # "early" fires at 8.0 < 12.0
    assert s["stuck_caught"] == "1/1" and s["missed"] == 0 and s["false_failures_clean"] == "0/2"
