"""StreamingValueEstimator: sampling by stamp, warm-up, caching, overlap averaging, prefix value, reset."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wvm_ros.core.model import build_model, preset_config
from wvm_ros.core.streaming import StreamingValueEstimator, ValueEstimate, estimate_episode, estimate_episodes


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


class CountingModel:
    """A real model that counts its calls and the items in them; real text embeddings of two
    lengths (one token for one instruction, three for the other)."""

    def __init__(self, model):
        self.model, self.config = model, model.config
        self.enc_calls = self.pred_calls = self.pred_items = 0

    def embed_text(self, text):
        g = torch.Generator().manual_seed(len(text))
        return torch.randn(1, 3 if "long" in text else 1, self.config.text_dim, generator=g)

    def encode_frames(self, frames):
        self.enc_calls += 1
        return self.model.encode_frames(frames)

    def predict_chunk(self, window, prefix, text, elapsed_s=None):
        self.pred_calls += 1
        self.pred_items += window.shape[0]
        return self.model.predict_chunk(window, prefix, text, elapsed_s=elapsed_s)


def test_estimate_episodes_batches_attempts_and_equals_one_by_one(model):
    """Several attempts at once (different lengths, frame sizes, instructions and stamps, one
    with a rejected repeated stamp): each one's online / smoothed / sampled equal its own
    `estimate_episode` up to float rounding, with far fewer model calls."""
    rng = np.random.default_rng(5)
    eps = []
    for k, (n, hw, task) in enumerate([(30, (48, 64), "push"), (22, (48, 64), "push"), (30, (32, 32), "push"),
                                       (17, (48, 64), "a long instruction"), (1, (48, 64), "push")]):
        st = 3.0 + np.arange(n) * (0.1 if k % 2 else 0.25)
        if n > 10:
            st[7] = st[6]                                   # repeated stamp: not used, counted
        eps.append((rng.integers(0, 255, (n, *hw, 3), dtype=np.uint8), st, task))
    for fps in (None, 10.0):
        cm = CountingModel(model)
        got = estimate_episodes(cm, eps, estimate_fps=fps)
        assert len(got) == len(eps)
        one_calls = 0
        for (f, st, task), g in zip(eps, got):
            single = CountingModel(model)
            ref = estimate_episode(single, f, st, task, estimate_fps=fps)
            one_calls += single.pred_calls
            np.testing.assert_array_equal(g["sampled"], ref["sampled"])
            np.testing.assert_allclose(g["online"], ref["online"], atol=1e-5)      # NaN where ref is NaN
            np.testing.assert_allclose(g["smoothed"], ref["smoothed"], atol=1e-5)
        assert cm.pred_items == one_calls > 20                       # the same windows, no more
        assert cm.pred_calls < one_calls / 1.5                       # batched: calls shared by attempts
    assert estimate_episodes(model, []) == []
    with pytest.raises(ValueError, match="frames and stamps differ in length: 3 vs 2"):
        estimate_episodes(model, [(eps[0][0][:3], eps[0][1][:2], "push")])
    with pytest.raises(ValueError, match="frame must be an np.ndarray"):
        estimate_episodes(model, [(eps[0][0][:3, :, :, :2], eps[0][1][:3], "push")])


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


# ---- robustness: non-finite model output, stamps that do not advance ------------------------
class NanOnce(Spy):
    """A real model whose chunk is NaN (or inf) for the calls listed in `bad` (0-based)."""

    def __init__(self, model, bad=(2,), value=float("nan")):
        super().__init__(model)
        self.untrained = False
        self.bad, self.value = set(bad), value

    def predict_chunk(self, window, prefix, text, elapsed_s=None):
        out = super().predict_chunk(window, prefix, text, elapsed_s=elapsed_s)
        if len(self.calls) - 1 in self.bad:
            out = out.clone()
            out[0, -1] = self.value
        return out


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_model_output_is_an_invalid_estimate_and_not_kept(model, value):
    from wvm_ros.core.streaming import NON_FINITE

    spy = NanOnce(model, bad=(2,), value=value)
    est = StreamingValueEstimator(spy, "t")
    fr = frames(10, seed=6)
    res = [est.push(fr[i], 100.0 + 0.5 * i) for i in range(10)]      # every frame sampled; call k at frame k + 1
    bad = res[3]                                                        # the third call (frame 3, 101.5 s)
    assert not bad.valid and np.isnan(bad.progress)
    assert bad.status.startswith("non-finite model output") and "1 NaN/inf of 4" in bad.status
    assert "stamp 101.500 s" in bad.status and est.counts[NON_FINITE] == 1
    # its values were not kept: later prefix values and estimates are finite and valid
    assert all(np.isfinite(p) for _, p, _ in spy.calls)
    assert all(np.isfinite(v) for vals in est._preds.values() for v in vals)
    assert all(r.valid and np.isfinite(r.progress) and r.status == "ok" for r in res[4:])


def test_zero_stamp_in_a_good_stream_is_rejected_not_a_restart(model):
    from wvm_ros.core.streaming import RESTARTS, ZERO_STAMP_STATUS, ZERO_STAMPS

    spy = Spy(model)
    est = StreamingValueEstimator(spy, "t")
    fr = frames(12, seed=7)
    for i in range(6):
        last = est.push(fr[i], 1000.0 + 0.5 * i)
    n = est.num_sampled
    assert est.push(fr[6], 0.0) is last                                 # the latest estimate, unchanged
    assert est.frame_status == ZERO_STAMP_STATUS and est.counts[ZERO_STAMPS] == 1
    assert est.counts[RESTARTS] == 0 and est.num_sampled == n
    e = est.push(fr[7], 1003.0)
    assert e.valid and e.stamp_s == 1003.0 and est.frame_status == ""
    assert spy.elapsed[-1] == pytest.approx(3.0)                        # still since the attempt's first frame
    # offline stamps count from 0: a first frame at 0 is a frame like any other
    est = StreamingValueEstimator(model, "t")
    assert est.push(fr[0], 0.0) is None and est.push(fr[1], 0.5).valid and est.counts[ZERO_STAMPS] == 0
    # the value node's setting: a stamp of 0 is never a frame's time
    est = StreamingValueEstimator(model, "t", reject_zero_stamps=True)
    assert est.push(fr[0], 0.0) is None and est.num_sampled == 0 and est.counts[ZERO_STAMPS] == 1


def test_a_slightly_older_frame_is_dropped_as_stale_not_a_restart(model):
    from wvm_ros.core.streaming import BACKWARD_TOLERANCE_S, RESTARTS, STALE_FRAMES

    assert BACKWARD_TOLERANCE_S == 1.0
    spy = Spy(model)
    est = StreamingValueEstimator(spy, "t")
    fr = frames(40, seed=8)
    for i in range(30):
        last = est.push(fr[i], 1000.0 + 0.1 * i)
    n = est.num_sampled
    assert est.push(fr[30], 1000.0 + 0.1 * 27) is last                 # 0.2 s older: jitter, a second publisher
    assert est.counts[STALE_FRAMES] == 1 and est.counts[RESTARTS] == 0 and est.num_sampled == n
    assert "stale frame" in est.frame_status and "0.200 s older" in est.frame_status
    assert est.push(fr[31], 1000.0 + 0.1 * 29 - 0.999) is last and est.counts[STALE_FRAMES] == 2
    e = est.push(fr[32], 1003.0)                                         # the stream goes on, same attempt
    assert e.valid and est.num_sampled == n + 1 and spy.elapsed[-1] == pytest.approx(3.0)


def test_a_large_backward_jump_starts_over_and_is_counted(model):
    from wvm_ros.core.streaming import RESTARTS, STALE_FRAMES

    est = StreamingValueEstimator(model, "t")
    fr = frames(12, seed=9)
    for i in range(6):
        est.push(fr[i], 500.0 + 0.5 * i)
    assert est.push(fr[6], 400.0) is None                              # a replayed bag restarting
    assert est.num_sampled == 1 and est.counts[RESTARTS] == 1 and est.counts[STALE_FRAMES] == 0
    assert "went back 102.500 s" in est.frame_status and "started over" in est.frame_status
    assert est.push(fr[7], 400.5).valid and est.frame_status == ""
    # the tolerance is a parameter: with 0.1 s, 0.2 s back starts over
    est = StreamingValueEstimator(model, "t", backward_tolerance_s=0.1)
    for i in range(4):
        est.push(fr[i], 10.0 + 0.5 * i)
    est.push(fr[4], 11.3)
    assert est.counts[RESTARTS] == 1 and est.num_sampled == 1
    with pytest.raises(ValueError, match="backward_tolerance_s must be a finite number of seconds >= 0, got -1"):
        StreamingValueEstimator(model, "t", backward_tolerance_s=-1)


def test_stamps_that_never_advance_are_counted_and_said(model):
    from wvm_ros.core.streaming import REPEATED_STAMPS, STALLED_FRAMES, ZERO_STAMPS

    fr = frames(STALLED_FRAMES + 5, seed=10)
    # an image publisher that never sets header.stamp (all 0), as the value node sees it
    est = StreamingValueEstimator(model, "t", reject_zero_stamps=True)
    outs = []
    for i in range(STALLED_FRAMES + 2):
        outs.append(est.push(fr[i], 0.0))
        assert (est.stamp_problem != "") == (i + 1 >= STALLED_FRAMES), i
    assert all(o is None for o in outs) and est.num_sampled == 0
    assert est.counts[ZERO_STAMPS] == STALLED_FRAMES + 2
    assert est.stamp_problem.startswith("frames have no increasing header.stamp") and "stamped 0" in est.stamp_problem
    # a stamp frozen at one value: every frame after the first repeats it
    est = StreamingValueEstimator(model, "t")
    for i in range(STALLED_FRAMES + 1):
        est.push(fr[i], 42.0)
    assert est.counts[REPEATED_STAMPS] == STALLED_FRAMES and est.num_sampled == 1
    assert "newest frame used (42.000 s)" in est.stamp_problem and "repeats" in est.frame_status
    est.push(fr[-1], 42.5)                                              # stamps advance again: said no more
    assert est.stamp_problem == "" and est.frame_status == ""


def test_a_non_finite_stamp_is_refused_naming_it(model):
    est = StreamingValueEstimator(model, "t")
    with pytest.raises(ValueError, match="stamp_s must be a finite number of seconds, got nan"):
        est.push(frames(1)[0], float("nan"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (runs on the lent GPU machine)")
def test_estimate_episodes_on_cuda_matches_cpu(model):
    """The batched pass with the model on a GPU (as `wvm eval --device cuda` runs it) gives the
    CPU's one-by-one estimates to float rounding."""
    import copy

    rng = np.random.default_rng(9)
    task = "Push the T-shaped block onto the T-shaped target."   # embedded ahead for the GPU machine
    eps = [(rng.integers(0, 255, (n, 48, 64, 3), dtype=np.uint8), 1.0 + np.arange(n) * 0.1, task)
           for n in (25, 18, 25)]
    gpu = copy.deepcopy(model).to("cuda")
    got = estimate_episodes(gpu, eps, estimate_fps=10.0)
    for (f, st, task), g in zip(eps, got):
        ref = estimate_episode(model, f, st, task, estimate_fps=10.0)
        np.testing.assert_array_equal(g["sampled"], ref["sampled"])
        np.testing.assert_allclose(g["online"], ref["online"], atol=1e-4)
        np.testing.assert_allclose(g["smoothed"], ref["smoothed"], atol=1e-4)
