"""`wvm bench model`: cost of one value estimate, per backend, against the naive baseline.

Baseline (measured in the same run): naive per-frame full-window torch eager, i.e. for every
estimate the 1 + h frames of the window are encoded again and the chunk predicted
(:class:`NaiveValueEstimator`). Streaming: the StreamingValueEstimator, which encodes each
sampled frame once and reuses the cached latents of the overlapping windows, run on each
backend (torch, onnxruntime, tensorrt where present).

Two figures per configuration:
  * ``per_estimate``: latency of a push that produces a new estimate (every push is a
    sampled frame: stamps spaced by 1 / sample_fps). p50 / p95 / p99, throughput.
  * ``per_frame_30hz``: mean compute per camera frame of a 30 Hz stream (the streaming
    estimator only computes on sampled frames; the naive baseline computes on every frame).
``ratio`` = naive / streaming, for the best streaming backend, on both figures.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import time

import numpy as np

from . import percentiles, write_result

log = logging.getLogger(__name__)
TASK = "push the T-shaped block onto the target"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None, help="WVM checkpoint directory (default: untrained weights of --preset)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--backends", default="torch,onnxruntime,tensorrt",
                   help="comma list of backends for the streaming estimator (unavailable ones are reported and skipped)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="backends replay CUDA graphs (torch on CUDA, TensorRT); the baselines stay eager")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--duration", type=float, default=4.0, help="seconds of measurement per configuration")
    p.add_argument("--frame-size", default="480x640", help="camera frame HxW fed to the estimator")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch / onnxruntime (0 = library default; 1 avoids oversubscription on small shared CPUs)")
    p.add_argument("--cache-dir", default=None, help="ONNX / engine cache (default ~/.cache/wvm_ros)")
    p.add_argument("--target-ratio", type=float, default=3.0)
    p.add_argument("--cameras", type=int, default=3,
                   help="also time N cameras batched into one call vs one call per camera (0/1 = skip)")


def _frames(n: int, hw: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (*hw, 3), dtype=np.uint8)
    return [np.roll(base, 7 * i, axis=1) for i in range(n)]


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _measure(est, frames, dt: float, duration: float, warmup: int = 4) -> tuple[list[float], int]:
    """Push frames with stamps spaced by dt for `duration` seconds; latencies of the pushes
    (after `warmup` ones) and how many returned a new estimate."""
    lat: list[float] = []
    n_new = 0
    i = 0
    t_end = None
    last = None
    while True:
        f = frames[i % len(frames)]
        t0 = time.perf_counter()
        e = est.push(f, i * dt)
        t1 = time.perf_counter()
        if i == warmup:
            t_end = t1 + duration
        if i >= warmup:
            lat.append(t1 - t0)
            if e is not None and e is not last:
                n_new += 1
        last = e
        i += 1
        if t_end is not None and t1 >= t_end:
            break
    return lat, n_new


def _interleaved(ests: dict, frames, sample_dt: float, duration: float, device: str,
                 rounds: int = 4) -> dict[str, dict]:
    """Measure every configuration in turns (``rounds`` slices each), so that load from other
    processes on a shared machine hits all of them alike and their ratio stays meaningful."""
    import torch

    lat = {k: [] for k in ests}
    new = {k: 0 for k in ests}
    step = {k: 0 for k in ests}
    last = {k: None for k in ests}
    for k, e in ests.items():  # warm-up: fill the window, first calls
        e.reset()
        for _ in range(4):
            last[k] = e.push(frames[step[k] % len(frames)], step[k] * sample_dt)
            step[k] += 1
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(rounds):
        for k, e in ests.items():
            t_end = time.perf_counter() + duration / rounds
            while time.perf_counter() < t_end:
                t0 = time.perf_counter()
                out = e.push(frames[step[k] % len(frames)], step[k] * sample_dt)
                lat[k].append(time.perf_counter() - t0)
                if out is not None and out is not last[k]:
                    new[k] += 1
                last[k] = out
                step[k] += 1
    res = {}
    for k, e in ests.items():
        # 30 Hz stream: warm-up past the first estimates (2 sampled frames at sample_fps)
        e.reset()
        lat_frame, _ = _measure(e, frames, 1.0 / 30.0, max(1.0, duration / 4), warmup=int(30 * sample_dt * 2) + 2)
        res[k] = {"per_estimate": percentiles(lat[k]), "new_estimates": new[k],
                  "throughput_per_s": len(lat[k]) / max(sum(lat[k]), 1e-9),
                  "per_frame_30hz": percentiles(lat_frame),
                  "sustains_30hz": float(np.mean(lat_frame)) < 1 / 30.0}
    if device.startswith("cuda"):
        res["_gpu_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return res


def _multi_camera(model, frames, sample_dt, args, prefer: str = "") -> dict | None:
    """Per-step latency with N cameras: one batched call (MultiCameraEstimator) vs one call
    per camera, on the same backend model."""
    import torch

    from wvm_ros.core.backends import BackendError, BackendOptions
    from wvm_ros.core.backends.wvm import MultiCameraEstimator, create_value_backends
    from wvm_ros.core.streaming import StreamingValueEstimator

    kinds = [b.strip() for b in args.backends.split(",") if b.strip()]
    kinds = sorted(kinds, key=lambda k: k != prefer)  # the fastest single-camera backend first
    for kind in kinds:
        try:
            vm, _ = create_value_backends(model, BackendOptions(
                backend=kind, strict=True, device=args.device, precision=args.precision,
                threads=args.threads or None, cache_dir=args.cache_dir,
                              cuda_graphs=args.cuda_graphs))
            break
        except (BackendError, ValueError):
            continue
    else:
        return None
    cams = [f"cam{i}" for i in range(args.cameras)]
    n_steps = max(6, int(args.duration / 2 / sample_dt))
    with torch.inference_mode():
        multi = MultiCameraEstimator(vm, cams, TASK)
        batched = []
        try:
            for i in range(n_steps + 2):
                t0 = time.perf_counter()
                multi.push_many({c: (frames[(i + k) % len(frames)], i * sample_dt) for k, c in enumerate(cams)})
                if i >= 2:
                    batched.append(time.perf_counter() - t0)
        finally:
            multi.close()
        ests = {c: StreamingValueEstimator(vm, TASK) for c in cams}
        seq = []
        for i in range(n_steps + 2):
            t0 = time.perf_counter()
            for k, c in enumerate(cams):
                ests[c].push(frames[(i + k) % len(frames)], i * sample_dt)
            if i >= 2:
                seq.append(time.perf_counter() - t0)
    b, q = percentiles(batched), percentiles(seq)
    return {"cameras": args.cameras, "backend": vm.backend_description, "batched": b, "sequential": q,
            "speedup": q["p50_ms"] / max(b["p50_ms"], 1e-9),
            "batched_calls": vm._pred_batcher.calls, "batched_items": vm._pred_batcher.items}


def run(args: argparse.Namespace) -> int:
    import torch

    from wvm_ros.core.backends import BackendError, BackendOptions
    from wvm_ros.core.backends.wvm import NaiveValueEstimator, build_estimator
    from wvm_ros.core.model import ModelLoadError, load_value_model
    from wvm_ros.core.streaming import StreamingValueEstimator

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        hw = tuple(int(v) for v in args.frame_size.lower().split("x"))
        assert len(hw) == 2 and min(hw) > 0
    except (ValueError, AssertionError):
        print(f"wvm bench model: --frame-size must be HxW like 480x640, got {args.frame_size!r}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model = load_value_model(args.checkpoint, preset=args.preset, device=args.device)
    except ModelLoadError as exc:
        print(f"wvm bench model: {exc}", file=sys.stderr)
        return 2
    frames = _frames(16, hw)
    sample_dt = 1.0 / float(model.config.sample_fps)
    results: dict[str, dict] = {}
    skipped: dict[str, str] = {}

    print(f"[bench model] preset {model.name}, frames {hw[0]}x{hw[1]}, device {args.device}, "
          f"{args.duration:.0f} s per configuration")
    # baseline: naive per-frame full-window torch eager (fp32); then the streaming configurations
    ests = {"naive_torch_eager": NaiveValueEstimator(model, TASK),
            "streaming_torch_model": StreamingValueEstimator(model, TASK)}
    names = {"naive_torch_eager": "naive per-frame full-window torch eager fp32",
             "streaming_torch_model": "streaming, model's own torch eager path (fp32)"}
    rss = {k: _rss_mb() for k in ests}
    for kind in [b.strip() for b in args.backends.split(",") if b.strip()]:
        opts = BackendOptions(backend=kind, strict=True, device=args.device, precision=args.precision,
                              threads=args.threads or None, cache_dir=args.cache_dir,
                              cuda_graphs=args.cuda_graphs)
        r0 = _rss_mb()
        try:
            est = build_estimator(model, TASK, opts)
        except (BackendError, ValueError) as exc:
            skipped[kind] = str(exc)
            print(f"[bench model] {kind}: skipped ({exc})")
            continue
        ests[f"streaming_{kind}"] = est
        names[f"streaming_{kind}"] = f"streaming on {est.model.backend_description}"
        rss[f"streaming_{kind}"] = _rss_mb() - r0
    with torch.inference_mode():
        measured = _interleaved(ests, frames, sample_dt, args.duration, args.device)
    gpu_mb = measured.pop("_gpu_max_allocated_mb", None)
    for k, r in measured.items():
        results[k] = {"name": names[k], **r, "cpu_rss_mb": _rss_mb(),
                      "backend_extra_rss_mb": rss[k] if k.startswith("streaming_") and k != "streaming_torch_model" else 0.0}
        if gpu_mb is not None:
            results[k]["gpu_max_allocated_mb_all_configs"] = gpu_mb
    del ests
    gc.collect()

    base = results["naive_torch_eager"]
    streaming = {k: v for k, v in results.items() if k.startswith("streaming_")}
    best = min(streaming, key=lambda k: streaming[k]["per_estimate"]["p50_ms"])
    ratio = base["per_estimate"]["p50_ms"] / streaming[best]["per_estimate"]["p50_ms"]
    ratio_frame = base["per_frame_30hz"]["mean_ms"] / max(streaming[best]["per_frame_30hz"]["mean_ms"], 1e-6)
    multi = None
    if args.cameras > 1:
        multi = _multi_camera(model, frames, sample_dt, args, prefer=best.removeprefix("streaming_"))
        if multi:
            print(f"[bench model] {args.cameras} cameras on {multi['backend']}: batched step p50 "
                  f"{multi['batched']['p50_ms']:.1f} ms vs one call per camera {multi['sequential']['p50_ms']:.1f} ms "
                  f"({multi['speedup']:.2f}x)")

    eager = results["streaming_torch_model"]["per_estimate"]["p50_ms"]
    speedup_vs_eager = eager / streaming[best]["per_estimate"]["p50_ms"]
    print(f"{'configuration':<58} {'p50':>8} {'p95':>8} {'p99':>8} {'est/s':>7} {'ms/frame@30Hz':>14}")
    for k, r in results.items():
        pe = r["per_estimate"]
        print(f"{r['name'][:58]:<58} {pe['p50_ms']:8.2f} {pe['p95_ms']:8.2f} {pe['p99_ms']:8.2f} "
              f"{r['throughput_per_s']:7.1f} {r['per_frame_30hz']['mean_ms']:14.2f}")
    print(f"ratio (naive / {best}, per estimate p50): {ratio:.2f}x  (target >= {args.target_ratio:g}x: "
          f"{'met' if ratio >= args.target_ratio else 'NOT met'})")
    print(f"ratio per camera frame at 30 Hz (mean): {ratio_frame:.1f}x")
    print(f"best backend vs the model's own torch eager path (streaming, fp32): {speedup_vs_eager:.2f}x")
    out = write_result(args.output, "model", {
        "preset": model.name, "checkpoint_id": model.checkpoint_id, "device": args.device,
        "precision": args.precision, "frame_size": list(hw), "duration_s": args.duration,
        "threads": args.threads or torch.get_num_threads(), "results": results, "skipped": skipped,
        "baseline": "naive_torch_eager", "best": best, "ratio": ratio, "ratio_per_frame_30hz": ratio_frame,
        "speedup_vs_torch_eager_fp32": speedup_vs_eager,
        "target_ratio": args.target_ratio, "multi_camera": multi, "meets_target": ratio >= args.target_ratio})
    print(f"wrote {out}")
    return 0
