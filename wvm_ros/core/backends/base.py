"""The one interface every inference backend implements, and its errors.

A backend runs ONE exported part of the model (for the WVM: ``encode_frames`` or
``predict_chunk``) on named inputs and returns named float32 numpy outputs:

    backend.run({"frames": x}) -> {"latents": y}

Everything a node needs to catch is a :class:`BackendError`:
  * :class:`BackendUnavailableError`: the backend cannot be created on this machine
    (library missing, no GPU, ...); raised at start-up, before any frame is seen.
  * :class:`InferenceError`: a call failed (bad input shape, CUDA error, ORT error...).
    The node catches it, keeps running, reports diagnostics ERROR and publishes
    Progress with valid = false.
"""
from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

PRECISIONS = ("fp32", "fp16", "bf16")


class BackendError(RuntimeError):
    """Base of every error raised by an inference backend."""


class BackendUnavailableError(BackendError):
    """The requested backend cannot run here; the message says why and what to do."""


class InferenceError(BackendError):
    """One inference call failed; the message names the backend, the part and the inputs."""


@dataclass
class TensorSpec:
    """Name, shape (None = dynamic axis) and dtype of one input or output."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"

    def check(self, value: Any, part: str) -> None:
        shape = tuple(getattr(value, "shape", ()))
        if len(shape) != len(self.shape):
            raise InferenceError(
                f"{part}: input {self.name!r} has shape {shape}, expected rank {len(self.shape)} "
                f"(shape {_fmt_shape(self.shape)})")
        for got, want in zip(shape, self.shape):
            if want is not None and got != want:
                raise InferenceError(
                    f"{part}: input {self.name!r} has shape {shape}, expected {_fmt_shape(self.shape)}")


def _fmt_shape(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"


@dataclass
class BackendStats:
    calls: int = 0
    errors: int = 0
    total_s: float = 0.0
    last_s: float = 0.0
    last_error: str = ""


class InferenceBackend(abc.ABC):
    """Runs one model part. Subclasses implement :meth:`_run`; :meth:`run` adds input
    checks, timing and error wrapping so that every failure is an :class:`InferenceError`."""

    #: short name: "torch", "onnxruntime" or "tensorrt"
    name: str = "?"

    def __init__(self, part: str, inputs: Sequence[TensorSpec], outputs: Sequence[str],
                 device: str, precision: str):
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        self.part = part
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.device = device
        self.precision = precision
        self.stats = BackendStats()

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    def describe(self) -> str:
        return f"{self.name}[{self.part}, {self.device}, {self.precision}]"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise InferenceError(
                f"{self.describe()}: missing input(s) {missing}; expected {self.input_names}")
        for spec in self.inputs:
            spec.check(inputs[spec.name], self.describe())
        t0 = time.perf_counter()
        try:
            out = self._run({n: inputs[n] for n in self.input_names})
        except InferenceError:
            self.stats.errors += 1
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes an InferenceError
            self.stats.errors += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            shapes = {n: tuple(getattr(inputs[n], "shape", ())) for n in self.input_names}
            raise InferenceError(
                f"{self.describe()} failed on inputs {shapes}: {type(exc).__name__}: {exc}") from exc
        dt = time.perf_counter() - t0
        self.stats.calls += 1
        self.stats.total_s += dt
        self.stats.last_s = dt
        return out

    @abc.abstractmethod
    def _run(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Run on already-checked inputs; return float32 numpy arrays by output name."""

    def close(self) -> None:  # pragma: no cover - default: nothing to free
        pass


def to_numpy(x: Any, dtype: np.dtype | None = None) -> np.ndarray:
    """numpy view/copy of a numpy array or torch tensor (any device)."""
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            import torch

            if isinstance(x, torch.Tensor):
                t = x.detach()
                if t.dtype == torch.bfloat16:
                    t = t.float()
                arr = t.cpu().numpy()
            else:
                arr = np.asarray(x)
        except ImportError:  # pragma: no cover
            arr = np.asarray(x)
    if dtype is not None and arr.dtype != dtype:
        arr = arr.astype(dtype)
    return np.ascontiguousarray(arr)


@dataclass
class Timing:
    """Median seconds of a short timing run (used by ``auto``)."""

    name: str
    median_s: float
    samples: list[float] = field(default_factory=list)
