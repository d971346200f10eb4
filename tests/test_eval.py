"""The value benchmark: evaluate() and the report on synthetic episodes (fast, no model files)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from wvm_ros.core import evaluation as E
from wvm_ros.core.baselines import SingleFrameConfig, SingleFrameRegressor


def _gt(T, m, n, kind):
    x = n - m
    if kind == "hesitation":
        vm = vn = m / (T - 1 - x)
    else:
        vm, vn = m / (T - 2 * x), max(0.0, (m - x) / (T - 2 * x))
    return np.interp(np.arange(T), [0, m, n, T - 1], [0.0, vm, vn, 1.0])


def synthetic_episodes(T=20, size=16, task="push the T"):
    eps = []
    for i, kind in enumerate(["expert", "hesitation", "retry", "expert"]):
        if kind == "expert":
            gt, hes, ret = np.arange(T) / (T - 1), [], []
        else:
            gt = _gt(T, 6, 11, kind)
            hes, ret = ([(6, 11)], []) if kind == "hesitation" else ([], [(6, 11)])
        frames = np.zeros((T, size, size, 3), np.uint8)
        for t in range(T):  # a bar whose length shows progress
            frames[t, :, : int(round(size * gt[t]))] = 255
        eps.append(E.EvalEpisode(i, task if i < 3 else "other task", kind, frames, np.arange(T) / 10.0, gt, hes, ret))
    return eps


def oracle_method():
    return E.Method("oracle", lambda ep: ep.gt.copy(), {"kind": "ground truth"})


def test_evaluate_scores_clock_and_oracle(tmp_path):
    eps = synthetic_episodes()
    rep = E.evaluate(eps, [oracle_method(), E.clock_method()], progress=False)
    clock = rep.results["blind_clock"].aggregate.overall
    oracle = rep.results["oracle"].aggregate.overall
    assert clock["expert_voc"] == pytest.approx(1.0)
    assert clock["retry_voc"] == pytest.approx(-1.0)
    assert clock["hesitation_rmse"] > 0.05
    assert oracle["retry_voc"] == pytest.approx(1.0) and oracle["hesitation_rmse"] == pytest.approx(0.0)
    js = E.write_report(rep, tmp_path / "out", primary="oracle")
    on_disk = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(js))
    for k in ("expert_voc", "retry_voc", "hesitation_rmse"):
        assert k in on_disk
    assert on_disk["retry_voc"] == pytest.approx(1.0)
    assert on_disk["baselines"]["blind_clock"]["retry_voc"] == pytest.approx(-1.0)
    assert on_disk["beats_blind_clock"]["oracle"] == {"retry_voc": True, "hesitation_rmse": True}
    assert set(on_disk["per_task"]) == {"push the T", "other task"}
    assert on_disk["dataset"]["episodes_by_kind"] == {"expert": 2, "hesitation": 1, "retry": 1}
    assert len(on_disk["episodes"]) == 4
    md = (tmp_path / "out" / "metrics.md").read_text()
    assert "| blind clock | 1.000 | -1.000 |" in md and "## Per task" in md
    pngs = sorted(p.name for p in (tmp_path / "out" / "plots").glob("*.png"))
    assert "summary.png" in pngs and "episode_0002_retry.png" in pngs and len(pngs) == 5
    assert all((tmp_path / "out" / "plots" / n).stat().st_size > 1000 for n in pngs)


def test_single_frame_method_and_nan_warmup():
    torch.manual_seed(0)
    eps = synthetic_episodes()
    sf = E.single_frame_method(SingleFrameRegressor(SingleFrameConfig(image_size=(16, 16), channels=(4,), hidden=4)))

    def warm(ep):  # a method that has no estimate for its first 5 frames
        p = ep.gt.copy()
        p[:5] = np.nan
        return p

    rep = E.evaluate(eps, [sf, E.Method("warm", warm)], progress=False)
    s = rep.results["warm"].summary()
    assert s["frames_scored"] == s["frames_total"] - 5 * len(eps)
    assert s["retry_voc"] == pytest.approx(1.0)
    assert rep.results["single_frame"].summary()["info"]["num_parameters"] > 0


def test_evaluate_bad_input():
    with pytest.raises(E.DatasetError, match="no episodes"):
        E.evaluate([], [E.clock_method()], progress=False)
    eps = synthetic_episodes()
    with pytest.raises(RuntimeError, match="predictions"):
        E.evaluate(eps, [E.Method("short", lambda ep: np.zeros(3))], progress=False)
    with pytest.raises(E.DatasetError, match="ground-truth"):
        E.EvalEpisode(0, "t", "expert", np.zeros((3, 4, 4, 3), np.uint8), np.arange(3), np.zeros(2))


def test_offline_method_averages_every_window_that_covers_a_frame():
    """The offline scores use each sampled frame's average over all windows covering it (later
    windows included); the online ones only what was known when the frame arrived."""
    from wvm_ros.core.model import build_model, preset_config

    torch.manual_seed(0)
    model = build_model(preset_config("tiny", num_layers=1, video_hidden=64, num_heads=2, video_ffn=128,
                                      value_hidden=32, value_ffn=64, encoder_channels=[8, 16, 32],
                                      latent_channels=8, image_size=[32, 32])).eval()
    eps = synthetic_episodes(T=30, size=32)
    rep = E.evaluate(eps, [E.streaming_method(model), E.offline_method(model)], progress=False)
    on, off = rep.results["wvm"].predictions, rep.results["wvm_offline"].predictions
    h = model.config.h
    for ep in eps:
        # replay the windows by hand: sample k gets chunk position j of the window ending at k - j + h - 1
        from wvm_ros.core.streaming import StreamingValueEstimator

        est = StreamingValueEstimator(model, ep.task)
        chunks, sample_of = {}, []
        for i in range(ep.num_frames):
            before = est.num_sampled
            r = est.push(ep.frames[i], float(ep.timestamps[i]))
            if est.num_sampled > before and r is not None:
                chunks[est.num_sampled - 1] = r.chunk
            sample_of.append(est.num_sampled - 1)
        for i, k in enumerate(sample_of):
            covering = [chunks[w][h - 1 - (w - k)] for w in range(k, k + h) if w in chunks]
            assert off[ep.episode_index][i] == pytest.approx(float(np.clip(np.mean(covering), 0, 1)), abs=1e-5)
        assert np.isfinite(off[ep.episode_index]).all()          # the first frames are covered too
        assert np.isnan(on[ep.episode_index][0])                 # online: nothing before the warm-up
    assert "not causal" in rep.results["wvm_offline"].summary()["info"]["protocol"]


def test_offline_scores_from_the_live_pass_equal_a_separate_pass_dense_too():
    """`wvm eval` takes the offline scores from the live method's pass (keep_offline /
    from_live); they equal a separate offline pass, at 2 Hz and at 10 estimates/s, and the
    dense live estimates equal a by-hand StreamingValueEstimator replay."""
    from wvm_ros.core.model import build_model, preset_config
    from wvm_ros.core.streaming import StreamingValueEstimator

    torch.manual_seed(1)
    model = build_model(preset_config("tiny", num_layers=1, video_hidden=64, num_heads=2, video_ffn=128,
                                      value_hidden=32, value_ffn=64, encoder_channels=[8, 16, 32],
                                      latent_channels=8, image_size=[32, 32])).eval()
    eps = synthetic_episodes(T=30, size=32)
    for fps in (None, 10.0):
        shared: dict = {}
        rep = E.evaluate(eps, [E.streaming_method(model, estimate_fps=fps, keep_offline=shared),
                               E.offline_method(model, estimate_fps=fps, from_live=shared),
                               E.offline_method(model, "separate", estimate_fps=fps)], progress=False)
        assert shared == {}                                        # every episode was taken over
        one_by_one = E.evaluate(eps, [E.streaming_method(model, estimate_fps=fps)], progress=False, batch_size=1)
        for ep in eps:
            np.testing.assert_allclose(rep.results["wvm_offline"].predictions[ep.episode_index],
                                       rep.results["separate"].predictions[ep.episode_index], atol=1e-7)
            est = StreamingValueEstimator(model, ep.task, estimate_fps=fps)
            by_hand, last = [], np.nan
            for i in range(ep.num_frames):
                r = est.push(ep.frames[i], float(ep.timestamps[i]))
                last = r.progress if r is not None else last
                by_hand.append(last)
            # one by one: the same model calls as the replay; batched (the default): the same up
            # to float rounding (a batched call sums in another order)
            np.testing.assert_array_equal(one_by_one.results["wvm"].predictions[ep.episode_index], by_hand)
            np.testing.assert_allclose(rep.results["wvm"].predictions[ep.episode_index], by_hand, atol=1e-5)
        assert rep.results["wvm"].summary()["info"]["estimate_fps"] == (fps or model.config.sample_fps)
