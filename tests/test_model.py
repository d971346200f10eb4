"""WVM model: attention mask, RoPE equivalence, save/load, checkpoint errors, presets."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wvm_ros.core.model import (
    ModelLoadError, build_model, load_value_model, preset_config, save_checkpoint,
)
from wvm_ros.core.model.wvm import _rope_real, value_rope_angles, video_rope_angles


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model(preset_config("tiny", num_layers=2), "cpu").eval()


def _text(model, b=1):
    torch.manual_seed(1)
    return torch.randn(b, 1, model.config.text_dim)


def test_video_tokens_never_see_value_tokens(tiny):
    c = tiny.config
    torch.manual_seed(0)
    lat = torch.randn(2, c.latent_channels, c.clip_frames, *c.latent_shape[1:])
    sig = torch.zeros(2, c.clip_frames)
    sig[:, c.window_frames:] = 0.7
    text = _text(tiny, 2)
    tok_sigma = torch.cat([torch.zeros(2, 1), torch.full((2, c.h), 0.5)], 1)
    with torch.no_grad():
        v1, a1 = tiny.joint_forward(lat, sig, c.window_frames, torch.randn(2, 1 + c.h), tok_sigma, text)
        v2, a2 = tiny.joint_forward(lat, sig, c.window_frames, torch.randn(2, 1 + c.h) * 5, tok_sigma, text)
    assert torch.equal(v1, v2), "video outputs changed when only the value tokens changed"
    assert not torch.allclose(a1, a2), "value outputs must depend on the value tokens"


def test_clean_video_and_value_do_not_see_future_frames(tiny):
    c = tiny.config
    torch.manual_seed(0)
    lat = torch.randn(1, c.latent_channels, c.clip_frames, *c.latent_shape[1:])
    lat2 = lat.clone()
    lat2[:, :, c.window_frames:] = torch.randn_like(lat2[:, :, c.window_frames:])
    sig = torch.zeros(1, c.clip_frames)
    y = torch.randn(1, 1 + c.h)
    ts = torch.zeros(1, 1 + c.h)
    with torch.no_grad():
        v1, a1 = tiny.joint_forward(lat, sig, c.window_frames, y, ts, _text(tiny))
        v2, a2 = tiny.joint_forward(lat2, sig, c.window_frames, y, ts, _text(tiny))
    assert torch.allclose(a1, a2, atol=1e-5)
    assert torch.allclose(v1[:, :, : c.window_frames], v2[:, :, : c.window_frames], atol=1e-5)
    # and the value stream does read the current frames
    lat3 = lat.clone()
    lat3[:, :, 1] += 3.0
    with torch.no_grad():
        _, a3 = tiny.joint_forward(lat3, sig, c.window_frames, y, ts, _text(tiny))
    assert not torch.allclose(a1, a3)


def test_kv_cache_path_equals_joint_forward(tiny):
    """predict_chunk (video-KV-cache path) gives the one-Euler-step result of the joint forward."""
    c = tiny.config
    torch.manual_seed(3)
    win = torch.randn(2, c.window_frames, *c.latent_shape)
    prefix = torch.tensor([0.2, 0.6])
    text = _text(tiny, 2)
    with torch.no_grad():
        chunk = tiny.predict_chunk(win, prefix, text)
        y = torch.cat([(2 * prefix - 1)[:, None], torch.zeros(2, c.h)], 1)
        ts = torch.cat([torch.zeros(2, 1), torch.ones(2, c.h)], 1)
        _, vel = tiny.joint_forward(win.permute(0, 2, 1, 3, 4), torch.zeros(2, c.window_frames),
                                    c.window_frames, y, ts, text)
    ref = ((-vel[:, 1:] + 1) / 2).clamp(0, 1)
    assert chunk.shape == (2, c.h)
    assert torch.allclose(chunk, ref, atol=1e-5)


def test_real_rope_matches_lerobot_complex_rope():
    from lerobot.policies.fastwam.wan.model import rope_apply, rope_params
    from lerobot.policies.fastwam.wan.video_dit import apply_dense_rope

    n, d, f, h, w = 2, 32, 3, 2, 2
    x = torch.randn(1, f * h * w, n * d)
    freqs = torch.cat([rope_params(1024, d - 4 * (d // 6)), rope_params(1024, 2 * (d // 6)),
                       rope_params(1024, 2 * (d // 6))], dim=1)
    ref = rope_apply(x.view(1, -1, n, d), torch.tensor([[f, h, w]]), freqs).flatten(2)
    ang = video_rope_angles(d, f, h, w)
    assert torch.allclose(_rope_real(x, ang.cos().float(), ang.sin().float(), n), ref.float(), atol=1e-5)
    xs = torch.randn(1, 5, n * d)
    ref2 = apply_dense_rope(xs, rope_params(1024, d)[:5].view(5, 1, -1), n)
    ang2 = value_rope_angles(d, 5)
    assert torch.allclose(_rope_real(xs, ang2.cos().float(), ang2.sin().float(), n), ref2, atol=1e-5)


def test_sinusoidal_embedding_matches_lerobot():
    from lerobot.policies.fastwam.wan.model import sinusoidal_embedding_1d as lerobot_emb

    from wvm_ros.core.model.wvm import sinusoidal_embedding_1d

    pos = torch.tensor([0.0, 1.0, 37.5, 999.0])
    ours, ref = sinusoidal_embedding_1d(64, pos), lerobot_emb(64, pos)
    assert ours.dtype == ref.dtype == torch.float64
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_save_load_round_trip_identical(tmp_path):
    m = load_value_model(None, "tiny")
    assert m.untrained and m.checkpoint_id == "UNTRAINED" and m.name == "tiny"
    ck = tmp_path / "ck"
    cid = save_checkpoint(m, ck)
    m2 = load_value_model(str(ck), "tiny")
    assert not m2.untrained and m2.checkpoint_id == cid and len(cid) == 12
    frames = np.random.default_rng(0).integers(0, 255, (5, 70, 90, 3), dtype=np.uint8)
    text = torch.randn(1, 1, 384)
    with torch.no_grad():
        out1 = m.predict_chunk(m.encode_frames(frames)[None], torch.tensor([0.3]), text)
        out2 = m2.predict_chunk(m2.encode_frames(frames)[None], torch.tensor([0.3]), text)
    assert torch.equal(out1, out2)
    # preset None takes the checkpoint's own
    assert load_value_model(ck, None).name == "tiny"


def test_checkpoint_errors(tmp_path):
    with pytest.raises(ModelLoadError, match=r"does not exist.*preset 'tiny'"):
        load_value_model(tmp_path / "nope", "tiny")
    ck = tmp_path / "ck"
    save_checkpoint(build_model(preset_config("tiny", num_layers=2)), ck)
    # mismatched preset
    with pytest.raises(ModelLoadError, match=r"holds preset 'tiny' but preset 'small'"):
        load_value_model(ck, "small")
    # mismatched shapes: config says 4 layers, weights have 2
    doc = json.loads((ck / "config.json").read_text())
    doc["config"]["num_layers"] = 4
    doc["config"]["latent_channels"] = 8
    (ck / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ModelLoadError, match=r"does not match preset 'tiny'.*expected .* got"):
        load_value_model(ck, "tiny")
    # unreadable weights
    (ck / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="cannot read model.safetensors"):
        load_value_model(ck, "tiny")
    (ck / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="config.json is missing"):
        load_value_model(ck, "tiny")
    with pytest.raises(ModelLoadError, match="unknown preset"):
        load_value_model(None, "huge")


def test_bad_inputs_are_named(tiny):
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        tiny.encode_frames(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="latent_window must be"):
        tiny.predict_chunk(torch.zeros(1, 2, 16, 8, 8), torch.zeros(1), torch.zeros(1, 1, 384))


def test_training_loss_backward_and_lambda_zero(tiny):
    c = tiny.config
    frames = torch.rand(2, c.clip_frames, 3, *c.image_size) * 2 - 1
    text = _text(tiny, 2)
    out = tiny.training_loss(frames, torch.rand(2), torch.rand(2, c.h), text, lambda_video=1.0)
    assert out["loss_video"] > 0 and torch.isfinite(out["loss"])
    out0 = tiny.training_loss(frames, torch.rand(2), torch.rand(2, c.h), text, lambda_video=0.0)
    assert float(out0["loss_video"]) == 0.0
    out["loss"].backward()
    assert tiny.frame_encoder.net[0].weight.grad is not None
    tiny.zero_grad()


def test_future_frames_encoded_without_autograd_give_the_same_loss_and_gradients():
    """The future latents are targets: encoding them under no_grad (the default) gives the same
    losses and the same gradients for every parameter as encoding all 1 + 2h frames in the
    graph and detaching the future (future_encoder_grad=True, `wvm bench train`'s baseline)."""
    torch.manual_seed(0)
    model = build_model(preset_config("tiny", num_layers=2, elapsed_input=True), "cpu").train()
    c = model.config
    frames = torch.rand(3, c.clip_frames, 3, *c.image_size) * 2 - 1
    text, prefix, values = _text(model, 3), torch.rand(3), torch.rand(3, c.h)
    elapsed = torch.tensor([0.5, 3.0, 12.0])

    def run(**kw):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(7)   # same flow-matching noise and sigmas
        out = model.training_loss(frames, prefix, values, text, lambda_video=1.0, elapsed_s=elapsed, **kw)
        out["loss"].backward()
        return ({k: float(v) for k, v in out.items()},
                {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})

    fast, g_fast = run()
    slow, g_slow = run(future_encoder_grad=True)
    assert fast == pytest.approx(slow, rel=1e-5, abs=1e-7) and fast["loss_video"] > 0
    assert set(g_fast) == set(g_slow) and any(n.startswith("frame_encoder") for n in g_fast)
    for n in g_fast:
        torch.testing.assert_close(g_fast[n], g_slow[n], rtol=1e-4, atol=1e-6, msg=n)
    # the future frames do matter (through the video target): changing them changes the loss
    frames[:, c.window_frames:] = -frames[:, c.window_frames:]
    changed, _ = run()
    assert changed["loss_video"] != pytest.approx(fast["loss_video"], rel=1e-3)
    model.zero_grad(set_to_none=True)


def test_value_weight_is_a_weighted_mean_over_clips(tiny):
    """value_weight [B] weighs each clip's value loss: weights (1, 0) give clip 0's loss alone,
    equal weights the plain mean; bad weights are named."""
    c = tiny.config
    frames = torch.rand(2, c.window_frames, 3, *c.image_size) * 2 - 1
    text, prefix, values = _text(tiny, 2), torch.rand(2), torch.rand(2, c.h)

    def loss(**kw):
        torch.manual_seed(5)   # same flow-matching noise and sigma for every call
        return float(tiny.training_loss(frames, prefix, values, text, lambda_video=0.0, **kw)["loss_value"])

    both = loss()
    assert loss(value_weight=torch.tensor([2.0, 2.0])) == pytest.approx(both, rel=1e-5)
    first = loss(value_weight=torch.tensor([1.0, 0.0]))
    second = loss(value_weight=torch.tensor([0.0, 3.0]))
    assert both == pytest.approx((first + second) / 2, rel=1e-5) and first != pytest.approx(second)
    assert loss(value_weight=torch.tensor([1.0, 3.0])) == pytest.approx((first + 3 * second) / 4, rel=1e-5)
    for bad in (torch.tensor([1.0]), torch.tensor([1.0, float("nan")]), torch.tensor([-1.0, 1.0])):
        with pytest.raises(ValueError, match="value_weight"):
            loss(value_weight=bad)


def test_parts_export_to_onnx(tiny, tmp_path):
    """encode_frames and predict_chunk export on their own (legacy exporter) and match torch."""
    ort = pytest.importorskip("onnxruntime")
    c = tiny.config

    class Chunk(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, w, p, t):
            return self.m.predict_chunk(w, p, t)

    w = torch.randn(1, c.window_frames, *c.latent_shape)
    p = torch.tensor([0.4])
    t = torch.randn(1, 1, c.text_dim)
    path = tmp_path / "chunk.onnx"
    with torch.no_grad():
        torch.onnx.export(Chunk(tiny), (w, p, t), str(path), dynamo=False,
                          input_names=["latent_window", "prefix_value", "text_emb"], output_names=["chunk"])
        ref = tiny.predict_chunk(w, p, t).numpy()
    out = ort.InferenceSession(str(path)).run(None, {"latent_window": w.numpy(), "prefix_value": p.numpy(),
                                                      "text_emb": t.numpy()})[0]
    assert np.abs(out - ref).max() < 1e-4


def test_elapsed_time_input(tmp_path):
    """A model built with elapsed_input needs elapsed_s; fresh, it equals the model without the
    input (zero-initialised last layer); trained weights make the output depend on it; it is
    clipped to elapsed_max_s, counted in the value stream, saved and loaded; models without
    the input ignore the argument."""
    torch.manual_seed(0)
    plain = build_model(preset_config("tiny", num_layers=2)).eval()
    torch.manual_seed(0)
    m = build_model(preset_config("tiny", num_layers=2, elapsed_input=True, elapsed_max_s=30.0)).eval()
    c = m.config
    assert m.parameter_counts()["value"] > plain.parameter_counts()["value"]
    w = torch.randn(2, c.window_frames, *c.latent_shape)
    p = torch.tensor([0.2, 0.6])
    t = _text(m)
    with torch.no_grad():
        with pytest.raises(ValueError, match="elapsed_input=True: pass elapsed_s"):
            m.predict_chunk(w, p, t)
        with pytest.raises(ValueError, match="elapsed_s must have 2 entries"):
            m.predict_chunk(w, p, t, elapsed_s=torch.zeros(3))
        fresh = m.predict_chunk(w, p, t, elapsed_s=torch.tensor([1.0, 9.0]))
        assert torch.equal(fresh, plain.predict_chunk(w, p, t))
        assert torch.equal(plain.predict_chunk(w, p, t, elapsed_s=torch.tensor([5.0, 5.0])),
                           plain.predict_chunk(w, p, t))
        torch.nn.init.normal_(m.elapsed_embedding[2].weight, std=0.5)
        a = m.predict_chunk(w, p, t, elapsed_s=torch.tensor([1.0, 1.0]))
        b = m.predict_chunk(w, p, t, elapsed_s=torch.tensor([12.0, 12.0]))
        assert (a - b).abs().max() > 1e-3
        # clipped: beyond elapsed_max_s nothing changes
        assert torch.equal(m.predict_chunk(w, p, t, elapsed_s=torch.tensor([30.0, 30.0])),
                           m.predict_chunk(w, p, t, elapsed_s=torch.tensor([99.0, 99.0])))
    frames = torch.rand(2, c.clip_frames, 3, *c.image_size) * 2 - 1
    with pytest.raises(ValueError, match="pass elapsed_s"):
        m.training_loss(frames, p, torch.rand(2, c.h), t)
    out = m.training_loss(frames, p, torch.rand(2, c.h), t, elapsed_s=torch.tensor([0.5, 4.0]))
    out["loss"].backward()
    assert m.elapsed_embedding[2].weight.grad.abs().sum() > 0
    ck = tmp_path / "ck"
    save_checkpoint(m, ck)
    m2 = load_value_model(ck, "tiny")
    assert m2.config.elapsed_input and m2.config.elapsed_max_s == 30.0
    with torch.no_grad():
        assert torch.equal(m2.predict_chunk(w, p, t, elapsed_s=torch.tensor([3.0, 7.0])),
                           m.predict_chunk(w, p, t, elapsed_s=torch.tensor([3.0, 7.0])))
    with pytest.raises(ValueError, match="elapsed_max_s must be > 0"):
        preset_config("tiny", elapsed_input=True, elapsed_max_s=0)


@pytest.mark.parametrize("override, message", [
    ({"image_size": (0, 0)}, "image_size must be 2 sizes, each >= 1, got [0, 0]"),
    ({"image_size": (64,)}, "image_size must be 2 sizes"),
    ({"encoder_channels": ()}, "encoder_channels must be one or more widths"),
    ({"num_layers": 0}, "num_layers must be >= 1, got 0"),
    ({"latent_channels": -4}, "latent_channels must be >= 1, got -4"),
    ({"value_train_shift": float("nan")}, "value_train_shift must be > 0"),
    ({"image_size": (16, 16)}, "must be divisible by the encoder downsampling"),
])
def test_config_rejects_impossible_shapes_naming_them(override, message):
    """A config that cannot build a model fails in the config, naming the field (a zero image
    size used to surface as a conv error deep in the first training step)."""
    with pytest.raises(ValueError) as e:
        preset_config("tiny", **override)
    assert message in str(e.value)
