"""Inference backends for the WVM: torch, ONNX Runtime and native TensorRT behind one
interface (:class:`InferenceBackend`), chosen by name or ``auto``, with the fallback the
configuration allows. See docs/performance.md."""
from .base import (BackendError, BackendUnavailableError, InferenceBackend, InferenceError, PRECISIONS,
                   TensorSpec)
from .select import (BACKENDS, CHOICES, BackendOptions, Selection, availability, build_backend,
                     create_part_backend, default_cache_dir)

__all__ = ["BackendError", "BackendUnavailableError", "InferenceBackend", "InferenceError", "PRECISIONS",
           "TensorSpec", "BACKENDS", "CHOICES", "BackendOptions", "Selection", "availability",
           "build_backend", "create_part_backend", "default_cache_dir"]
