"""ONNX export + numerical check, and the TensorRT engine cache (build function and GPU
environment injected: no GPU / TensorRT here)."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from wvm_ros.core.backends.engine_cache import EngineCache, EngineCacheError, EngineKey
from wvm_ros.core.export import (ModelPart, build_engine_cached, check_onnx, export_part, export_parts,
                                 trt_profiles)


class Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.GELU(),
                                        torch.nn.Conv2d(8, 4, 3, 2, 1))

    def forward(self, frames):  # (B, H, W, 3) uint8
        x = frames.permute(0, 3, 1, 2).float() / 255.0
        return self.conv(x)


class Predictor(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lat = torch.nn.Linear(5 * 4 * 4 * 4, 32)
        self.txt = torch.nn.Linear(16, 32)
        self.attn = torch.nn.MultiheadAttention(32, 4, batch_first=True)
        self.out = torch.nn.Linear(32, 4)

    def forward(self, latents, prefix, text):
        h = self.lat(latents.flatten(1)) + self.txt(text) + prefix
        h = h.unsqueeze(1).repeat(1, 3, 1)
        h, _ = self.attn(h, h, h)
        return torch.sigmoid(self.out(h.mean(1)))


def parts(batch: int = 2):
    torch.manual_seed(0)
    enc = ModelPart("encode_frames", Encoder(), {"frames": torch.randint(0, 255, (batch, 16, 16, 3), dtype=torch.uint8)},
                    ["latents"])
    pred = ModelPart("predict_chunk", Predictor(),
                     {"latents": torch.randn(batch, 5, 4, 4, 4), "prefix": torch.rand(batch, 1),
                      "text": torch.randn(batch, 16)}, ["chunk"])
    return enc, pred


@pytest.mark.parametrize("dynamic", [False, True])
def test_export_matches_torch_within_1e4(tmp_path, dynamic):
    for part in parts():
        path = export_part(part, tmp_path, dynamic_batch=dynamic)
        chk = check_onnx(part, path)
        assert chk.passed and chk.max_abs_diff <= 1e-4, chk
        assert chk.batch_sizes == ([2, 3] if dynamic else [2])


def test_fixed_batch_rejects_other_batch(tmp_path):
    import onnxruntime as ort

    enc, _ = parts()
    path = export_part(enc, tmp_path, dynamic_batch=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception):
        sess.run(None, {"frames": np.zeros((3, 16, 16, 3), np.uint8)})


def test_check_detects_a_wrong_graph(tmp_path):
    """The check must fail when the ONNX file does not compute what torch computes."""
    _, pred = parts()
    path = export_part(pred, tmp_path)
    with torch.no_grad():
        pred.module.out.bias += 0.5  # torch changes after export
    chk = check_onnx(pred, path)
    assert not chk.passed and chk.max_abs_diff > 1e-3


def test_export_parts_writes_report(tmp_path):
    rep = export_parts(parts(), tmp_path, {"name": "toy"}, dynamic_batch=True, progress=False)
    data = json.loads((tmp_path / "export.json").read_text())
    assert rep.ok and data["ok"]
    assert set(data["parts"]) == {"encode_frames", "predict_chunk"}
    assert all(p["max_abs_diff"] <= 1e-4 for p in data["parts"].values())


# ---------------------------------------------------------------- engine cache
ENV_A = {"gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "trt_version": "10.13.0"}


def fake_build(counter: Path):
    def build(onnx_path, out, precision, profiles, workspace_gb):
        with open(counter, "a") as f:
            f.write(f"{precision}\n")
        Path(out).write_bytes(b"ENGINE:" + Path(onnx_path).read_bytes()[:64] + precision.encode())
    return build


def builds(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


@pytest.fixture
def onnx_file(tmp_path):
    enc, _ = parts()
    return export_part(enc, tmp_path / "onnx", dynamic_batch=True)


def test_engine_cache_builds_once_and_rebuilds_on_key_change(tmp_path, onnx_file):
    c = tmp_path / "count"
    cache = tmp_path / "engines"
    prof = trt_profiles(parts()[0], 4)
    r1 = build_engine_cached(onnx_file, cache, "fp16", prof, env=ENV_A, build_fn=fake_build(c))
    assert r1.built and builds(c) == 1
    r2 = build_engine_cached(onnx_file, cache, "fp16", prof, env=ENV_A, build_fn=fake_build(c))
    assert not r2.built and r2.reason == "cache hit" and builds(c) == 1
    # another GPU: detected and rebuilt, never used
    env_b = dict(ENV_A, gpu_name="Orin (nvgpu)", compute_capability="8.7")
    r3 = build_engine_cached(onnx_file, cache, "fp16", prof, env=env_b, build_fn=fake_build(c))
    assert r3.built and "gpu_name" in r3.reason and builds(c) == 2
    # another TensorRT version
    env_c = dict(env_b, trt_version="10.3.0")
    r4 = build_engine_cached(onnx_file, cache, "fp16", prof, env=env_c, build_fn=fake_build(c))
    assert r4.built and "trt_version" in r4.reason and builds(c) == 3
    # another precision is another engine file (both kept)
    r5 = build_engine_cached(onnx_file, cache, "fp32", prof, env=env_c, build_fn=fake_build(c))
    assert r5.built and r5.engine_path != r4.engine_path and builds(c) == 4
    assert not build_engine_cached(onnx_file, cache, "fp16", prof, env=env_c, build_fn=fake_build(c)).built
    # a changed model (new ONNX content) -> rebuilt
    enc, _ = parts()
    with torch.no_grad():
        enc.module.conv[0].bias += 1
    export_part(enc, onnx_file.parent, dynamic_batch=True)
    r6 = build_engine_cached(onnx_file, cache, "fp16", prof, env=env_c, build_fn=fake_build(c))
    assert r6.built and "model_hash" in r6.reason and builds(c) == 5


def test_engine_cache_rejects_tampered_or_unrecorded_engines(tmp_path, onnx_file):
    c = tmp_path / "count"
    cache = tmp_path / "engines"
    r = build_engine_cached(onnx_file, cache, "fp16", env=ENV_A, build_fn=fake_build(c))
    r.engine_path.write_bytes(r.engine_path.read_bytes() + b"x")  # truncated / replaced file
    r2 = build_engine_cached(onnx_file, cache, "fp16", env=ENV_A, build_fn=fake_build(c))
    assert r2.built and "size" in r2.reason
    meta = Path(str(r2.engine_path) + ".json")
    meta.unlink()  # an engine copied in from elsewhere, without its key record
    r3 = build_engine_cached(onnx_file, cache, "fp16", env=ENV_A, build_fn=fake_build(c))
    assert r3.built and "unknown origin" in r3.reason and builds(c) == 3


def test_failed_build_leaves_no_engine(tmp_path, onnx_file):
    def broken(onnx_path, out, **kw):
        Path(out).write_bytes(b"half")
        raise RuntimeError("builder crashed")

    with pytest.raises(RuntimeError, match="builder crashed"):
        build_engine_cached(onnx_file, tmp_path / "e", "fp16", env=ENV_A, build_fn=broken)
    assert not any(p.suffix in (".engine", ".tmp") for p in (tmp_path / "e").iterdir())


def _worker(onnx_file, cache, counter, start_at, q):
    while time.time() < start_at:
        time.sleep(0.005)

    def slow_build(onnx_path, out, precision, profiles, workspace_gb):
        time.sleep(0.5)
        fake_build(Path(counter))(onnx_path, out, precision, profiles, workspace_gb)

    r = build_engine_cached(onnx_file, cache, "fp16", env=ENV_A, build_fn=slow_build)
    q.put((r.built, r.reason))


def test_two_processes_never_build_at_once(tmp_path, onnx_file):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    counter = tmp_path / "count"
    start_at = time.time() + 3.0
    ps = [ctx.Process(target=_worker, args=(onnx_file, tmp_path / "e", str(counter), start_at, q)) for _ in range(2)]
    for p in ps:
        p.start()
    results = [q.get(timeout=60) for _ in ps]
    for p in ps:
        p.join(timeout=30)
    assert builds(counter) == 1, results
    assert sorted(r[0] for r in results) == [False, True]
    assert any(r[1] == "built by another process while waiting" for r in results)


def test_lock_timeout_is_a_clear_error(tmp_path, onnx_file):
    from filelock import FileLock

    cache = EngineCache(tmp_path / "e", lock_timeout_s=0.2)
    key = EngineKey("h", "gpu", "9.0", "10", "fp16")
    _, _, lockp = cache.paths("x", "fp16")
    (tmp_path / "e").mkdir()
    with FileLock(str(lockp)):
        with pytest.raises(EngineCacheError, match="another process is building"):
            cache.get_or_build("x", key, lambda p: p.write_bytes(b"e"))


def test_real_env_without_tensorrt_is_a_clear_error(onnx_file, tmp_path):
    pytest.importorskip("torch")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    with pytest.raises(EngineCacheError, match="TensorRT is not installed"):
        build_engine_cached(onnx_file, tmp_path / "e", "fp16")


def test_wvm_export_cli(tmp_path, capsys):
    from wvm_ros.cli.main import main

    assert main(["export", "--checkpoint", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["export", "--checkpoint", "untrained", "--output", str(tmp_path / "o")]) == 0
    rep = json.loads((tmp_path / "o" / "export.json").read_text())
    assert rep["ok"] and rep["model"]["preset"] == "tiny"
    for name in ("encode_frames", "predict_chunk"):
        assert rep["parts"][name]["max_abs_diff"] <= 1e-4
        assert (tmp_path / "o" / f"{name}.onnx").is_file()


def _fake_tensorrt(monkeypatch, parse_ok=True, serialized=b"PLAN", dyn=True):
    """A stand-in for the `tensorrt` module (not installable here) that records the builder
    calls, to check build_engine drives the TensorRT 10 API as intended."""
    import sys
    import types

    calls = []
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.9.0"

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Tensor:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

    class Network:
        num_inputs = 1

        def get_input(self, i):
            return Tensor("frames", (-1, 3, 16, 16) if dyn else (1, 3, 16, 16))

    class Parser:
        num_errors = 1

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls.append(("parse", path))
            return parse_ok

        def get_error(self, i):
            return "Unsupported op: Foo"

    class Profile:
        def set_shape(self, name, mn, opt, mx):
            calls.append(("profile", name, mn, opt, mx))

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls.append(("workspace", size))

        def set_flag(self, flag):
            calls.append(("flag", flag))

        def add_optimization_profile(self, p):
            calls.append(("add_profile",))

    class Builder:
        platform_has_fast_fp16 = True

        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls.append(("network", flags))
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return serialized

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, Parser
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", BF16="BF16")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return calls


def test_build_engine_drives_the_tensorrt_api(tmp_path, monkeypatch):
    from wvm_ros.core.backends.tensorrt_backend import build_engine

    calls = _fake_tensorrt(monkeypatch)
    prof = {"frames": ((1, 3, 16, 16), (1, 3, 16, 16), (4, 3, 16, 16))}
    out = build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", "fp16", prof, workspace_gb=1)
    assert out.read_bytes() == b"PLAN"
    assert ("network", 0) in calls and ("flag", "FP16") in calls and ("workspace", 1 << 30) in calls
    assert ("profile", "frames", (1, 3, 16, 16), (1, 3, 16, 16), (4, 3, 16, 16)) in calls
    with pytest.raises(ValueError, match="dynamic inputs"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m2.engine", "fp16", None)


def test_build_engine_reports_parser_and_builder_failures(tmp_path, monkeypatch):
    from wvm_ros.core.backends.tensorrt_backend import build_engine

    _fake_tensorrt(monkeypatch, parse_ok=False)
    with pytest.raises(RuntimeError, match="could not parse .*Unsupported op: Foo"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", "fp16", None)
    _fake_tensorrt(monkeypatch, serialized=None, dyn=False)
    with pytest.raises(RuntimeError, match="failed to build an engine"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", "fp32", None)
    assert not (tmp_path / "m.engine").exists()
