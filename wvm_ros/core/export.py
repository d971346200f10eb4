"""torch -> ONNX export with a numerical check (onnxruntime vs torch), and TensorRT engines.

The WVM is exported as two graphs, matching how the streaming estimator calls it:
``encode_frames`` (once per new frame) and ``predict_chunk`` (once per estimate). Each
graph is a :class:`ModelPart`: a torch module, named example inputs (axis 0 = batch) and
output names. ``export_part`` writes ``<dir>/<part>.onnx`` (fixed batch, or a dynamic
batch axis), ``check_onnx`` runs it with onnxruntime on the CPU against torch and reports
the max absolute difference, ``build_engine_cached`` builds the TensorRT engine through
the engine cache (keyed by model hash, GPU, TensorRT version and precision).
"""
from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .backends.base import TensorSpec, to_numpy
from .backends.engine_cache import CacheResult, EngineCache, EngineKey, current_gpu_env, file_sha256

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
FP32_ATOL = 1e-4


class ExportError(RuntimeError):
    pass


@dataclass
class ModelPart:
    """One exportable graph: ``module(*[inputs in order]) -> output or tuple of outputs``."""

    name: str
    module: Any                      # torch.nn.Module
    example_inputs: dict[str, Any]   # name -> torch.Tensor, axis 0 is the batch
    outputs: list[str]
    # other dynamic axes besides the batch: input -> {axis: (label, min, max)}, e.g. the text
    # length of T5 embeddings; always dynamic in the exported graph
    dynamic_axes: dict[str, dict[int, tuple[str, int, int]]] = field(default_factory=dict)

    def specs(self, dynamic_batch: bool = True) -> list[TensorSpec]:
        out = []
        for n, t in self.example_inputs.items():
            shape = list(int(s) for s in t.shape)
            if dynamic_batch:
                shape[0] = None
            for ax in self.dynamic_axes.get(n, {}):
                shape[ax] = None
            out.append(TensorSpec(n, tuple(shape), str(t.dtype).replace("torch.", "")))
        return out

    def batched_inputs(self, batch: int, seed: int = 0) -> dict[str, Any]:
        """Random inputs shaped like the examples with batch ``batch`` (same dtype)."""
        import torch

        g = torch.Generator().manual_seed(seed)
        out = {}
        for n, t in self.example_inputs.items():
            shape = (batch,) + tuple(t.shape[1:])
            if t.is_floating_point():
                out[n] = torch.randn(shape, generator=g, dtype=t.dtype)
            else:
                out[n] = torch.randint(0, 255, shape, generator=g, dtype=t.dtype)
        return out


@dataclass
class ExportCheck:
    part: str
    max_abs_diff: float
    per_output: dict[str, float]
    atol: float
    batch_sizes: list[int]

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.atol


def _module_device(module):
    """The device of a module's first parameter (CPU for a module without parameters)."""
    p = next(iter(module.parameters()), None)
    return p.device if p is not None else "cpu"


