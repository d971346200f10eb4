"""Backends behind one interface: torch and onnxruntime run here (CPU); TensorRT and the
GPU paths skip with a reason. Selection, fallback, strict and auto are tested for real."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from wvm_ros.core.backends import (BackendOptions, BackendUnavailableError, InferenceError, availability,
                                   build_backend, create_part_backend)
from wvm_ros.core.backends.tensorrt_backend import tensorrt_available
from wvm_ros.core.backends.torch_backend import TorchBackend

from test_export import parts  # noqa: E402 - shared toy parts


@pytest.fixture
def opts(tmp_path):
    return BackendOptions(cache_dir=str(tmp_path / "cache"), threads=1, auto_runs=3)


def test_torch_and_onnxruntime_agree(opts):
    for part in parts():
        outs = {}
        for kind in ("torch", "onnxruntime"):
            b = build_backend(kind, part, opts, "toyhash")
            assert b.name == kind and b.device == "cpu" and b.precision == "fp32"
            for batch in (1, 2, 5):
                x = part.batched_inputs(batch, seed=batch)
                out = b.run(x)
                assert list(out) == part.outputs
                assert out[part.outputs[0]].dtype == np.float32 and out[part.outputs[0]].shape[0] == batch
                outs[(kind, batch)] = out[part.outputs[0]]
        for batch in (1, 2, 5):
            assert np.max(np.abs(outs[("torch", batch)] - outs[("onnxruntime", batch)])) <= 1e-4
    # the ONNX file was exported once into the cache and is reused
    assert (opts.cache_path / "onnx" / "toyhash" / "predict_chunk.onnx").is_file()


def test_bad_input_is_a_clear_inference_error(opts):
    _, pred = parts()
    for kind in ("torch", "onnxruntime"):
        b = build_backend(kind, pred, opts, "toyhash")
        x = pred.batched_inputs(2)
        with pytest.raises(InferenceError, match="missing input"):
            b.run({"latents": x["latents"]})
        x["text"] = torch.randn(2, 17)
        with pytest.raises(InferenceError, match=r"input 'text' has shape \(2, 17\), expected \(N, 16\)"):
            b.run(x)


def test_exception_inside_inference_becomes_inference_error(opts):
    class Boom(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    from wvm_ros.core.export import ModelPart

    part = ModelPart("predict_chunk", Boom(), {"x": torch.zeros(1, 3)}, ["y"])
    b = build_backend("torch", part, opts, "h")
    with pytest.raises(InferenceError, match="torch\\[predict_chunk.*illegal memory access"):
        b.run({"x": np.zeros((1, 3), np.float32)})
    assert b.stats.errors == 1


def test_bf16_on_cpu_runs_and_fp16_on_cpu_is_refused(opts):
    _, pred = parts()
    opts.precision = "bf16"
    b = build_backend("torch", pred, opts, "h")
    assert b.run(pred.example_inputs)["chunk"].dtype == np.float32
    assert next(pred.module.parameters()).dtype == torch.float32  # the caller's module is untouched
    opts.precision = "fp16"
    with pytest.raises(BackendUnavailableError, match="fp16 on the CPU"):
        build_backend("torch", pred, opts, "h")


def test_unavailable_backend_falls_back_with_a_message(opts, caplog):
    _, pred = parts()
    opts.backend, opts.fallback = "tensorrt", ("onnxruntime", "torch")
    with caplog.at_level(logging.WARNING):
        sel = create_part_backend(pred, opts, "h")
    assert sel.backend.name == "onnxruntime" and sel.fell_back
    assert "tensorrt" in sel.tried and "TensorRT" in sel.tried["tensorrt"]
    assert any("fallback" in r.message for r in caplog.records)


def test_strict_refuses_to_fall_back(opts):
    _, pred = parts()
    opts.backend, opts.strict = "tensorrt", True
    with pytest.raises(BackendUnavailableError, match="required \\(strict\\)"):
        create_part_backend(pred, opts, "h")


def test_no_allowed_fallback_fails_clearly(opts):
    _, pred = parts()
    opts.backend, opts.device, opts.fallback = "torch", "cuda:7", ()
    if availability("cuda:7")["torch"] is None:
        pytest.skip("this machine has 8 GPUs")
    with pytest.raises(BackendUnavailableError, match="no fallback configured"):
        create_part_backend(pred, opts, "h")


def test_auto_times_candidates_and_keeps_the_fastest(opts, caplog):
    _, pred = parts()
    with caplog.at_level(logging.INFO):
        sel = create_part_backend(pred, opts, "h")
    assert set(sel.timings_ms) == {"onnxruntime", "torch"}
    assert sel.backend.name == min(sel.timings_ms, key=sel.timings_ms.get)
    assert any("auto backend" in r.message for r in caplog.records)


def test_auto_with_injected_builder_picks_the_faster(opts):
    """auto's choice follows measured speed, not a fixed order."""
    import time as _time

    from wvm_ros.core.backends.base import InferenceBackend

    class Slow(InferenceBackend):
        def __init__(self, name, delay):
            super().__init__("p", [], ["y"], "cpu", "fp32")
            self.name, self.delay = name, delay

        def _run(self, inputs):
            _time.sleep(self.delay)
            return {"y": np.zeros(1, np.float32)}

    from wvm_ros.core.export import ModelPart

    part = ModelPart("p", None, {}, ["y"])
    delays = {"onnxruntime": 0.004, "torch": 0.0}
    sel = create_part_backend(part, opts, "h", builder=lambda k, *a: Slow(k, delays[k]))
    assert sel.backend.name == "torch"
    delays.update(onnxruntime=0.0, torch=0.004)
    sel = create_part_backend(part, opts, "h", builder=lambda k, *a: Slow(k, delays[k]))
    assert sel.backend.name == "onnxruntime"


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="backend 'trt'"):
        BackendOptions(backend="trt")
    with pytest.raises(ValueError, match="fallback"):
        BackendOptions(fallback=("onnx",))
    assert BackendOptions(fallback="onnxruntime, torch").fallback == ("onnxruntime", "torch")


