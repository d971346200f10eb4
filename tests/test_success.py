"""The success classifier (wvm_ros.core.success): labels, metrics, checkpoints, training, the
`wvm train-success` command on a real sim-collect dataset, and its probability reaching the
episode state machine in `wvm experiment` (what the value node publishes in Progress.success)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from wvm_ros.core import success as S


def test_labels_boolean_and_threshold():
    assert S.LabelSpec("next.success").labels(np.array([[0.0], [1.0], [1.0]])).tolist() == [False, True, True]
    assert S.LabelSpec("coverage", 0.95).labels(np.array([0.5, 0.95, 0.99])).tolist() == [False, True, True]
    with pytest.raises(ValueError, match="not boolean.*--label-threshold"):
        S.LabelSpec("coverage").labels(np.array([0.2, 0.97]))
    with pytest.raises(ValueError, match="NaN"):
        S.LabelSpec("coverage", 0.9).labels(np.array([0.2, np.nan]))


def test_metrics_on_hand_made_scores():
    y = np.array([True, True, False, False])
    assert S.auc(np.array([0.9, 0.8, 0.1, 0.2]), y) == 1.0
    assert S.auc(np.array([0.1, 0.2, 0.9, 0.8]), y) == 0.0
    assert S.auc(np.array([0.9, 0.1, 0.5, 0.5]), y) == 0.5
    assert math.isnan(S.auc(np.array([0.1, 0.2]), np.array([False, False])))
    m = S.classification_metrics(np.array([0.9, 0.4, 0.6, 0.1]), y)
    assert m["accuracy"] == 0.5 and m["precision"] == 0.5 and m["recall"] == 0.5
    assert m["false_positive_rate"] == 0.5 and m["positives"] == 2


def _synthetic(n_eps=6, T=20, size=32, seed=0):
    """Episodes whose last third shows a white square in the corner: 'done'."""
    rng = np.random.default_rng(seed)
    frames, labels = [], []
    for _ in range(n_eps):
        f = rng.integers(0, 80, size=(T, size, size, 3), dtype=np.uint8)
        y = np.arange(T) >= 2 * T // 3
        f[y, :10, :10] = 255
        frames.append(f)
        labels.append(y)
    return frames, labels


def test_training_learns_and_checkpoint_round_trips(tmp_path):
    frames, labels = _synthetic()
    model, info = S.train_success(frames, labels, config=S.default_config((32, 32)), steps=120, progress=False)
    assert info["final_loss"] < 0.5 * info["first_loss"] and info["positives"] == sum(int(y.sum()) for y in labels)
    test_f, test_y = _synthetic(2, seed=1)
    ev = S.evaluate_success(model, test_f, test_y)
    assert ev["all"]["accuracy"] > 0.95 and ev["all"]["auc"] > 0.99
    S.save_success(model, tmp_path / "s", training=info)
    again = S.load_success(tmp_path / "s")
    assert again.checkpoint_id == json.loads((tmp_path / "s" / "config.json").read_text())["checkpoint_id"]
    np.testing.assert_array_equal(model.predict(test_f[0]), again.predict(test_f[0]))
    assert again.training_info["steps"] == 120


def test_training_is_reproducible():
    frames, labels = _synthetic(3)
    torch.rand(7)   # whatever ran before in the process does not matter
    a, _ = S.train_success(frames, labels, config=S.default_config((32, 32)), steps=5, progress=False, seed=3)
    torch.rand(11)
    b, _ = S.train_success(frames, labels, config=S.default_config((32, 32)), steps=5, progress=False, seed=3)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_bad_checkpoints_and_data(tmp_path):
    from wvm_ros.core.baselines import SingleFrameConfig, SingleFrameRegressor, save_single_frame

    with pytest.raises(S.SuccessLoadError, match="success classifier checkpoint .*not a directory"):
        S.load_success(tmp_path / "nope")
    save_single_frame(SingleFrameRegressor(SingleFrameConfig(image_size=(32, 32), channels=(8,), hidden=8)),
                      tmp_path / "sf")
    with pytest.raises(S.SuccessLoadError, match="expected 'success_classifier'.*single_frame_regressor"):
        S.load_success(tmp_path / "sf")
    frames, labels = _synthetic(2)
    with pytest.raises(ValueError, match="both classes are needed"):
        S.train_success(frames, [np.zeros_like(y) for y in labels], steps=1, progress=False)
    with pytest.raises(ValueError, match="expected \\(H, W, 3\\) uint8"):
        S.SuccessEstimator(S.SuccessClassifier(S.default_config((32, 32)))).push(np.zeros((32, 32), np.uint8))


def test_train_success_cli_on_a_sim_collect_dataset(tmp_path, capsys):
    from wvm_ros.cli.main import main

    data = tmp_path / "pusht"
    assert main(["sim-collect", "--output", str(data), "--episodes", "2", "--kinds", "expert", "--seed", "0",
                 "--image-size", "32", "--video", "no", "--quiet", "--after-success-s", "1.0"]) == 0
    capsys.readouterr()
    out = tmp_path / "succ"
    rc = main(["train-success", "--dataset", str(data), "--val-dataset", str(data), "--output", str(out),
               "--label-key", "coverage", "--label-threshold", "0.95", "--steps", "30", "--threads", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "near_success" in printed and "AUC" in printed and "checkpoint id" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["all"]["positives"] >= 2 * 10           # 1 s at 10 fps past success, per episode
    assert metrics["near_success"]["frames"] < metrics["all"]["frames"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["kind"] == "success_classifier" and cfg["training"]["label_key"] == "coverage"
    assert S.load_success(out).config.image_size == (32, 32)
    # bad input: a numeric column without a threshold, a missing column, a missing dataset
    assert main(["train-success", "--dataset", str(data), "--output", str(tmp_path / "x"),
                 "--label-key", "coverage", "--steps", "1"]) == 2
    assert "not boolean" in capsys.readouterr().err
    assert main(["train-success", "--dataset", str(data), "--output", str(tmp_path / "x"),
                 "--label-key", "nope", "--steps", "1"]) == 2
    assert "no column 'nope'" in capsys.readouterr().err
    assert main(["train-success", "--dataset", str(tmp_path / "none"), "--output", str(tmp_path / "x")]) == 2
    assert "not a LeRobot dataset" in capsys.readouterr().err


def _constant_classifier(p_logit: float, size=(96, 96)) -> S.SuccessClassifier:
    """A real classifier whose output bias dominates: P(done) = sigmoid(p_logit) on every frame."""
    m = S.SuccessClassifier(S.default_config(size))
    with torch.no_grad():
        m.head[-1].weight.zero_()
        m.head[-1].bias.fill_(p_logit)
    m.checkpoint_id, m.untrained = f"const{p_logit:+g}", False
    return m.eval()


@pytest.mark.slow
def test_experiment_decides_on_the_success_probability(tmp_path):
    """The probability reaches the state machine: a classifier that always says 'done' ends the
    first attempt at the first estimate (a false success), one that never does lets it run."""
    from wvm_ros.core.episode import EpisodeConfig
    from wvm_ros.core.experiment import ExperimentConfig, InjectionMix, run_experiment, write_report
    from wvm_ros.core.model import load_value_model

    model = load_value_model(None, "tiny")
    size = tuple(model.config.image_size)
    base = dict(timeout_s=3.0, stall_window_s=100.0, success_prob_dwell_s=0.0)
    cfg = ExperimentConfig(episodes=1, seed=1000, max_attempts=1, keep_traces=1, estimate_fps=10.0,
                           episode=EpisodeConfig(success_source="classifier", **base),
                           injections=InjectionMix(0.0, 0.0, 0.0))
    res = run_experiment(model, cfg, progress=False, success_model=_constant_classifier(20.0, size))
    first = res["attempts"][0]
    assert first["decided_by"] == "SUCCESS" and "success probability" in first["reason"]
    assert first["false_success"] and first["t_decision"] < 1.0
    assert res["summary"]["success_classifier"]["checkpoint_id"] == "const+20"
    assert all(p == pytest.approx(1.0) for p in first["trace"]["success"] if not math.isnan(p))
    paths = write_report(res, tmp_path / "r")
    assert "success classifier `const+20`" in paths["md"].read_text()

    res = run_experiment(model, cfg, progress=False, success_model=_constant_classifier(-20.0, size))
    assert res["attempts"][0]["decided_by"] == "TIMEOUT"
    with pytest.raises(ValueError, match="needs a success classifier"):
        run_experiment(model, cfg, progress=False)


def test_experiment_cli_refuses_classifier_source_without_classifier(tmp_path, capsys):
    from wvm_ros.cli.main import main

    assert main(["experiment", "retries", "--output", str(tmp_path), "--untrained", "--success-checkpoint", "none",
                 "--success-source", "classifier"]) == 2
    assert "needs a success classifier" in capsys.readouterr().err
    assert main(["experiment", "retries", "--output", str(tmp_path), "--untrained", "--success-checkpoint",
                 str(tmp_path / "nope")]) == 2
    assert "success classifier checkpoint" in capsys.readouterr().err


def test_with_success_is_a_drop_in_for_the_value_estimator():
    """The value node calls set_task (a /wvm/task message, a START with another task), reset and
    push on the wrapper, and reads the wrapped estimator's stamp reports through it."""
    from wvm_ros.core.model import build_model, preset_config
    from wvm_ros.core.streaming import REPEATED_STAMPS, StreamingValueEstimator

    torch.manual_seed(0)
    model = build_model(preset_config("tiny", num_layers=2, sample_fps=2.0, min_frames=2)).eval()
    inner = StreamingValueEstimator(model, "push the T")
    est = S.WithSuccess(inner, S.SuccessEstimator(_constant_classifier(1.0, (48, 64))))
    est.set_task("push the block to the left")
    assert inner.task == est.task == "push the block to the left"
    with pytest.raises(TypeError, match="task must be a str"):
        est.set_task(None)
    assert est.estimate_fps == inner.estimate_fps and est.counts is inner.counts
    with pytest.raises(AttributeError, match="no_such_thing"):
        est.no_such_thing
    rng = np.random.default_rng(0)
    fr = rng.integers(0, 255, (6, 48, 64, 3), dtype=np.uint8)
    est.push(fr[0], 10.0)
    e = est.push(fr[1], 10.5)
    assert e.valid and e.success == pytest.approx(1 / (1 + math.exp(-1.0)), abs=1e-5)
    latency = e.latency_s
    assert est.push(fr[2], 10.5) is e                          # a repeated stamp: the same estimate, untouched
    assert e.latency_s == latency and inner.counts[REPEATED_STAMPS] == 1
    assert est.frame_status.startswith("frame stamp 10.500 s repeats") and est.stamp_problem == ""
    est.reset()
    assert est.num_sampled == 0 and est.push(fr[3], 20.0) is None


def test_with_success_copes_with_a_half_built_wrapper():
    import copy

    w = S.WithSuccess.__new__(S.WithSuccess)   # as copy / pickle make it, before __dict__ is filled
    with pytest.raises(AttributeError, match="no wrapped estimator"):
        w.counts
    assert copy.copy(w).__dict__ == {}
