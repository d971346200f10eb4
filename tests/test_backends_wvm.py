"""The WVM (tiny preset) on backends: both parts export within 1e-4, the streaming estimator
gives the same values on onnxruntime as on torch, several cameras batch into one call,
inference errors surface as InferenceError."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wvm_ros.core.backends import BackendOptions, InferenceError
from wvm_ros.core.backends.wvm import (BackendValueModel, MultiCameraEstimator, NaiveValueEstimator,
                                       build_estimator, create_value_backends, model_hash, wvm_parts)
from wvm_ros.core.export import check_onnx, export_part

TASK = "push the T onto the target"


@pytest.fixture(scope="module")
def model():
    from wvm_ros.core.model import build_model

    torch.manual_seed(0)
    return build_model("tiny", "cpu", seed=0).eval()


def frames(n, seed=0, size=(96, 96)):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    out = []
    for i in range(n):  # a slowly moving scene, so latents change frame to frame
        f = np.roll(base, 3 * i, axis=1).copy()
        f[: 4 + i % 20, :] = 255
        out.append(f)
    return out


def test_parts_export_within_1e4(model, tmp_path):
    for part in wvm_parts(model, batch=2):
        path = export_part(part, tmp_path, dynamic_batch=True)
        chk = check_onnx(part, path)
        assert chk.passed, chk
    enc, pred = wvm_parts(model, batch=2)
    # the static-shape encoder part computes exactly what the model does
    x = enc.example_inputs["frames"]
    with torch.no_grad():
        assert torch.allclose(enc.module(x), model.encode_tensor(x), atol=1e-6)
        ex = pred.example_inputs
        assert torch.allclose(pred.module(*ex.values()), model.predict_chunk(*ex.values()), atol=1e-6)


def test_model_hash_follows_weights(model):
    h = model_hash(model)
    assert h == model_hash(model)
    from wvm_ros.core.model import build_model

    other = build_model("tiny", "cpu", seed=1)
    assert model_hash(other) != h


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_streaming_on_backend_matches_plain_model(model, tmp_path, backend):
    from wvm_ros.core.streaming import StreamingValueEstimator

    ref = StreamingValueEstimator(model, TASK)
    est = build_estimator(model, TASK, BackendOptions(backend=backend, strict=True, cache_dir=str(tmp_path),
                                                      threads=1))
    assert est.model.predictor.name == backend
    n_est = 0
    for i, f in enumerate(frames(24)):
        a, b = ref.push(f, i / 10.0), est.push(f, i / 10.0)
        assert (a is None) == (b is None)
        if a is not None:
            n_est += 1
            assert abs(a.progress - b.progress) <= 1e-4
            assert np.max(np.abs(a.chunk - b.chunk)) <= 1e-4
    assert n_est >= 15


def test_multi_camera_batches_into_one_call(model, tmp_path):
    from wvm_ros.core.streaming import StreamingValueEstimator

    vm, _ = create_value_backends(model, BackendOptions(backend="onnxruntime", strict=True,
                                                        cache_dir=str(tmp_path), threads=1))
    vm._pred_batcher.max_wait_s = vm._enc_batcher.max_wait_s = 0.5  # generous: threads on a busy CI box
    cams = ["front", "wrist", "top"]
    multi = MultiCameraEstimator(vm, cams, TASK)
    refs = {c: StreamingValueEstimator(model, TASK) for c in cams}
    seqs = {c: frames(8, seed=k) for k, c in enumerate(cams)}
    try:
        for i in range(8):
            got = multi.push_many({c: (seqs[c][i], i * 0.5) for c in cams})
            for c in cams:
                r = refs[c].push(seqs[c][i], i * 0.5)
                assert (r is None) == (got[c] is None)
                if r is not None:
                    assert abs(r.progress - got[c].progress) <= 1e-4
    finally:
        multi.close()
    b = vm._pred_batcher
    assert b.items == 3 * 7 and b.calls < b.items  # 7 estimates per camera (min_frames 2)
    assert b.calls <= 7 + 2  # nearly every step was one call for all three cameras


def test_inference_error_reaches_the_caller(model, tmp_path):
    class Broken:
        name, device, precision, input_names = "broken", "cpu", "fp32", ["latent_window", "prefix_value", "text_emb"]

        def describe(self):
            return "broken[predict_chunk]"

        def run(self, inputs):
            raise InferenceError("broken[predict_chunk] failed: CUDA error: out of memory")

    vm, _ = create_value_backends(model, BackendOptions(backend="torch", cache_dir=str(tmp_path)))
    bad = BackendValueModel(model, vm.encoder, Broken())
    from wvm_ros.core.streaming import StreamingValueEstimator

    est = StreamingValueEstimator(bad, TASK)
    fs = frames(3)
    assert est.push(fs[0], 0.0) is None
    with pytest.raises(InferenceError, match="out of memory"):
        est.push(fs[1], 0.5)
    # the estimator is still usable afterwards (the node keeps running)
    good = StreamingValueEstimator(vm, TASK)
    good.push(fs[0], 0.0)
    assert good.push(fs[1], 0.5).valid


def test_naive_estimator_recomputes_every_frame(model):
    calls = {"enc": 0}
    orig = model.encode_frames

    def counting(f):
        calls["enc"] += len(f)
        return orig(f)

    naive = NaiveValueEstimator(model, TASK)
    model.encode_frames = counting
    try:
        out = [naive.push(f, i / 30.0) for i, f in enumerate(frames(20))]
    finally:
        del model.encode_frames
    # 2 sampled frames (at 0 s and 0.5 s) are needed; from then on EVERY camera frame is an estimate
    assert all(o is None for o in out[:15]) and all(o is not None for o in out[15:])
    assert calls["enc"] == 5 * (1 + model.config.h)  # whole window re-encoded for each estimate


def test_preprocess_matches_frames_to_tensor():
    from wvm_ros.core.backends.wvm import preprocess_frames
    from wvm_ros.core.model.encoders import frames_to_tensor

    rng = np.random.default_rng(0)
    for shape in [(480, 640, 3), (2, 96, 96, 3), (1, 64, 64, 3), (3, 50, 70, 3)]:
        f = rng.integers(0, 255, shape, dtype=np.uint8)
        a = preprocess_frames(f, (64, 64))
        b = frames_to_tensor(f, (64, 64), torch.device("cpu"))
        assert a.shape == b.shape and torch.max(torch.abs(a - b)) <= 1e-5
    with pytest.raises(ValueError, match="RGB"):
        preprocess_frames(np.zeros((4, 4), np.uint8), (64, 64))


def test_text_length_is_dynamic(model, tmp_path):
    """T5 instructions give [1, L, D] embeddings: the exported predictor takes any L."""
    from wvm_ros.core.backends import build_backend

    _, pred = wvm_parts(model)
    b = build_backend("onnxruntime", pred, BackendOptions(cache_dir=str(tmp_path), threads=1), model_hash(model))
    x = dict(pred.example_inputs)
    x["text_emb"] = torch.randn(1, 3, model.config.text_dim)
    got = b.run(x)["chunk"]
    with torch.no_grad():
        ref = model.predict_chunk(*x.values()).numpy()
    assert np.max(np.abs(got - ref)) <= 1e-4


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_elapsed_time_input_on_backends(tmp_path, backend):
    """A model with the elapsed-time input exports it as a graph input; the streaming estimator
    on the backend gives the plain model's values, and a call without it is refused."""
    from wvm_ros.core.model import build_model, preset_config
    from wvm_ros.core.streaming import StreamingValueEstimator

    torch.manual_seed(0)
    m = build_model(preset_config("tiny", num_layers=2, elapsed_input=True)).eval()
    torch.nn.init.normal_(m.elapsed_embedding[2].weight, std=0.5)   # make the input matter
    pred = wvm_parts(m)[1]
    assert list(pred.example_inputs) == ["latent_window", "prefix_value", "text_emb", "elapsed_s"]
    if backend == "onnxruntime":
        assert check_onnx(pred, export_part(pred, tmp_path, dynamic_batch=True)).passed
    ref = StreamingValueEstimator(m, TASK)
    est = build_estimator(m, TASK, BackendOptions(backend=backend, strict=True, cache_dir=str(tmp_path), threads=1))
    assert "elapsed_s" in est.model.predictor.input_names
    for i, f in enumerate(frames(16)):
        a, b = ref.push(f, i / 10.0), est.push(f, i / 10.0)
        if a is not None:
            assert abs(a.progress - b.progress) <= 1e-4
    lat = torch.randn(1, m.config.window_frames, *m.config.latent_shape)
    with pytest.raises(InferenceError, match="elapsed-time input"):
        est.model.predict_chunk(lat, torch.tensor([0.1]), m.embed_text(TASK))
