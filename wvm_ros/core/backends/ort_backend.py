"""ONNX Runtime backend: CPU, and the CUDA / TensorRT execution providers where present."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .base import BackendUnavailableError, InferenceBackend, TensorSpec, to_numpy

log = logging.getLogger(__name__)

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
TRT_EP = "TensorrtExecutionProvider"


def ort_available() -> str | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return f"onnxruntime is not installed ({exc})"
    return None


def providers_for(device: str, precision: str, trt_cache_dir: str | os.PathLike | None = None,
                  use_trt_ep: bool = True) -> list:
    """ORT providers for ``device``, best first, limited to the ones this build offers.
    On CUDA: TensorRT EP (fp16 if asked, engines cached on disk), then CUDA EP, then CPU."""
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    if not device.startswith("cuda"):
        return [CPU_EP]
    dev_id = int(device.split(":", 1)[1]) if ":" in device else 0
    out: list = []
    if use_trt_ep and TRT_EP in have:
        opts = {"device_id": dev_id, "trt_fp16_enable": precision == "fp16"}
        if trt_cache_dir:
            Path(trt_cache_dir).mkdir(parents=True, exist_ok=True)
            opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(trt_cache_dir))
        out.append((TRT_EP, opts))
    if CUDA_EP in have:
        out.append((CUDA_EP, {"device_id": dev_id}))
    if not out:
        raise BackendUnavailableError(
            f"onnxruntime on {device}: this onnxruntime build has no CUDA or TensorRT execution "
            f"provider (it offers {sorted(have)}); install onnxruntime-gpu or use device cpu")
    return out + [CPU_EP]


class OrtBackend(InferenceBackend):
    """Runs an ONNX file with onnxruntime. fp32 on the CPU; fp16 through the TensorRT EP."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str | os.PathLike, part: str, inputs: Sequence[TensorSpec],
                 outputs: Sequence[str], device: str = "cpu", precision: str = "fp32",
                 threads: int | None = None, trt_cache_dir: str | os.PathLike | None = None):
        super().__init__(part, inputs, outputs, device, precision)
        reason = ort_available()
        if reason:
            raise BackendUnavailableError(f"onnxruntime backend: {reason}")
        import onnxruntime as ort

        if not device.startswith("cuda") and precision != "fp32":
            raise BackendUnavailableError(
                f"onnxruntime backend: precision {precision} needs the TensorRT execution provider "
                "(device cuda); on the CPU use fp32")
        path = Path(onnx_path)
        if not path.is_file():
            raise BackendUnavailableError(f"onnxruntime backend: ONNX file {path} does not exist "
                                          "(run `wvm export` or let the backend export it)")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.intra_op_num_threads = int(threads)
        so.log_severity_level = 3
        providers = providers_for(device, precision, trt_cache_dir)
        self.session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        self.providers = self.session.get_providers()
        if device.startswith("cuda") and self.providers == [CPU_EP]:
            raise BackendUnavailableError(
                f"onnxruntime on {device}: no GPU provider could be initialised (got {self.providers})")
        names = [i.name for i in self.session.get_inputs()]
        if sorted(names) != sorted(self.input_names):
            raise BackendUnavailableError(
                f"onnxruntime backend: {path} has inputs {names}, expected {self.input_names}")
        self._out_names = [o.name for o in self.session.get_outputs()]
        log.debug("onnxruntime %s: providers %s", part, self.providers)

    def describe(self) -> str:
        ep = self.providers[0].replace("ExecutionProvider", "") if getattr(self, "providers", None) else "?"
        return f"{self.name}[{self.part}, {self.device}, {self.precision}, {ep}]"

    def _run(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        feed = {n: to_numpy(v, np.float32 if _is_float(v) else None) for n, v in inputs.items()}
        res = self.session.run(self._out_names, feed)
        by_name = dict(zip(self._out_names, res))
        return {n: np.asarray(by_name[n], dtype=np.float32) for n in self.outputs}


def _is_float(v: Any) -> bool:
    dt = getattr(v, "dtype", None)
    try:
        return np.issubdtype(np.dtype(dt), np.floating)
    except TypeError:
        return str(dt).startswith("torch.float") or str(dt).startswith("torch.bfloat") or str(dt).startswith("torch.half")
