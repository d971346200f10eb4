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
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--duration", type=float, default=4.0, help="seconds of measurement per configuration")
    p.add_argument("--frame-size", default="480x640", help="camera frame HxW fed to the estimator")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch / onnxruntime (0 = library default; 1 avoids oversubscription on small shared CPUs)")
    p.add_argument("--cache-dir", default=None, help="ONNX / engine cache (default ~/.cache/wvm_ros)")
    p.add_argument("--target-ratio", type=float, default=3.0)


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


def _config_result(name, est, frames, sample_dt, duration, device) -> dict:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    rss0 = _rss_mb()
    est.reset()
    lat_est, n_new = _measure(est, frames, sample_dt, duration)
    est.reset()
    # 30 Hz stream; warm-up past the first estimates (min_frames sampled frames at sample_fps)
    lat_frame, _ = _measure(est, frames, 1.0 / 30.0, max(1.0, duration / 2), warmup=int(30 * sample_dt * 2) + 2)
    res = {"name": name, "per_estimate": percentiles(lat_est), "new_estimates": n_new,
           "throughput_per_s": len(lat_est) / max(sum(lat_est), 1e-9),
           "per_frame_30hz": percentiles(lat_frame),
           "sustains_30hz": float(np.mean(lat_frame)) < 1 / 30.0,
           "cpu_rss_mb": _rss_mb(), "cpu_rss_delta_mb": _rss_mb() - rss0}
    if device.startswith("cuda"):
        res["gpu_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return res


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
    # baseline: naive per-frame full-window torch eager (fp32)
    with torch.inference_mode():
        results["naive_torch_eager"] = _config_result(
            "naive per-frame full-window torch eager fp32", NaiveValueEstimator(model, TASK), frames, sample_dt,
            args.duration, args.device)
        results["streaming_torch_model"] = _config_result(
            "streaming, model's own torch eager path (fp32)", StreamingValueEstimator(model, TASK), frames, sample_dt,
            args.duration, args.device)
    for kind in [b.strip() for b in args.backends.split(",") if b.strip()]:
        opts = BackendOptions(backend=kind, strict=True, device=args.device, precision=args.precision,
                              threads=args.threads or None, cache_dir=args.cache_dir)
        try:
            est = build_estimator(model, TASK, opts)
        except (BackendError, ValueError) as exc:
            skipped[kind] = str(exc)
            print(f"[bench model] {kind}: skipped ({exc})")
            continue
        with torch.inference_mode():
            results[f"streaming_{kind}"] = _config_result(
                f"streaming on {est.model.backend_description}", est, frames, sample_dt, args.duration, args.device)
        del est
        gc.collect()

    base = results["naive_torch_eager"]
    streaming = {k: v for k, v in results.items() if k.startswith("streaming_")}
    best = min(streaming, key=lambda k: streaming[k]["per_estimate"]["p50_ms"])
    ratio = base["per_estimate"]["p50_ms"] / streaming[best]["per_estimate"]["p50_ms"]
    ratio_frame = base["per_frame_30hz"]["mean_ms"] / max(streaming[best]["per_frame_30hz"]["mean_ms"], 1e-6)
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
        "target_ratio": args.target_ratio, "meets_target": ratio >= args.target_ratio})
    print(f"wrote {out}")
    return 0