@pytest.mark.skipif(tensorrt_available() is not None, reason=f"TensorRT cannot run here: {tensorrt_available()}")
def test_tensorrt_backend_matches_torch(opts):  # pragma: no cover - GPU machines only
    opts.device, opts.precision = "cuda", "fp32"
    for part in parts():
        b = build_backend("tensorrt", part, opts, "toyhash")
        ref = build_backend("torch", part, opts, "toyhash").run(part.example_inputs)
        out = b.run(part.example_inputs)
        assert np.max(np.abs(out[part.outputs[0]] - ref[part.outputs[0]])) <= 1e-3
    opts.cuda_graphs, opts.precision = True, "fp16"
    _, pred = parts()
    b = build_backend("tensorrt", pred, opts, "toyhash")
    a1 = b.run(pred.example_inputs)["chunk"]
    a2 = b.run(pred.example_inputs)["chunk"]  # replayed graph
    assert np.allclose(a1, a2, atol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_torch_cuda_fp16(opts):  # pragma: no cover - GPU machines only
    opts.device, opts.precision = "cuda", "fp16"
    _, pred = parts()
    out = build_backend("torch", pred, opts, "h").run(pred.example_inputs)["chunk"]
    assert out.dtype == np.float32 and np.isfinite(out).all()


def test_torch_cuda_graphs_flag_is_ignored_on_the_cpu(opts):
    _, pred = parts()
    b = TorchBackend(pred.module, "predict_chunk", pred.specs(), pred.outputs, "cpu", "fp32", cuda_graphs=True)
    assert b.cuda_graphs is False
    ref = TorchBackend(pred.module, "predict_chunk", pred.specs(), pred.outputs, "cpu", "fp32")
    np.testing.assert_array_equal(b.run(pred.example_inputs)["chunk"], ref.run(pred.example_inputs)["chunk"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_torch_cuda_graphs_match_eager(opts):  # pragma: no cover - GPU machines only
    _, pred = parts()
    eager = TorchBackend(pred.module, "predict_chunk", pred.specs(), pred.outputs, "cuda", "fp32")
    graphed = TorchBackend(pred.module, "predict_chunk", pred.specs(), pred.outputs, "cuda", "fp32",
                           cuda_graphs=True)
    outs = []
    for seed in (0, 1, 2):  # new inputs each call: they are copied into the graph's buffers
        inputs = pred.batched_inputs(1, seed=seed)
        a, b = eager.run(inputs)["chunk"], graphed.run(inputs)["chunk"]
        np.testing.assert_allclose(b, a, atol=1e-5)
        outs.append(b)
    assert graphed.cuda_graphs and len(graphed._graphs) == 1
    assert not np.allclose(outs[0], outs[1])


def test_options_from_node_params():
    o = BackendOptions.from_params({"backend": "onnxruntime", "device": "cpu", "precision": "fp32",
                                    "fallback": ["torch"], "strict": True, "cache_dir": "", "threads": 0})
    assert o.backend == "onnxruntime" and o.fallback == ("torch",) and o.strict and o.threads is None
    assert o.cache_dir is None
    with pytest.raises(ValueError, match="unknown backend option.*'backnd'"):
        BackendOptions.from_params({"backnd": "torch"})


def test_export_failure_falls_back(opts, caplog):
    """A graph the exporter cannot handle makes onnxruntime unavailable, not the node dead."""
    from wvm_ros.core.export import ModelPart

    class NoExport(torch.nn.Module):
        def forward(self, x):
            return torch.fft.fft(x).real  # no ONNX export for complex ffts

    part = ModelPart("predict_chunk", NoExport(), {"x": torch.randn(1, 8)}, ["y"])
    opts.backend, opts.fallback = "onnxruntime", ("torch",)
    sel = create_part_backend(part, opts, "fft")
    assert sel.backend.name == "torch" and "onnxruntime" in sel.tried
