"""StreamingValueEstimator: sampling by stamp, warm-up, caching, overlap averaging, prefix value, reset."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wvm_ros.core.model import build_model, preset_config
from wvm_ros.core.streaming import StreamingValueEstimator, ValueEstimate, estimate_episode


class Spy:
    """Wraps a real model and records what the estimator asks of it."""

    def __init__(self, model):
        self.model = model
        self.config = model.config
        self.untrained = True
        self.encoded = 0
        self.calls = []
        self.elapsed = []

    def embed_text(self, text):
        return torch.zeros(1, 1, self.config.text_dim)

    def encode_frames(self, frames):
        self.encoded += len(frames)
        return self.model.encode_frames(frames)

    def predict_chunk(self, window, prefix, text, elapsed_s=None):
        out = self.model.predict_chunk(window, prefix, text, elapsed_s=elapsed_s)
        self.calls.append((window.clone(), float(prefix[0]), out.clone()))
        self.elapsed.append(None if elapsed_s is None else float(elapsed_s[0]))
        return out


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(preset_config("tiny", num_layers=2, sample_fps=2.0, min_frames=2)).eval()


def frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (n, 48, 64, 3), dtype=np.uint8)


def test_sampling_warmup_and_cache(model):
    spy = Spy(model)
    est = StreamingValueEstimator(spy, "push the T")
    fr = frames(40)
    outs = [est.push(fr[i], 100.0 + i * 0.1) for i in range(40)]   # 10 Hz camera, 2 Hz sampling
    assert est.num_sampled == 8                                     # stamps 100.0, 100.5, ..., 103.5
    assert spy.encoded == 8 and len(spy.calls) == 7                 # each sampled frame encoded once
    assert all(o is None for o in outs[:5])                         # warming up until the 2nd sample
    assert isinstance(outs[5], ValueEstimate) and outs[5].valid
    assert outs[5].stamp_s == pytest.approx(100.5)
    assert outs[6] is outs[5]                                       # between samples: latest estimate
    assert 0.0 <= outs[-1].progress <= 1.0 and outs[-1].chunk.shape == (model.config.h,)


def test_overlap_average_and_prefix_value(model):
    spy = Spy(model)
    est = StreamingValueEstimator(spy, "t")
    fr = frames(12, seed=1)
    h = model.config.h
    res = [est.push(fr[i], i * 0.5) for i in range(12)]             # every frame sampled
    preds: dict[int, list[float]] = {}
    for n, (_, prefix, out) in enumerate(spy.calls, start=1):       # call n is made at sample index n
        p = n - h
        expect = 0.0 if p < 0 else float(np.mean(preds[p]))
        assert prefix == pytest.approx(expect, abs=1e-6)
        for j in range(h):
            k = n - h + 1 + j
            if k >= 0:
                preds.setdefault(k, []).append(float(out[0, j]))
        assert res[n].progress == pytest.approx(float(np.clip(np.mean(preds[n]), 0, 1)), abs=1e-6)
    assert len(preds[5]) == h                                        # h overlapping windows per frame
    # start of the attempt: the window is padded with the first frame's latent
    w0 = spy.calls[0][0]
    assert torch.equal(w0[0, 0], w0[0, h - 1]) and not torch.equal(w0[0, h - 1], w0[0, h])


def test_reset_and_time_going_back(model):
    spy = Spy(model)
    est = StreamingValueEstimator(spy, "t")
    fr = frames(6)
    for i in range(4):
        est.push(fr[i], i * 0.5)
    est.reset()
    assert est.num_sampled == 0 and est.push(fr[0], 10.0) is None
    assert est.push(fr[1], 10.5) is not None
    assert spy.calls[-1][1] == 0.0                                   # prefix value reset to 0
    assert est.push(fr[2], 1.0) is None and est.num_sampled == 1     # stamp went back: new attempt


def test_bad_frame_is_named(model):
    est = StreamingValueEstimator(Spy(model), "t")
    with pytest.raises(ValueError, match=r"\[H, W, 3\] uint8"):
        est.push(np.zeros((8, 8, 3), np.float32), 0.0)


def test_estimate_episode_and_real_text(model):
    fr = frames(20, seed=2)
    out = estimate_episode(model, fr, np.arange(20) * 0.25, "push the T onto the target")
    assert out["online"].shape == (20,) and np.isnan(out["online"][0]) and np.isfinite(out["online"][-1])
    assert out["sampled"].sum() == 10 and np.all((out["smoothed"] >= 0) & (out["smoothed"] <= 1))


# ---- dense mode (estimate_fps a multiple of sample_fps) -------------------------------------
def test_dense_every_frame_gets_an_estimate_from_a_2hz_window(model):
    spy = Spy(model)
    est = StreamingValueEstimator(spy, "t", estimate_fps=10.0)
    assert est.k == 5
    fr = frames(60, seed=3)
    res = [est.push(fr[i], 10.0 + i * 0.1) for i in range(60)]
    assert all(r is None for r in res[:5])                           # warm-up: 0.5 s, as at 2 Hz
    assert all(isinstance(r, ValueEstimate) for r in res[5:])
    assert len({r.stamp_s for r in res[5:]}) == 55                   # a new estimate at every frame
    assert spy.encoded == 60                                          # each frame encoded once
    lat = model.encode_frames(fr)
    h = model.config.h
    for call_no, n in enumerate(range(5, 60)):
        window = spy.calls[call_no][0][0]
        for j in range(1 + h):
            src = n - (h - j) * 5                                     # frames 0.5 s apart, ending at n
            assert torch.allclose(window[j], lat[max(src, 0)], atol=1e-5), (n, j)


def test_dense_equals_sparse_on_the_sparse_grid(model):
    """Windows ending on the 2 Hz grid see the same frames and (through their own phase) the
    same prefix values as the paper's stream, so they give the same estimates there."""
    fr = frames(80, seed=4)
    stamps = [i * 0.1 for i in range(80)]
    sparse = StreamingValueEstimator(model, "t")
    dense = StreamingValueEstimator(model, "t", estimate_fps=10.0)
    for i in range(80):
        s, d = sparse.push(fr[i], stamps[i]), dense.push(fr[i], stamps[i])
        if i % 5 == 0 and s is not None:
            assert d.stamp_s == pytest.approx(s.stamp_s)
            assert d.progress == pytest.approx(s.progress, abs=1e-5), i
            np.testing.assert_allclose(d.chunk, s.chunk, atol=1e-5)


