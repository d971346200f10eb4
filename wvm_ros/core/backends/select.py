"""Choosing a backend by name, ``auto``, and the fallback the configuration allows.

    opts = BackendOptions(backend="onnxruntime", device="cpu", fallback=("torch",), strict=False)
    backend = create_part_backend(part, opts)

* a named backend that cannot run here -> a warning naming the reason, then the first
  fallback that can (``strict=True``: BackendUnavailableError instead, nothing else tried);
* ``auto`` -> every backend available for the device is built and timed on the part's
  example inputs; the fastest is kept and the choice is logged with the timings.

ONNX files (for onnxruntime / TensorRT) are exported on demand into
``<cache_dir>/<model_hash>/<part>.onnx`` under a file lock and checked against torch.
"""
from __future__ import annotations

import logging
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from filelock import FileLock

from .base import BackendError, BackendUnavailableError, InferenceBackend
from .ort_backend import OrtBackend, ort_available
from .tensorrt_backend import TensorRTBackend, tensorrt_available
from .torch_backend import TorchBackend, torch_device_available

if TYPE_CHECKING:
    from ..export import ModelPart

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "tensorrt")
CHOICES = ("auto",) + BACKENDS


def default_cache_dir() -> Path:
    return Path(os.environ.get("WVM_CACHE_DIR", Path.home() / ".cache" / "wvm_ros"))


@dataclass
class BackendOptions:
    backend: str = "auto"                 # auto | torch | onnxruntime | tensorrt
    device: str = "cpu"                   # cpu | cuda | cuda:N
    precision: str = "fp32"               # fp32 | fp16 | bf16
    fallback: Sequence[str] = ("onnxruntime", "torch")  # tried in order when `backend` cannot run
    strict: bool = False                  # True: no fallback, fail if `backend` cannot run
    cache_dir: str | None = None          # ONNX files and TensorRT engines; default ~/.cache/wvm_ros
    threads: int | None = None            # CPU threads for torch / onnxruntime
    cuda_graphs: bool = False             # TensorRT, and torch on CUDA: replay as CUDA graphs
    max_batch: int = 8                    # dynamic batch range of exported graphs / engines
    check_atol: float = 1e-4              # ONNX vs torch check on export (fp32); larger -> refuse
    auto_runs: int = 10                   # timing runs per candidate for `auto`

    def __post_init__(self) -> None:
        if self.backend not in CHOICES:
            raise ValueError(f"backend {self.backend!r}: expected one of {', '.join(CHOICES)}")
        if isinstance(self.fallback, str):
            self.fallback = tuple(s.strip() for s in self.fallback.split(",") if s.strip())
        bad = [f for f in self.fallback if f not in BACKENDS]
        if bad:
            raise ValueError(f"backend fallback {bad}: expected names from {', '.join(BACKENDS)}")

    @classmethod
    def from_params(cls, params: dict) -> "BackendOptions":
        """From node parameters / YAML: unknown keys are an error naming them; empty strings
        and None mean "default" (ROS parameters cannot be None)."""
        import dataclasses

        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise ValueError(f"unknown backend option(s) {unknown}; expected some of {sorted(names)}")
        kw = {k: v for k, v in params.items() if v is not None and v != ""}
        if kw.get("threads") == 0:
            kw.pop("threads")
        if "fallback" in kw and not isinstance(kw["fallback"], str):
            kw["fallback"] = tuple(kw["fallback"])
        return cls(**kw)

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()


