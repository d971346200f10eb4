"""TensorRT engine cache: keyed by model hash, GPU, TensorRT version and precision.

An engine is only valid for the GPU (compute capability) and TensorRT version that built
it. Isaac ROS rebuilds at every launch to be safe; here the engine sits next to a small
JSON record of its key, and is

  * reused when the record's key equals the current key (and the file is intact),
  * rebuilt when the key differs (new model, other GPU, other TensorRT, other precision,
    other shape profile) or the file is missing, truncated or corrupt, never silently used.

Building is done under a file lock (``filelock``) so that two nodes starting together
never build at once: the second waits, then finds the first one's engine valid.

The build function and the environment (GPU name, TensorRT version) are injectable,
so the logic is tested on machines without a GPU.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock, Timeout

from .base import BackendError

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


class EngineCacheError(BackendError):
    pass


@dataclass(frozen=True)
class EngineKey:
    model_hash: str          # sha256 of the ONNX file
    gpu_name: str            # e.g. "NVIDIA H100 80GB HBM3"
    compute_capability: str  # e.g. "9.0"
    trt_version: str         # tensorrt.__version__
    precision: str           # fp32 / fp16 / bf16
    profile: str = ""        # optimisation-profile description (batch range...)
    extra: dict = field(default_factory=dict, hash=False, compare=True)

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def diff(self, other: dict) -> list[str]:
        """Human-readable list of the fields where a stored key differs from this one."""
        mine = asdict(self)
        return [f"{k}: {other.get(k)!r} -> {v!r}" for k, v in mine.items() if other.get(k) != v]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def current_gpu_env(device_index: int = 0) -> dict[str, str]:
    """GPU name, compute capability and TensorRT version of this machine.
    Raises EngineCacheError when there is no CUDA device or no TensorRT."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise EngineCacheError(f"TensorRT is not installed ({exc}); engines cannot be built or used here") from exc
    import torch

    if not torch.cuda.is_available():
        raise EngineCacheError("no CUDA device: TensorRT engines need an NVIDIA GPU")
    major, minor = torch.cuda.get_device_capability(device_index)
    return {"gpu_name": torch.cuda.get_device_name(device_index),
            "compute_capability": f"{major}.{minor}", "trt_version": trt.__version__}


@dataclass
class CacheResult:
    engine_path: Path
    built: bool          # True when this call built the engine
    reason: str          # why it was (re)built, or "cache hit"
    build_s: float = 0.0
    waited_s: float = 0.0


class EngineCache:
    """Engines under ``cache_dir``: ``<name>.<precision>.engine`` + ``.engine.json``."""

    def __init__(self, cache_dir: str | os.PathLike, lock_timeout_s: float = 1800.0):
        self.dir = Path(cache_dir)
        self.lock_timeout_s = lock_timeout_s

    def paths(self, name: str, precision: str) -> tuple[Path, Path, Path]:
        eng = self.dir / f"{name}.{precision}.engine"
        return eng, eng.with_name(eng.name + ".json"), eng.with_name(eng.name + ".lock")

    @staticmethod
    def check(engine_path: Path, meta_path: Path, key: EngineKey, verify_hash: bool = True) -> str | None:
        """None when the engine is valid for ``key``; else the reason it is not."""
        if not engine_path.is_file():
            return "no engine file"
        if not meta_path.is_file():
            return f"no key record {meta_path.name} (engine of unknown origin)"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            return f"unreadable key record {meta_path.name}: {exc}"
        if meta.get("format") != CACHE_FORMAT:
            return f"cache format {meta.get('format')} != {CACHE_FORMAT}"
        diffs = key.diff(meta.get("key", {}))
        if diffs:
            return "key changed: " + "; ".join(diffs)
        size = engine_path.stat().st_size
        if size != meta.get("size"):
            return f"engine file size {size} != recorded {meta.get('size')} (truncated or replaced)"
        if verify_hash and file_sha256(engine_path) != meta.get("sha256"):
            return "engine file content does not match its recorded sha256"
        return None

    def get_or_build(self, name: str, key: EngineKey, build: Callable[[Path], Any],
                     verify_hash: bool = True) -> CacheResult:
        """Return a valid engine for ``key``, building it with ``build(tmp_path)`` if needed.
        ``build`` must write the serialized engine to the path it is given."""
        self.dir.mkdir(parents=True, exist_ok=True)
        eng, meta, lockp = self.paths(name, key.precision)
        reason = self.check(eng, meta, key, verify_hash)
        if reason is None:
            return CacheResult(eng, False, "cache hit")
        t_wait = time.monotonic()
        lock = FileLock(str(lockp), timeout=self.lock_timeout_s)
        try:
            lock.acquire()
        except Timeout as exc:
            raise EngineCacheError(
                f"waited {self.lock_timeout_s:.0f} s for {lockp} (another process is building "
                f"{eng.name}); remove the lock file if no build is running") from exc
        try:
            waited = time.monotonic() - t_wait
            reason = self.check(eng, meta, key, verify_hash)  # someone else may have built it
            if reason is None:
                return CacheResult(eng, False, "built by another process while waiting", waited_s=waited)
            log.warning("building TensorRT engine %s: %s", eng, reason)
            tmp = eng.with_name(f".{eng.name}.{os.getpid()}.tmp")
            t0 = time.monotonic()
            try:
                build(tmp)
                if not tmp.is_file() or tmp.stat().st_size == 0:
                    raise EngineCacheError(f"engine build for {name} wrote no engine to {tmp}")
                record = {"format": CACHE_FORMAT, "key": asdict(key), "size": tmp.stat().st_size,
                          "sha256": file_sha256(tmp), "built_unix": time.time(), "reason": reason}
                if meta.exists():
                    meta.unlink()  # invalidate first: a crash between the two renames leaves no record
                os.replace(tmp, eng)
                mtmp = meta.with_name(meta.name + f".{os.getpid()}.tmp")
                mtmp.write_text(json.dumps(record, indent=2))
                os.replace(mtmp, meta)
            finally:
                if tmp.exists():
                    tmp.unlink()
            return CacheResult(eng, True, reason, build_s=time.monotonic() - t0, waited_s=waited)
        finally:
            lock.release()

    def invalidate(self, name: str, precision: str) -> None:
        """Drop an engine (e.g. one that TensorRT refused to deserialize)."""
        eng, meta, _ = self.paths(name, precision)
        for p in (meta, eng):
            if p.exists():
                p.unlink()
