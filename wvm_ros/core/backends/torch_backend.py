"""torch eager backend: CPU or CUDA, fp32 / fp16 / bf16; on CUDA optionally replayed as CUDA graphs.

With ``cuda_graphs`` on a CUDA device each input-shape signature is captured once (after a
warm-up on a side stream) into a CUDA graph with static input / output buffers, and later
calls copy their inputs in and replay it: the CPU no longer launches the kernels one by one,
which is most of the cost of these small-batch graphs on a GPU (docs/performance.md: the
paper preset's value chunk 79 -> 30 ms p50 on an H100). Capture failures fall back to eager
calls, logged once. Ignored on the CPU."""
from __future__ import annotations

import logging
import threading
from typing import Any, Sequence

import numpy as np

from .base import BackendUnavailableError, InferenceBackend, TensorSpec, to_numpy

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
MAX_GRAPHS = 8  # input-shape signatures captured per backend; others run eagerly
log = logging.getLogger(__name__)


def torch_device_available(device: str) -> str | None:
    """None when ``device`` can run torch here, else the reason."""
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return "torch reports no CUDA device (torch.cuda.is_available() is False)"
        idx = int(device.split(":", 1)[1]) if ":" in device else 0
        if idx >= torch.cuda.device_count():
            return f"{device}: only {torch.cuda.device_count()} CUDA device(s) present"
        return None
    if device != "cpu":
        return f"unknown device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'"
    return None


class TorchBackend(InferenceBackend):
    """Runs a ``torch.nn.Module`` whose ``forward`` takes the inputs in ``inputs`` order
    and returns one tensor or a tuple in ``outputs`` order."""

    name = "torch"

    def __init__(self, module, part: str, inputs: Sequence[TensorSpec], outputs: Sequence[str],
                 device: str = "cpu", precision: str = "fp32", threads: int | None = None,
                 cuda_graphs: bool = False):
        super().__init__(part, inputs, outputs, device, precision)
        import torch

        reason = torch_device_available(device)
        if reason:
            raise BackendUnavailableError(f"torch backend on {device}: {reason}")
        if device == "cpu" and precision == "fp16":
            raise BackendUnavailableError(
                "torch backend: fp16 on the CPU is not supported (slow or missing kernels); "
                "use precision fp32 or bf16 on the CPU, fp16 on CUDA")
        if threads:
            torch.set_num_threads(int(threads))
        self._torch = torch
        self._dtype = getattr(torch, _DTYPES[precision])
        cur = next(iter(module.parameters()), None)
        if cur is not None and (cur.dtype != self._dtype or cur.device != torch.device(device)):
            # never convert the caller's model in place (it may be shared with other users)
            import copy

            module = copy.deepcopy(module)
        self.module = module.to(device=device, dtype=self._dtype).eval()
        self.cuda_graphs = bool(cuda_graphs) and device.startswith("cuda")
        self._graphs: dict[tuple, tuple] = {}  # shape signature -> (graph, static inputs, static outputs)
        self._graph_lock = threading.Lock()  # static buffers are shared: one replay at a time

    def _prep(self, x: Any):
        torch = self._torch
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
        if t.is_floating_point():
            t = t.to(self._dtype)
        return t.to(self.device, non_blocking=True)

    def _capture(self, args: list):
        """CUDA graph of self.module on static copies of args; None (and graphs off) on failure."""
        torch = self._torch
        try:
            static = [a.clone() for a in args]
            side = torch.cuda.Stream(device=static[0].device if static else None)
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up: fills lazily built tables, picks kernels
                    self.module(*static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self.module(*static)
            return graph, static, out
        except Exception as exc:  # noqa: BLE001 - fall back to eager, say so once
            log.warning("torch backend %s: CUDA graph capture failed (%s: %s); running eagerly",
                        self.part, type(exc).__name__, exc)
            self.cuda_graphs = False
            return None

    def _run(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            args = [self._prep(inputs[n]) for n in self.input_names]
            if self.cuda_graphs:
                key = tuple((tuple(a.shape), a.dtype) for a in args)
                entry = self._graphs.get(key)
                if entry is None and len(self._graphs) < MAX_GRAPHS:
                    with self._graph_lock:
                        entry = self._capture(args)
                    if entry is not None:
                        self._graphs[key] = entry
                if entry is not None:
                    graph, static, static_out = entry
                    with self._graph_lock:
                        for s_in, a in zip(static, args):
                            s_in.copy_(a)
                        graph.replay()
                        return self._outputs(static_out)  # copied to host before the next replay
            out = self.module(*args)
        return self._outputs(out)

    def _outputs(self, out) -> dict[str, np.ndarray]:
        if isinstance(out, self._torch.Tensor):
            out = (out,)
        if len(out) != len(self.outputs):
            raise RuntimeError(f"module returned {len(out)} output(s), expected {self.outputs}")
        return {n: to_numpy(o.float(), np.float32) for n, o in zip(self.outputs, out)}
