"""`wvm bench train`: training steps per second of a preset, against the previous training step.

What one `wvm train` step costs once a batch is drawn: the frame encoder over the clips'
frames, the joint forward of both streams, both flow-matching losses, the backward pass,
gradient clipping and the AdamW update. Weights are random and the clips are random frames of
the model's input size (the cost does not depend on either); drawing clips from the data
(`ClipSampler`, a few percent of a step with the frame cache in memory) is not part of it.

Configurations, measured in the same run from the same weights on the same batches, in
alternating rounds so that a change in the machine's load hits both:
  * baseline ``future_frames_in_graph``: all 1 + 2h frames of a clip encoded inside the
    autograd graph, the h future latents detached there (`training_loss(...,
    future_encoder_grad=True)`, how `wvm train` did it before 2026-11-27);
  * ``future_frames_no_grad``: the future frames (the video loss's targets) encoded without
    autograd, the way `wvm train` does it.
``ratio`` = the baseline's median step time / ``future_frames_no_grad``'s. Both must compute
the same thing: the losses of one batch from the same weights and noise, and every parameter's
gradient, are compared and reported (``same_loss_and_gradients``; the run fails without it).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

from . import percentiles, write_result

# the shipped checkpoint's settings on top of the preset (models/wvm-tiny-pusht/config.json)
SHIPPED_OVERRIDES = {"image_size": [96, 96], "elapsed_input": True}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", help="tiny | small (default tiny; paper needs a GPU cluster)")
    p.add_argument("--model-set", action="append", default=None, metavar="KEY=VALUE",
                   help="override a model config field (JSON value), as `wvm train --model-set`; "
                        "default: the shipped model's image_size=[96,96] elapsed_input=true")
    p.add_argument("--batch-size", type=int, default=32, help="clips per step (default 32, the shipped recipe)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per configuration and round (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of both configurations (default 3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per configuration first (default 2)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's; `wvm train --threads`)")
    p.add_argument("--lambda-video", type=float, default=1.0, help="video loss weight (default 1.0)")


def _overrides(items: list[str] | None) -> dict:
    from wvm_ros.core.model.config import parse_overrides

    return dict(SHIPPED_OVERRIDES) if items is None else parse_overrides(items)


def run(args: argparse.Namespace) -> int:
    import torch

    from wvm_ros.core.model import build_model, preset_config

    if args.batch_size < 1 or args.steps < 1 or args.rounds < 1 or args.warmup < 0:
        print("wvm bench train: --batch-size, --steps and --rounds must be >= 1, --warmup >= 0", file=sys.stderr)
        return 2
    if args.lambda_video <= 0:
        print("wvm bench train: --lambda-video must be > 0 (with 0 there are no future frames to encode)",
              file=sys.stderr)
        return 2
    try:
        cfg = preset_config(args.preset, **_overrides(args.model_set))
    except (KeyError, ValueError, TypeError) as exc:
        print(f"wvm bench train: {exc}", file=sys.stderr)
        return 2
    if cfg.frame_encoder != "conv":
        print(f"wvm bench train: preset {cfg.name!r} encodes frames with the frozen {cfg.frame_encoder!r}; "
              "this benchmark is for the presets whose conv frame encoder is trained (tiny, small)", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(int(args.threads))
    torch.manual_seed(0)
    base = build_model(cfg, "cpu").train()
    b, h = args.batch_size, cfg.h
    n_params = sum(p.numel() for p in base.parameters())
    gen = torch.Generator().manual_seed(1)

    def batch():
        frames = torch.randint(0, 256, (b, cfg.clip_frames, 3, *cfg.image_size), dtype=torch.uint8, generator=gen)
        return (frames.float() / 127.5 - 1.0, torch.rand(b, generator=gen), torch.rand(b, h, generator=gen),
                torch.randn(b, 1, cfg.text_dim, generator=gen) * 0.1,
                torch.rand(b, generator=gen) * 30.0 if cfg.elapsed_input else None)

    configs = {"future_frames_in_graph": True, "future_frames_no_grad": False}
    labels = {"future_frames_in_graph": "all 1 + 2h frames encoded in the graph, future detached (baseline)",
              "future_frames_no_grad": "future frames encoded without autograd (wvm train)"}
    models = {k: copy.deepcopy(base) for k in configs}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95)) for k, m in models.items()}

    def step(key, data, update=True):
        m = models[key]
        frames, prefix, values, text, elapsed = data
        out = m.training_loss(frames, prefix, values, text, lambda_video=args.lambda_video, elapsed_s=elapsed,
                              future_encoder_grad=configs[key])
        opts[key].zero_grad(set_to_none=True)
        out["loss"].backward()
        if update:
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opts[key].step()
        return out

    # the same thing computed: one batch, the same weights (before any update) and noise
    data = batch()
    grads, losses = {}, {}
    for key in configs:
        torch.manual_seed(7)
        out = step(key, data, update=False)
        losses[key] = {k: float(v.detach()) for k, v in out.items()}
        grads[key] = {n: p.grad.detach().clone() for n, p in models[key].named_parameters() if p.grad is not None}
    ref, new = "future_frames_in_graph", "future_frames_no_grad"
    loss_diff = max(abs(losses[ref][k] - losses[new][k]) for k in losses[ref])
    grad_diff = max(float((grads[ref][n] - grads[new][n]).abs().max()) for n in grads[ref])
    grad_scale = max(float(g.abs().max()) for g in grads[ref].values())
    same = (set(grads[ref]) == set(grads[new]) and loss_diff <= 1e-5 * max(1.0, abs(losses[ref]["loss"]))
            and grad_diff <= 1e-4 * max(grad_scale, 1e-6))
    print(f"[bench train] preset {cfg.name}, image {tuple(cfg.image_size)}, {n_params:,} parameters, batch {b}, "
          f"{torch.get_num_threads()} threads; loss difference {loss_diff:.2e}, largest gradient difference "
          f"{grad_diff:.2e} (largest gradient {grad_scale:.2e}): {'same' if same else 'DIFFERENT'}")

    samples: dict[str, list[float]] = {k: [] for k in configs}
    for key in configs:
        for _ in range(args.warmup):
            step(key, batch())
    for r in range(args.rounds):
        for key in (configs if r % 2 == 0 else reversed(list(configs))):
            for _ in range(args.steps):
                d = batch()
                t0 = time.perf_counter()
                step(key, d)
                samples[key].append(time.perf_counter() - t0)
    results = {}
    for key, s in samples.items():
        med = statistics.median(s)
        results[key] = {"name": labels[key], "step": percentiles(s), "steps_per_s": 1.0 / med,
                        "clips_per_s": b / med}
        print(f"[bench train] {labels[key]:<70} median {med * 1e3:7.1f} ms/step  {1.0 / med:5.2f} steps/s")
    ratio = statistics.median(samples[ref]) / statistics.median(samples[new])
    print(f"ratio (baseline / wvm train, median step time): {ratio:.2f}x")
    out_path = write_result(args.output, "train", {
        "preset": cfg.name, "image_size": list(cfg.image_size), "elapsed_input": cfg.elapsed_input,
        "parameters": n_params, "batch_size": b, "threads": torch.get_num_threads(), "steps": args.steps,
        "rounds": args.rounds, "warmup": args.warmup, "lambda_video": args.lambda_video, "results": results,
        "baseline": ref, "ratio": ratio, "loss_max_abs_diff": loss_diff, "grad_max_abs_diff": grad_diff,
        "grad_max_abs": grad_scale, "same_loss_and_gradients": same})
    print(f"wrote {out_path}")
    if not same:
        print("wvm bench train: the two ways gave different losses or gradients", file=sys.stderr)
        return 1
    return 0
