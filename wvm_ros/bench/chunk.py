"""`wvm bench chunk`: latency of one value chunk (`predict_chunk`) of a preset, on its device.

What the value node computes for every estimate once the frame latents are cached: the video
stream over the window's 1 + h frame latents, its per-layer K/V cached
(`MoT.prefill_video_cache`), then the value stream against the cache and one Euler step
(FastWAM's video-KV-cache path, `WorldValueModel.predict_chunk`). Frame encoding (the conv
encoder or the Wan2.2 VAE, once per new frame) and the instruction embedding (once per task)
are not part of it.

Weights are random (latency does not depend on their values), built directly on the device so
that the `paper` preset (5.8B parameters) needs no host copy; inputs are random latents of the
preset's latent shape and a random instruction context of `--text-len` tokens.

Configurations, measured in the same run on the same device and inputs:
  * baseline ``chunk_eager_fp32``: `predict_chunk` in torch eager fp32;
  * ``chunk_<precision>``: `predict_chunk` with the weights in --precision (default bf16);
  * ``joint_<precision>``: the same step as one joint forward of both streams, no cache
    (`joint_forward`), to show what the cache path costs or saves;
  * ``chunk_<precision>_cuda_graph`` (CUDA, unless --no-cuda-graph): `predict_chunk` captured
    once in a CUDA graph (static inputs) and replayed: what is left when the CPU no longer
    launches the kernels one by one.
``ratio`` = baseline p50 / ``chunk_<precision>`` p50. ``meets_target``: ``chunk_<precision>``
p99 <= --target-ms (issue 6: the paper preset within 100 ms on an H100).
"""
from __future__ import annotations

import argparse
import gc
import sys
import time

