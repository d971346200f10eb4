"""Benchmarks behind `wvm bench model|chunk|node|logger|train`.

Each kind is a module ``wvm_ros.bench.<kind>`` exposing ``add_arguments(parser)`` and
``run(args) -> int``; it writes ``<output>/bench_<kind>.json`` with its figures, the
baseline's figures measured in the same run, and their ``ratio``. Helpers shared by the
benchmarks live here.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

KINDS = ("model", "chunk", "node", "logger", "train")


def percentiles(samples_s: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / p99 / mean / max in milliseconds (empty -> NaNs)."""
    a = np.asarray(list(samples_s), dtype=np.float64) * 1e3
    if a.size == 0:
        return {k: float("nan") for k in ("p50_ms", "p95_ms", "p99_ms", "mean_ms", "max_ms")} | {"n": 0}
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()), "max_ms": float(a.max()),
            "n": int(a.size)}


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    try:
        import psutil

        info["load_avg_1m"] = os.getloadavg()[0]
        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:  # noqa: BLE001
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        import tensorrt

        info["tensorrt"] = tensorrt.__version__
    except ImportError:
        pass
    return info


def write_result(output: str | os.PathLike, kind: str, result: dict) -> Path:
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench_{kind}.json"
    result = {"kind": kind, "unix_time": time.time(), "machine": machine_info(), **result}
    path.write_text(json.dumps(result, indent=2, default=float))
    return path
