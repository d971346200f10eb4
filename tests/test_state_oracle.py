"""Privileged-state estimators (wvm_ros.core.state_oracle) and `wvm experiment state-oracle`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from wvm_ros.cli.main import main
from wvm_ros.core import evaluation as E
from wvm_ros.core import state_oracle as S
from wvm_ros.core.groundtruth import ground_truth_progress


def test_features_take_the_frames_named_by_the_lags():
    T = 30
    x = np.arange(T, dtype=float)[:, None] * np.array([[1.0, -2.0]])
    ts = np.arange(T) / 10.0
    f = S.features(x, ts, S.OracleSpec("t", (0.0, 0.5)))
    assert f.shape == (T, 6)
    for i in (0, 3, 5, 17, 29):
        np.testing.assert_allclose(f[i], [*x[i], *x[max(0, i - 5)], *x[0]])
    # irregular timestamps: the newest frame at or before t - lag
    ts2 = np.array([0.0, 0.3, 0.45, 0.9, 1.2])
    f2 = S.features(x[:5], ts2, S.OracleSpec("t", (0.5,)))
    np.testing.assert_allclose(f2[:, 0], [0, 0, 0, 1, 2])  # 0.9 - 0.5 -> 0.3 s, 1.2 - 0.5 -> 0.45 s


def test_features_are_causal_and_history_is_cumulative():
    rng = np.random.default_rng(0)
    T = 40
    x = rng.normal(size=(T, 3))
    ts = np.arange(T) / 10.0
    spec = S.OracleSpec("h", (0.0, 1.0), history=True)
    f = S.features(x, ts, spec, coverage_col=2)
    x2 = x.copy()
    x2[25:] += 5.0  # the future changes
    f2 = S.features(x2, ts, spec, coverage_col=2)
    np.testing.assert_array_equal(f[:25], f2[:25])
    assert not np.allclose(f[25:], f2[25:])
    d = x.shape[1]
    elapsed, travelled, best = f[:, 3 * d], f[:, 3 * d + 1: 4 * d + 1], f[:, -1]
    np.testing.assert_allclose(elapsed, ts)
    np.testing.assert_allclose(travelled[-1], np.abs(np.diff(x, axis=0)).sum(axis=0))
    np.testing.assert_allclose(best, np.maximum.accumulate(x[:, 2]))
    # the elapsed-time context: the window, the first frame, then the seconds since it
    fe = S.features(x, ts + 7.0, S.spec_by_name("state_window_elapsed"))
    assert fe.shape == (T, 5 * d + 1)
    np.testing.assert_allclose(fe[:, -1], ts)
    np.testing.assert_array_equal(fe[:, :-1], S.features(x, ts + 7.0, S.spec_by_name("state_window")))


def test_features_reject_bad_input():
    with pytest.raises(ValueError, match="timestamps must increase"):
        S.features(np.zeros((3, 2)), np.array([0.0, 0.1, 0.1]), S.SPECS[0])
    with pytest.raises(ValueError, match=r"expected x \(T, d\)"):
        S.features(np.zeros((3, 2)), np.zeros(4), S.SPECS[0])
    with pytest.raises(ValueError, match="lags_s must be non-negative"):
        S.OracleSpec("bad", (-0.5,))


def _episode(i, rng, kind="hesitation"):
    T = int(rng.integers(60, 90))
    seg = (20, 35)
    gt = ground_truth_progress(T, kind, seg if kind != "expert" else None)
    # a state from which the ground truth can be read: position along the path (+ noise) and a
    # nuisance coordinate
    state = np.stack([gt * 100 + rng.normal(0, 0.5, T), rng.normal(0, 1, T)], axis=1)
    return E.EvalEpisode(i, "t", kind, np.zeros((T, 0, 0, 3), np.uint8), np.arange(T) / 10.0, gt,
                         hesitation_segments=[(seg[0], seg[1] - 1)] if kind == "hesitation" else [],
                         extras={"observation.state": state, "coverage": gt[:, None] * 0.95})


def test_oracle_reads_progress_from_a_state_that_holds_it():
    rng = np.random.default_rng(1)
    train = [_episode(i, rng, k) for i, k in enumerate(["expert", "hesitation", "retry"] * 20)]
    test = [_episode(100 + i, rng) for i in range(6)]
    reg = S.fit_oracle(train, S.SPECS[0])
    m = S.oracle_method(reg)
    rep = E.evaluate(test, [m, E.clock_method()], progress=False)
    ours = rep.results["state_window"].summary()["hesitation_rmse"]
    clock = rep.results["blind_clock"].summary()["hesitation_rmse"]
    assert ours < 0.03 < clock
    assert m.info["episodes"] == 60 and m.info["history"] is False
    # a state without the progress in it gives a poor oracle: the fit is not reading the target
    for ep in train + test:
        ep.extras["observation.state"] = ep.extras["observation.state"][:, 1:]
        ep.extras["coverage"] = np.zeros((ep.num_frames, 1))
    blind = S.oracle_method(S.fit_oracle(train, S.SPECS[0]))
    rep2 = E.evaluate(test, [blind], progress=False)
    assert rep2.results["state_window"].summary()["hesitation_rmse"] > 3 * ours


def test_oracle_needs_the_state_column():
    rng = np.random.default_rng(2)
    ep = _episode(0, rng)
    del ep.extras["coverage"]
    with pytest.raises(KeyError, match="no 'coverage' column"):
        S.fit_oracle([ep], S.SPECS[0])
    with pytest.raises(ValueError, match="no training episodes"):
        S.fit_oracle([], S.SPECS[0])


@pytest.fixture(scope="module")
def sim_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("oracle")
    for name, seed in (("train", 0), ("val", 500)):
        rc = main(["sim-collect", "--output", str(root / name), "--episodes", "6" if name == "train" else "3",
                   "--kinds", "expert,hesitation,retry", "--seed", str(seed), "--image-size", "32",
                   "--video", "no", "--quiet"])
        assert rc == 0
    return root


def test_loader_reads_columns_without_pixels(sim_data):
    eps = E.load_lerobot_episodes(sim_data / "val", extra_keys=["observation.state", "coverage"],
                                  decode_frames=False, progress=False)
    assert [e.kind for e in eps] == ["expert", "hesitation", "retry"]
    for e in eps:
        assert e.frames.shape == (e.num_frames, 0, 0, 3) and e.num_frames == len(e.gt) > 10
        assert e.extras["observation.state"].shape == (e.num_frames, 5)
        assert e.extras["coverage"].shape == (e.num_frames, 1)
        assert 0.0 <= e.extras["coverage"].min() and e.extras["coverage"][-1, 0] >= 0.9  # solved attempts
    with pytest.raises(E.DatasetError, match="no column 'observation.joints'"):
        E.load_lerobot_episodes(sim_data / "val", extra_keys=["observation.joints"], decode_frames=False,
                                progress=False)


def test_cli_state_oracle(sim_data, tmp_path, capsys):
    out = tmp_path / "oracle"
    rc = main(["experiment", "state-oracle", "--train-dataset", str(sim_data / "train"),
               "--dataset", str(sim_data / "val"), "--output", str(out)])
    assert rc == 0
    js = json.loads((out / "metrics.json").read_text())
    assert js["model"]["name"] == "state_window"
    assert set(js["baselines"]) == {"state_window_elapsed", "state_5s", "state_history", "blind_clock"}
    assert js["dataset"]["train_datasets"] == [str(sim_data / "train")]
    assert 0.0 <= js["hesitation_rmse"] < 1.0 and -1.0 <= js["retry_voc"] <= 1.0
    assert "state oracle, the WVM's context" in (out / "metrics.md").read_text()
    assert any((out / "plots").glob("*.png"))
    capsys.readouterr()
    # bad input: clear errors, exit 2
    assert main(["experiment", "state-oracle", "--dataset", str(sim_data / "val"), "--output", str(out)]) == 2
    assert "needs --train-dataset" in capsys.readouterr().err
    assert main(["experiment", "state-oracle", "--train-dataset", str(sim_data / "train"), "--dataset",
                 str(sim_data / "val"), "--output", str(out), "--state-key", "observation.joints"]) == 2
    assert "no column 'observation.joints'" in capsys.readouterr().err


def test_streaming_oracle_equals_the_offline_features_and_warms_up():
    """StateOracleEstimator (what `--state-oracle` runs in the retries experiment) gives, frame by
    frame, exactly the offline prediction on the history so far; nothing before warm-up."""
    rng = np.random.default_rng(3)
    train = [_episode(i, rng, k) for i, k in enumerate(["expert", "hesitation", "retry"] * 10)]
    reg = S.fit_oracle(train, S.spec_by_name("state_history"))  # the history context: elapsed time, distance, best coverage
    ep = _episode(99, rng)
    x = np.concatenate([ep.extras["observation.state"], ep.extras["coverage"]], axis=1)
    offline = np.clip(reg.predict(S.features(x, ep.timestamps, reg.wvm_spec, coverage_col=x.shape[1] - 1)), 0, 1)
    cur = {"i": 0}
    est = S.StateOracleEstimator(reg, lambda: x[cur["i"]], estimate_fps=10.0, warmup_s=0.5)
    got = []
    for i, t in enumerate(ep.timestamps):
        cur["i"] = i
        e = est.push(None, float(t))
        got.append(None if e is None else e.progress)
    assert got[:5] == [None] * 5 and all(g is not None for g in got[5:])
    np.testing.assert_allclose(got[5:], offline[5:], atol=1e-12)
    assert est.push(None, float(ep.timestamps[-1])) is None  # a stamp that does not advance: no estimate
    est.reset()
    cur["i"] = 0
    assert est.push(None, 0.0) is None
    with pytest.raises(ValueError, match="a regressor from fit_oracle"):
        S.StateOracleEstimator(object(), lambda: x[0])
    with pytest.raises(ValueError, match="unknown state oracle 'pixels'"):
        S.spec_by_name("pixels")


def test_cli_retries_and_calibrate_with_a_state_oracle(sim_data, tmp_path, capsys):
    """`wvm experiment retries|calibrate --state-oracle`: the experiment with the simulator's exact
    state in place of the camera (here fitted on 6 attempts: the pipeline, not the numbers)."""
    out = tmp_path / "retries"
    rc = main(["experiment", "retries", "--state-oracle", "state_window", "--train-dataset", str(sim_data / "train"),
               "--output", str(out), "--episodes", "2", "--seed", "1000"])
    assert rc == 0
    js = json.loads((out / "retries.json").read_text())
    assert js["model"]["name"] == "state-oracle:state_window" and js["model"]["episodes"] == 6
    assert js["attempts"] >= 2 and js["episodes_with_retries"] == 2
    cal = tmp_path / "cal"
    assert main(["experiment", "calibrate", "--state-oracle", "state_history", "--train-dataset",
                 str(sim_data / "train"), "--output", str(cal), "--episodes", "2", "--seed", "2000"]) == 0
    cj = json.loads((cal / "calibration.json").read_text())
    assert cj["estimator"]["name"] == "state-oracle:state_history" and len(cj["traces"]) == 2
    tr = cj["traces"][0]
    assert tr["t"][0] == pytest.approx(0.5) and all(0.0 <= p <= 1.0 for p in tr["pred"])
    capsys.readouterr()
    assert main(["experiment", "retries", "--state-oracle", "state_window", "--output", str(out)]) == 2
    assert "--state-oracle needs --train-dataset" in capsys.readouterr().err