def availability(device: str = "cpu") -> dict[str, str | None]:
    """backend name -> None when it can run on ``device`` here, else why not."""
    dev_reason = torch_device_available(device)
    out: dict[str, str | None] = {"torch": dev_reason}
    ort_reason = ort_available()
    if ort_reason is None and device.startswith("cuda"):
        import onnxruntime as ort

        if not ({"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(ort.get_available_providers())):
            ort_reason = "this onnxruntime build has no CUDA / TensorRT execution provider (install onnxruntime-gpu)"
    out["onnxruntime"] = ort_reason or dev_reason
    out["tensorrt"] = tensorrt_available() if device.startswith("cuda") else \
        "TensorRT needs device cuda (a GPU)"
    return out


def ensure_onnx(part: "ModelPart", model_hash: str, opts: BackendOptions) -> Path:
    """``<cache>/<model_hash>/<part>.onnx`` with a dynamic batch, exported once and checked."""
    from ..export import check_onnx, export_part

    d = opts.cache_path / "onnx" / model_hash
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{part.name}.onnx"
    with FileLock(str(path) + ".lock", timeout=600):
        if not path.is_file():
            export_part(part, d, dynamic_batch=True)
            chk = check_onnx(part, path, atol=opts.check_atol, threads=opts.threads)
            if not chk.passed:
                path.unlink()
                raise BackendUnavailableError(
                    f"ONNX export of {part.name} differs from torch by {chk.max_abs_diff:.3g} "
                    f"(> {opts.check_atol}); not using it")
            log.info("exported %s (max |onnx - torch| = %.2e)", path, chk.max_abs_diff)
    return path


def build_backend(kind: str, part: "ModelPart", opts: BackendOptions, model_hash: str) -> InferenceBackend:
    """Build one backend of the given kind; BackendUnavailableError when it cannot run here."""
    reason = availability(opts.device).get(kind, f"unknown backend {kind!r}")
    if reason:
        raise BackendUnavailableError(f"{kind} backend on {opts.device}: {reason}")
    specs = part.specs(dynamic_batch=True)
    if kind == "torch":
        return TorchBackend(part.module, part.name, specs, part.outputs, opts.device, opts.precision, opts.threads,
                            cuda_graphs=opts.cuda_graphs)
    from ..export import ExportError

    try:
        onnx_path = ensure_onnx(part, model_hash, opts)
    except ExportError as exc:
        raise BackendUnavailableError(f"{kind} backend: {exc}") from exc
    if kind == "onnxruntime":
        return OrtBackend(onnx_path, part.name, specs, part.outputs, opts.device, opts.precision,
                          opts.threads, trt_cache_dir=opts.cache_path / "ort_trt")
    if kind == "tensorrt":
        from ..export import build_engine_cached, trt_profiles

        precision = opts.precision
        res = build_engine_cached(onnx_path, opts.cache_path / "engines", precision=precision,
                                  profiles=trt_profiles(part, opts.max_batch))
        try:
            return TensorRTBackend(res.engine_path, part.name, specs, part.outputs, opts.device, precision,
                                   cuda_graphs=opts.cuda_graphs)
        except BackendUnavailableError:
            # the key matched but TensorRT refused the file: drop it and build once more
            from .engine_cache import EngineCache

            EngineCache(opts.cache_path / "engines").invalidate(onnx_path.stem, precision)
            res = build_engine_cached(onnx_path, opts.cache_path / "engines", precision=precision,
                                      profiles=trt_profiles(part, opts.max_batch))
            return TensorRTBackend(res.engine_path, part.name, specs, part.outputs, opts.device, precision,
                                   cuda_graphs=opts.cuda_graphs)
    raise BackendUnavailableError(f"unknown backend {kind!r}; expected one of {', '.join(BACKENDS)}")


def time_backend(backend: InferenceBackend, inputs: dict, runs: int = 10, warmup: int = 3) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        backend.run(inputs)
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        backend.run(inputs)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def candidates(device: str) -> list[str]:
    return ["tensorrt", "onnxruntime", "torch"] if device.startswith("cuda") else ["onnxruntime", "torch"]


@dataclass
class Selection:
    backend: InferenceBackend
    requested: str
    tried: dict[str, str] = field(default_factory=dict)     # name -> why it was not used
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def fell_back(self) -> bool:
        return self.requested not in ("auto", self.backend.name)


def create_part_backend(part: "ModelPart", opts: BackendOptions, model_hash: str = "model",
                        builder: Callable[[str, "ModelPart", BackendOptions, str], InferenceBackend] | None = None,
                        ) -> Selection:
    """The backend ``opts`` asks for, or the allowed fallback; see the module doc."""
    builder = builder or build_backend
    tried: dict[str, str] = {}
    if opts.backend == "auto":
        built: dict[str, InferenceBackend] = {}
        timings: dict[str, float] = {}
        for kind in candidates(opts.device):
            try:
                b = builder(kind, part, opts, model_hash)
                timings[kind] = time_backend(b, part.example_inputs, runs=opts.auto_runs) * 1e3
                built[kind] = b
            except BackendError as exc:
                tried[kind] = str(exc)
        if not built:
            raise BackendUnavailableError(
                f"auto: no backend can run {part.name} on {opts.device}: " +
                "; ".join(f"{k}: {v}" for k, v in tried.items()))
        best = min(timings, key=timings.get)
        for k, b in built.items():
            if k != best:
                b.close()
        log.info("auto backend for %s: %s (%s)", part.name, built[best].describe(),
                 ", ".join(f"{k} {v:.2f} ms" for k, v in sorted(timings.items(), key=lambda kv: kv[1])))
        return Selection(built[best], "auto", tried, timings)
    order = [opts.backend] + ([] if opts.strict else [f for f in opts.fallback if f != opts.backend])
    for kind in order:
        try:
            b = builder(kind, part, opts, model_hash)
        except BackendError as exc:
            tried[kind] = str(exc)
            if opts.strict:
                raise BackendUnavailableError(
                    f"backend {kind!r} was required (strict) but cannot run: {exc}") from exc
            log.warning("backend %s unavailable for %s: %s", kind, part.name, exc)
            continue
        if kind != opts.backend:
            log.warning("using fallback backend %s for %s (requested %s: %s)", b.describe(), part.name,
                        opts.backend, tried.get(opts.backend))
        return Selection(b, opts.backend, tried)
    raise BackendUnavailableError(
        f"backend {opts.backend!r} cannot run {part.name} and no allowed fallback could either: " +
        "; ".join(f"{k}: {v}" for k, v in tried.items()) +
        (f" (fallback list: {list(opts.fallback)})" if opts.fallback else " (no fallback configured)"))
