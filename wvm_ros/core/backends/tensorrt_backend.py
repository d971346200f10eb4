"""Native TensorRT backend: engine built from ONNX with the TensorRT Python API (fp16 or
fp32, optimisation profile for a dynamic batch), run with ``execute_async_v3`` on torch
CUDA buffers, optionally replayed as a CUDA graph (torch.cuda.CUDAGraph).

Written against TensorRT 10 (``tensorrt`` wheel / JetPack 6). Not runnable on machines
without an NVIDIA GPU: there the backend raises BackendUnavailableError at creation.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .base import BackendUnavailableError, InferenceBackend, TensorSpec, to_numpy

log = logging.getLogger(__name__)


def tensorrt_available() -> str | None:
    """None when TensorRT can run here, else the reason."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return (f"TensorRT is not installed ({exc}); install the `tensorrt` wheel from NVIDIA's "
                "index or use JetPack's python3-libnvinfer")
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    return None


def _trt_logger():
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, precision: str = "fp16",
                 profiles: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] | None = None,
                 workspace_gb: float = 4.0) -> Path:
    """Build a serialized TensorRT engine from an ONNX file.

    ``profiles``: input name -> (min, opt, max) shapes, needed for inputs with dynamic axes.
    """
    import tensorrt as trt

    logger = _trt_logger()
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt, "NetworkDefinitionCreationFlag") and int(trt.__version__.split(".")[0]) < 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision == "fp16":
        if not getattr(builder, "platform_has_fast_fp16", True):
            log.warning("this GPU has no fast fp16; building fp16 anyway")
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    dynamic = [network.get_input(i) for i in range(network.num_inputs)
               if any(d < 0 for d in network.get_input(i).shape)]
    if dynamic:
        if not profiles:
            raise ValueError(f"{onnx_path} has dynamic inputs {[t.name for t in dynamic]}: pass "
                             "profiles={name: (min, opt, max)}")
        profile = builder.create_optimization_profile()
        for t in dynamic:
            if t.name not in profiles:
                raise ValueError(f"no optimisation profile for dynamic input {t.name!r}")
            profile.set_shape(t.name, *profiles[t.name])
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    out = Path(engine_path)
    out.write_bytes(bytes(serialized))
    return out


def _torch_dtype(trt, torch, dt):
    """torch dtype of a TensorRT tensor dtype (bf16 has no numpy twin, so no trt.nptype)."""
    table = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
             "INT64": torch.int64, "INT8": torch.int8, "UINT8": torch.uint8, "BOOL": torch.bool}
    for name, tdt in table.items():
        if hasattr(trt.DataType, name) and dt == getattr(trt.DataType, name):
            return tdt
    raise BackendUnavailableError(f"tensorrt backend: unsupported tensor dtype {dt}")


class TensorRTBackend(InferenceBackend):
    name = "tensorrt"

    def __init__(self, engine_path: str | os.PathLike, part: str, inputs: Sequence[TensorSpec],
                 outputs: Sequence[str], device: str = "cuda", precision: str = "fp16",
                 cuda_graphs: bool = False):
        super().__init__(part, inputs, outputs, device if device.startswith("cuda") else "cuda", precision)
        reason = tensorrt_available()
        if reason:
            raise BackendUnavailableError(f"tensorrt backend: {reason}")
        import tensorrt as trt
        import torch

        self._trt, self._torch = trt, torch
        self._dev = torch.device(self.device)
        runtime = trt.Runtime(_trt_logger())
        engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if engine is None:
            # built by another TensorRT version or for another GPU: the caller rebuilds
            raise BackendUnavailableError(
                f"TensorRT {trt.__version__} could not deserialize {engine_path} (built for another "
                "GPU or TensorRT version?); delete it or let the engine cache rebuild it")
        self.engine = engine
        self.context = engine.create_execution_context()
        self._io = {}
        for i in range(engine.num_io_tensors):
            n = engine.get_tensor_name(i)
            self._io[n] = (engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT,
                           _torch_dtype(trt, torch, engine.get_tensor_dtype(n)))
        missing = [n for n in self.input_names + list(self.outputs) if n not in self._io]
        if missing:
            raise BackendUnavailableError(f"tensorrt backend: engine {engine_path} lacks tensors {missing}")
        self.stream = torch.cuda.Stream(device=self._dev)
        self.cuda_graphs = cuda_graphs
        self._graph = None
        self._graph_shapes: tuple | None = None
        self._static: dict[str, Any] = {}

    def _bind(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Copy inputs into device buffers (reused while shapes stay) and bind all tensors."""
        torch = self._torch
        for n in self.input_names:
            x = inputs[n]
            t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
            dtype = self._io[n][1]
            buf = self._static.get(n)
            if buf is None or tuple(buf.shape) != tuple(t.shape):
                buf = torch.empty(tuple(t.shape), dtype=dtype, device=self._dev)
                self._static[n] = buf
            buf.copy_(t.to(dtype), non_blocking=True)
            self.context.set_input_shape(n, tuple(buf.shape))
            self.context.set_tensor_address(n, buf.data_ptr())
        for n in self.outputs:
            shape = tuple(self.context.get_tensor_shape(n))
            buf = self._static.get(n)
            if buf is None or tuple(buf.shape) != shape:
                buf = torch.empty(shape, dtype=self._io[n][1], device=self._dev)
                self._static[n] = buf
            self.context.set_tensor_address(n, buf.data_ptr())
        return self._static

    def _run(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        torch = self._torch
        shapes = tuple(tuple(inputs[n].shape) for n in self.input_names)
        with torch.cuda.stream(self.stream):
            if self.cuda_graphs and self._graph is not None and shapes == self._graph_shapes:
                for n in self.input_names:  # same shapes: buffers are the captured ones
                    x = inputs[n]
                    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
                    self._static[n].copy_(t.to(self._io[n][1]), non_blocking=True)
                self._graph.replay()
            else:
                self._bind(inputs)
                if not self.context.execute_async_v3(self.stream.cuda_stream):
                    raise RuntimeError("execute_async_v3 returned False")
                if self.cuda_graphs:
                    # capture after one plain run with these shapes (TensorRT's requirement)
                    g = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(g, stream=self.stream):
                        self.context.execute_async_v3(self.stream.cuda_stream)
                    self._graph, self._graph_shapes = g, shapes
        self.stream.synchronize()
        return {n: to_numpy(self._static[n].float(), np.float32) for n in self.outputs}
