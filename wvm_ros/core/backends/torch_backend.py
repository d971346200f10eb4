"""torch eager backend: CPU or CUDA, fp32 / fp16 / bf16."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .base import BackendUnavailableError, InferenceBackend, TensorSpec, to_numpy

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


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
                 device: str = "cpu", precision: str = "fp32", threads: int | None = None):
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

    def _prep(self, x: Any):
        torch = self._torch
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
        if t.is_floating_point():
            t = t.to(self._dtype)
        return t.to(self.device, non_blocking=True)

    def _run(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            args = [self._prep(inputs[n]) for n in self.input_names]
            out = self.module(*args)
        if isinstance(out, torch.Tensor):
            out = (out,)
        if len(out) != len(self.outputs):
            raise RuntimeError(f"module returned {len(out)} output(s), expected {self.outputs}")
        return {n: to_numpy(o.float(), np.float32) for n, o in zip(self.outputs, out)}