from . import percentiles, write_result

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="paper", help="tiny | small | paper (default paper)")
    p.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu")
    p.add_argument("--precision", default="bf16", choices=sorted(_DTYPES), help="precision under test (default bf16)")
    p.add_argument("--iters", type=int, default=30, help="timed chunks per configuration")
    p.add_argument("--warmup", type=int, default=5, help="untimed chunks before each configuration")
    p.add_argument("--batch", type=int, default=1, help="windows per call (cameras batched into one call)")
    p.add_argument("--text-len", type=int, default=32, help="instruction context tokens (T5: one per token)")
    p.add_argument("--target-ms", type=float, default=100.0, help="p99 target for chunk_<precision>")
    p.add_argument("--no-baseline", action="store_true", help="skip the fp32 baseline (when fp32 does not fit)")
    p.add_argument("--no-cuda-graph", action="store_true", help="skip the CUDA-graph configuration")


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn, iters: int, warmup: int, device: str) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def _free_memory(device: str) -> float | None:
    """Free bytes on the device (CUDA: the driver's figure; CPU: available RAM), None if unknown."""
    import torch

    try:
        if device.startswith("cuda"):
            return float(torch.cuda.mem_get_info(torch.device(device))[0])
        import psutil

        return float(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - unknown: let the build try
        return None


def _cuda_graph(fn):
    """Capture fn() (static inputs) in a CUDA graph after warming it up on a side stream
    (fills the model's lazily built RoPE / mask tables); returns the replay."""
    import torch

    with torch.inference_mode():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
    return graph.replay


def run(args: argparse.Namespace) -> int:
    import torch

    from wvm_ros.core.model.config import preset_config
    from wvm_ros.core.model.wvm import WorldValueModel

    if args.iters < 1 or args.warmup < 0 or args.batch < 1 or args.text_len < 1:
        print("wvm bench chunk: --iters, --batch and --text-len must be >= 1, --warmup >= 0", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"wvm bench chunk: --device {args.device} but torch sees no CUDA device "
              f"(torch {torch.__version__}); use --device cpu", file=sys.stderr)
        return 2
    if args.device == "cpu" and args.precision == "fp16":
        print("wvm bench chunk: fp16 on the CPU is not supported; use fp32 or bf16", file=sys.stderr)
        return 2
    try:
        cfg = preset_config(args.preset)
    except (KeyError, ValueError) as exc:
        print(f"wvm bench chunk: {exc}", file=sys.stderr)
        return 2
    dev = torch.device(args.device)
    with torch.device("meta"):
        n_meta = sum(p.numel() for p in WorldValueModel(cfg).parameters())
    # fp32 weights while building (+ the --precision copy while converting) + 25 % for activations
    need = n_meta * 4 * (1.0 if args.precision == "fp32" else 1.5) * 1.25
    have = _free_memory(args.device)
    if have is not None and need > have:
        print(f"wvm bench chunk: preset {cfg.name!r} ({n_meta / 1e9:.2f}B parameters) needs about "
              f"{need / 2**30:.1f} GiB on {args.device}, {have / 2**30:.1f} GiB free; use a device with more "
              "memory (the paper preset: a GPU with >= 40 GiB)", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(dev):
        model = WorldValueModel(cfg).eval()
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    b = args.batch
    latents = torch.randn(b, cfg.window_frames, *cfg.latent_shape, device=dev)
    prefix = torch.full((b,), 0.3, device=dev)
    text = torch.randn(1, args.text_len, cfg.text_dim, device=dev) * 0.1
    print(f"[bench chunk] preset {cfg.name}: {n_params / 1e9:.3f}B parameters built on {args.device} in "
          f"{build_s:.1f} s; window {cfg.window_frames} x {tuple(cfg.latent_shape)} latents "
          f"({cfg.window_frames * cfg.tokens_per_frame} video tokens), batch {b}, text {args.text_len} tokens")

    results: dict[str, dict] = {}

    def chunk(dtype):
        lt, tx, pv = latents.to(dtype), text.to(dtype), prefix.to(dtype)
        return lambda: model.predict_chunk(lt, pv, tx)

    def joint(dtype):
        c = cfg
        lt = latents.to(dtype).permute(0, 2, 1, 3, 4)
        sig = lt.new_zeros(b, c.window_frames)
        y = torch.cat([(2 * prefix.to(dtype) - 1).unsqueeze(1), lt.new_zeros(b, c.h)], dim=1)
        tok_sigma = torch.cat([lt.new_zeros(b, 1), lt.new_ones(b, c.h)], dim=1)
        tx = text.to(dtype)
        return lambda: model.joint_forward(lt, sig, c.window_frames, y, tok_sigma, tx)

    def measure(name: str, fn, label: str):
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():
            samples = _time(fn, args.iters, args.warmup, args.device)
        r = {"name": label, "latency": percentiles(samples), "chunks_per_s": len(samples) / sum(samples)}
        if args.device.startswith("cuda"):
            r["gpu_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        results[name] = r
        lat = r["latency"]
        print(f"[bench chunk] {label:<58} p50 {lat['p50_ms']:8.2f} ms  p95 {lat['p95_ms']:8.2f}  "
              f"p99 {lat['p99_ms']:8.2f}")

    if not args.no_baseline:
        measure("chunk_eager_fp32", chunk(torch.float32), "predict_chunk, torch eager fp32 (baseline)")
    dtype = getattr(torch, _DTYPES[args.precision])
    if dtype != torch.float32:
        model = model.to(dtype)
        gc.collect()
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    key = f"chunk_{args.precision}"
    measure(key, chunk(dtype), f"predict_chunk (video KV cache + 1 Euler step), {args.precision}")
    measure(f"joint_{args.precision}", joint(dtype), f"joint forward of both streams, no cache, {args.precision}")
    skipped = {}
    if args.device.startswith("cuda") and not args.no_cuda_graph:
        try:
            replay = _cuda_graph(chunk(dtype))
        except Exception as exc:  # noqa: BLE001 - report, keep the other figures
            skipped[f"{key}_cuda_graph"] = f"{type(exc).__name__}: {exc}"
            print(f"[bench chunk] CUDA graph capture failed: {skipped[f'{key}_cuda_graph']}")
        else:
            measure(f"{key}_cuda_graph", replay, f"predict_chunk in a CUDA graph (replay), {args.precision}")

    with torch.inference_mode():
        v = model.predict_chunk(latents.to(dtype), prefix.to(dtype), text.to(dtype))
    finite = bool(torch.isfinite(v.float()).all())
    p99 = results[key]["latency"]["p99_ms"]
    ratio = (results["chunk_eager_fp32"]["latency"]["p50_ms"] / results[key]["latency"]["p50_ms"]
             if "chunk_eager_fp32" in results else None)
    meets = p99 <= args.target_ms
    if ratio is not None:
        print(f"ratio (fp32 eager / {args.precision}, p50): {ratio:.2f}x")
    print(f"{key} p99 {p99:.1f} ms (target <= {args.target_ms:g} ms: {'met' if meets else 'NOT met'}); "
          f"outputs finite: {finite}")
    gpu = {}
    if args.device.startswith("cuda"):
        i = dev.index or 0
        props = torch.cuda.get_device_properties(i)
        gpu = {"name": torch.cuda.get_device_name(i), "memory_gb": round(props.total_memory / 2**30, 1),
               "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda}
    out = write_result(args.output, "chunk", {
        "preset": cfg.name, "parameters": n_params, "device": args.device, "gpu": gpu,
        "precision": args.precision, "batch": b, "text_len": args.text_len,
        "video_tokens": cfg.window_frames * cfg.tokens_per_frame, "build_s": build_s,
        "iters": args.iters, "warmup": args.warmup, "results": results,
        "baseline": None if args.no_baseline else "chunk_eager_fp32", "ratio": ratio,
        "target_ms": args.target_ms, "meets_target": meets, "outputs_finite": finite, "skipped": skipped})
    print(f"wrote {out}")
    return 0