def test_dense_with_a_slower_camera_uses_the_nearest_frames(model):
    spy = Spy(model)
    est = StreamingValueEstimator(spy, "t", estimate_fps=10.0)
    fr = frames(20, seed=5)
    res = [est.push(fr[i], i * 0.25) for i in range(20)]              # a 4 Hz camera
    assert all(isinstance(r, ValueEstimate) for r in res[2:])        # from 0.5 s on, every frame
    assert spy.encoded == 20


@pytest.mark.parametrize("fps", [3.0, 1.0, 0.0, -2.0])
def test_dense_rejects_rates_that_are_not_multiples(model, fps):
    with pytest.raises(ValueError, match="estimate_fps must be a whole multiple"):
        StreamingValueEstimator(model, "t", estimate_fps=fps)


def test_elapsed_time_is_seconds_since_the_attempt_began(model):
    """Every prediction is given the stamp of the window's newest frame minus the attempt's first
    stamp; a reset (a new attempt) starts the count again."""
    spy = Spy(model)
    est = StreamingValueEstimator(spy, "push the T")
    fr = frames(30)
    for i in range(30):
        est.push(fr[i], 50.0 + i * 0.1)
    assert spy.elapsed == pytest.approx([0.5 * k for k in range(1, 6)])   # samples at 50.5 .. 52.5
    est.reset()
    spy.elapsed.clear()
    for i in range(10):
        est.push(fr[i], 200.0 + i * 0.1)
    assert spy.elapsed == pytest.approx([0.5])


def test_attempt_clock_past_its_limit_is_said_in_the_status():
    """A model with the elapsed-time input, run longer than its elapsed_max_s without a reset (no
    attempt START): the estimates stay valid, their status says the clock is at its limit; a
    reset clears it. A model without the input never says so."""
    torch.manual_seed(0)
    clocked = build_model(preset_config("tiny", num_layers=2, sample_fps=2.0, min_frames=2, elapsed_input=True,
                                        elapsed_max_s=3.0)).eval()
    clocked.untrained = False
    est = StreamingValueEstimator(clocked, "push the T")
    fr = frames(50)
    outs = [est.push(fr[i], 10.0 + i * 0.1) for i in range(50)]          # 4.9 s without a reset
    assert all(o.status == "ok" for o in outs[5:31]) and all(o.valid for o in outs[5:])
    assert outs[-1].status.startswith("attempt clock at its limit") and "elapsed_max_s 3 s" in outs[-1].status
    est.reset()
    outs = [est.push(fr[i], 100.0 + i * 0.1) for i in range(10)]
    assert outs[-1].status == "ok"

    plain = build_model(preset_config("tiny", num_layers=2, sample_fps=2.0, min_frames=2, elapsed_max_s=3.0)).eval()
    plain.untrained = False
    est = StreamingValueEstimator(plain, "push the T")
    assert est_status(est, fr) == "ok"


def est_status(est, fr):
    out = None
    for i in range(50):
        out = est.push(fr[i], 10.0 + i * 0.1)
    return out.status