def export_part(part: ModelPart, out_dir: str | os.PathLike, dynamic_batch: bool = False,
                opset: int = DEFAULT_OPSET, filename: str | None = None) -> Path:
    """Export ``part`` to ``out_dir/<name>.onnx`` (TorchScript-based exporter, which needs
    no onnxscript and handles these graphs). Dynamic batch: axis 0 of every input and
    output is named ``batch``."""
    import torch

    out = Path(out_dir) / (filename or f"{part.name}.onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    names = list(part.example_inputs)
    module = part.module.eval()
    dev = _module_device(module)  # a model on CUDA exports too: inputs go where its weights are
    args = tuple(part.example_inputs[n].to(dev) for n in names)
    dyn: dict[str, dict[int, str]] = {}
    if dynamic_batch:
        dyn = {n: {0: "batch"} for n in names + list(part.outputs)}
    for n, axes in part.dynamic_axes.items():
        dyn.setdefault(n, {}).update({ax: label for ax, (label, _, _) in axes.items()})
    dyn = dyn or None
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        # nn.MultiheadAttention's inference fast path is a fused op the exporter cannot trace
        torch.backends.mha.set_fastpath_enabled(False)
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy-exporter deprecation and tracer notes
            module(*args)  # fill lazily computed caches (e.g. RoPE tables) so they trace as constants
            torch.onnx.export(module, args, str(tmp), dynamo=False, input_names=names,
                              output_names=list(part.outputs), dynamic_axes=dyn, opset_version=opset,
                              do_constant_folding=True)
        import onnx

        onnx.checker.check_model(str(tmp))
        os.replace(tmp, out)
    except Exception as exc:
        raise ExportError(f"ONNX export of {part.name} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        if tmp.exists():
            tmp.unlink()
    return out


def check_onnx(part: ModelPart, onnx_path: str | os.PathLike, atol: float = FP32_ATOL,
               batch_sizes: Sequence[int] | None = None, threads: int | None = None) -> ExportCheck:
    """Run the ONNX file with onnxruntime (CPU, fp32) and torch on the same inputs; report
    the max absolute difference over all outputs and the given batch sizes (default: the
    example batch, plus batch 3 when the graph has a dynamic batch)."""
    import onnxruntime as ort
    import torch

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"])
    first = sess.get_inputs()[0]
    dynamic = not isinstance(first.shape[0], int)
    ex_batch = int(next(iter(part.example_inputs.values())).shape[0])
    if batch_sizes is None:
        batch_sizes = [ex_batch, 3] if dynamic and ex_batch != 3 else [ex_batch]
    per_output = {n: 0.0 for n in part.outputs}
    module = part.module.eval()
    for i, b in enumerate(batch_sizes):
        inputs = part.example_inputs if b == ex_batch and i == 0 else part.batched_inputs(b, seed=i)
        with torch.inference_mode():
            ref = module(*(v.to(_module_device(module)) for v in inputs.values()))
        if isinstance(ref, torch.Tensor):
            ref = (ref,)
        got = sess.run(list(part.outputs), {n: to_numpy(v) for n, v in inputs.items()})
        for n, r, g in zip(part.outputs, ref, got):
            d = float(np.max(np.abs(to_numpy(r.float(), np.float32) - g.astype(np.float32)))) if g.size else 0.0
            per_output[n] = max(per_output[n], d)
    return ExportCheck(part.name, max(per_output.values()) if per_output else 0.0, per_output, atol,
                       list(batch_sizes))


def trt_profiles(part: ModelPart, max_batch: int, opt_batch: int = 1) -> dict[str, tuple]:
    """(min, opt, max) shapes for a dynamic batch axis: 1 .. max_batch."""
    out = {}
    for n, t in part.example_inputs.items():
        mn, opt, mx = ([int(s) for s in t.shape] for _ in range(3))
        mn[0], opt[0], mx[0] = 1, max(1, min(opt_batch, max_batch)), max_batch
        for ax, (_, lo, hi) in part.dynamic_axes.get(n, {}).items():
            mn[ax], mx[ax] = lo, hi
            opt[ax] = min(max(opt[ax], lo), hi)
        out[n] = (tuple(mn), tuple(opt), tuple(mx))
    return out


def engine_key(onnx_path: str | os.PathLike, precision: str, profile: str = "",
               env: dict[str, str] | None = None) -> EngineKey:
    """Cache key of an engine for this ONNX file on this machine (``env`` injectable)."""
    env = env if env is not None else current_gpu_env()
    return EngineKey(model_hash=file_sha256(onnx_path), gpu_name=env["gpu_name"],
                     compute_capability=env.get("compute_capability", ""),
                     trt_version=env["trt_version"], precision=precision, profile=profile)


def build_engine_cached(onnx_path: str | os.PathLike, cache_dir: str | os.PathLike, precision: str = "fp16",
                        profiles: dict[str, tuple] | None = None, workspace_gb: float = 4.0,
                        env: dict[str, str] | None = None,
                        build_fn: Callable[..., Any] | None = None) -> CacheResult:
    """TensorRT engine for ``onnx_path`` from the cache, (re)built only when the key changed.
    ``env`` and ``build_fn`` are injectable (tests); by default the real GPU and TensorRT."""
    if build_fn is None:
        from .backends.tensorrt_backend import build_engine as build_fn
    profile = json.dumps(profiles, sort_keys=True) if profiles else ""
    key = engine_key(onnx_path, precision, profile, env)
    cache = EngineCache(cache_dir)
    name = Path(onnx_path).stem
    res = cache.get_or_build(name, key, lambda tmp: build_fn(onnx_path, tmp, precision=precision,
                                                             profiles=profiles, workspace_gb=workspace_gb))
    log.info("engine %s: %s", res.engine_path, res.reason)
    return res


@dataclass
class ExportReport:
    output_dir: str
    model: dict
    parts: dict[str, dict] = field(default_factory=dict)
    engines: dict[str, dict] = field(default_factory=dict)
    ok: bool = True

    def write(self) -> Path:
        p = Path(self.output_dir) / "export.json"
        p.write_text(json.dumps(asdict(self), indent=2))
        return p


def export_parts(parts: Sequence[ModelPart], output_dir: str | os.PathLike, model_info: dict | None = None,
                 dynamic_batch: bool = False, tensorrt: bool = False, precision: str = "fp16",
                 atol: float = FP32_ATOL, max_batch: int = 8, opset: int = DEFAULT_OPSET,
                 workspace_gb: float = 4.0, progress: bool = True) -> ExportReport:
    """Export every part, check it against torch, and optionally build its TensorRT engine."""
    from tqdm import tqdm

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = ExportReport(str(out), dict(model_info or {}))
    steps = len(parts) * (3 if tensorrt else 2)
    with tqdm(total=steps, desc="export", disable=not progress, unit="step") as bar:
        for part in parts:
            t0 = time.perf_counter()
            path = export_part(part, out, dynamic_batch=dynamic_batch, opset=opset)
            bar.update()
            chk = check_onnx(part, path, atol=atol)
            bar.update()
            report.parts[part.name] = {
                "onnx": str(path), "sha256": file_sha256(path), "dynamic_batch": dynamic_batch,
                "inputs": {n: list(t.shape) for n, t in part.example_inputs.items()},
                "outputs": list(part.outputs), "opset": opset, "max_abs_diff": chk.max_abs_diff,
                "per_output_max_abs_diff": chk.per_output, "atol": atol, "check_batches": chk.batch_sizes,
                "passed": chk.passed, "export_s": round(time.perf_counter() - t0, 3)}
            report.ok &= chk.passed
            if tensorrt:
                profiles = trt_profiles(part, max_batch if dynamic_batch else 1) \
                    if dynamic_batch or part.dynamic_axes else None
                res = build_engine_cached(path, out / "engines", precision=precision, profiles=profiles,
                                          workspace_gb=workspace_gb)
                report.engines[part.name] = {"engine": str(res.engine_path), "built": res.built,
                                             "reason": res.reason, "build_s": round(res.build_s, 2)}
                bar.update()
    report.write()
    return report
