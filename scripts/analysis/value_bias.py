"""Is the live value estimate biased, where, and how much would a constant offset buy?

Runs a WVM checkpoint through `StreamingValueEstimator` (as `wvm eval` and the value node do, at
`--estimate-fps`, default 10 as theirs; 0 = the paper's 2 Hz stream, which is what this script
ran before 2026-11-27 and what the figures of docs/model.md that quote it were measured with)
over a recorded split and reports:
  * the mean error (prediction - ground truth) per tenth of the attempt, per attempt kind, and
    over the frames of the hesitations;
  * the error of the four chunk positions when the window is fed the ground-truth prefix and
    the clip as recorded (`--window-episodes` expert attempts, a window every 0.3 s): where in
    the chunk the bias is, without the live loop's feedback;
  * with `--prefix-loop`: the same live loop (a window every frame, the newest chunk position
    published) fed the ground-truth value of the prefix frame instead of the model's own
    estimate, and fed its own (newest-position) estimate: how much of the error the feedback
    of the model's own values through the prefix adds (slow: one window per frame, no cache);
  * with `--fit-dataset`: a constant offset fitted there (mean error over all frames), added
    to the published value (not to the prefix the model is fed), and the benchmark metrics on
    the split with and without it.
Analysis only (docs/model.md, "A level bias in the live estimate"); nothing else in wvm_ros
depends on it. Choose settings on validation splits, never on the held-out one.

    python scripts/analysis/value_bias.py --checkpoint models/wvm-tiny-pusht \\
        --dataset runs/data/pusht-val150 --fit-dataset runs/data/pusht-val --output runs/value-bias
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from wvm_ros.core import evaluation as E
from wvm_ros.core import metrics as M
from wvm_ros.core.model import load_value_model

KINDS = ("expert", "hesitation", "retry")


def live_predictions(model, episodes, estimate_fps: float | None = 10.0) -> list[np.ndarray]:
    """The raw live estimate of every frame (without the checkpoint's value offset, so the bias
    measured is the model's own; `wvm calibrate-value` fits the offset that removes its mean);
    `estimate_fps` as `wvm eval --estimate-fps` (10, the value node's default; None or 0: the
    paper's stream, one estimate per sampled frame)."""
    method = E.streaming_method(model, estimate_fps=estimate_fps or None, value_offset=0.0)
    return [method.predict(ep) for ep in episodes]


def scores(episodes, preds) -> dict:
    sc = [M.score_episode(p, ep.gt, ep.kind, ep.hesitation_segments) for ep, p in zip(episodes, preds)]
    agg = M.aggregate(sc)
    out = {}
    for k in M.METRIC_KEYS:  # None where no attempt of the kind the metric needs is in the split
        v = agg.overall.get(k)
        out[k] = None if v is None or not np.isfinite(v) else float(v)
    return out


def error_profile(episodes, preds, bins: int = 10) -> dict:
    """Mean error per tenth of the attempt and over all frames, per kind; hesitation frames."""
    out: dict = {}
    for kind in KINDS:
        sums, counts, allv = np.zeros(bins), np.zeros(bins), []
        for ep, p in zip(episodes, preds):
            if ep.kind != kind:
                continue
            d = p - ep.gt
            ok = np.isfinite(d)
            b = np.minimum((bins * np.arange(len(d)) / len(d)).astype(int), bins - 1)
            np.add.at(sums, b[ok], d[ok])
            np.add.at(counts, b[ok], 1)
            allv.append(d[ok])
        if allv:
            out[kind] = {"per_tenth": [float(s / c) if c else None for s, c in zip(sums, counts)],
                         "all_frames": float(np.concatenate(allv).mean()), "episodes": len(allv)}
    hes = [(p - ep.gt)[a:b + 1] for ep, p in zip(episodes, preds) for a, b in ep.hesitation_segments]
    hes = [h[np.isfinite(h)] for h in hes]
    hes = [h for h in hes if len(h)]
    if hes:
        levels = np.array([h.mean() for h in hes])
        out["hesitation_frames"] = {"mean_error": float(np.concatenate(hes).mean()),
                                    "level_sd": float(levels.std()),
                                    "within_rms": float(np.mean([np.sqrt(((h - h.mean()) ** 2).mean()) for h in hes])),
                                    "segments": len(hes)}
    return out


@torch.no_grad()
def chunk_position_errors(model, episodes, max_episodes: int = 25, every: int = 3) -> list[float]:
    """Mean error of each chunk position for windows fed the ground-truth prefix and the frames as
    recorded (expert attempts; frames 1 / sample_fps apart, a window every `every` frames)."""
    c = model.config
    eps = [e for e in episodes if e.kind == "expert"][:max_episodes]
    if not eps:
        return []
    fps = 1.0 / float(np.median(np.diff(eps[0].timestamps)))
    stride = max(1, int(round(fps / float(c.sample_fps))))
    h = int(c.h)
    text = model.embed_text(eps[0].task)
    errs: list[list[np.ndarray]] = [[] for _ in range(h)]
    for ep in eps:
        T = len(ep.gt)
        lat = model.encode_frames(ep.frames)
        ends = np.arange(h * stride, T, every)
        if not len(ends):
            continue
        idx = np.clip(ends[:, None] + np.arange(-h, 1)[None, :] * stride, 0, T - 1)
        prefix = torch.tensor(ep.gt[idx[:, 0]], dtype=torch.float32)
        elapsed = torch.tensor(ep.timestamps[ends] - ep.timestamps[0], dtype=torch.float32)
        chunk = model.predict_chunk(lat[torch.from_numpy(idx)], prefix, text, elapsed_s=elapsed).float().numpy()
        target = ep.gt[idx[:, 1:]]
        for k in range(h):
            errs[k].append(chunk[:, k] - target[:, k])
    return [float(np.concatenate(e).mean()) for e in errs]


@torch.no_grad()
def prefix_loop_predictions(model, ep, prefix: str) -> np.ndarray:
    """Newest-position estimate at every frame of `ep`, each window fed the prefix value
    `prefix`: "gt" (the ground truth at the prefix frame; the first frame's before the start) or
    "own" (this loop's own estimate of the prefix frame; 0 before the start, as the streaming
    estimator does). Frames 1 / sample_fps apart, clamped to the attempt."""
    if prefix not in ("gt", "own"):
        raise ValueError(f"prefix must be 'gt' or 'own', got {prefix!r}")
    c = model.config
    h = int(c.h)
    T = len(ep.gt)
    fps = 1.0 / float(np.median(np.diff(ep.timestamps))) if T > 1 else float(c.sample_fps)
    stride = max(1, int(round(fps / float(c.sample_fps))))
    lat = model.encode_frames(ep.frames)
    text = model.embed_text(ep.task)
    out = np.zeros(T)
    for t in range(T):
        idx = np.clip(t + np.arange(-h, 1) * stride, 0, T - 1)
        pi = t - h * stride
        if prefix == "gt":
            p = float(ep.gt[max(pi, 0)])
        else:
            p = float(out[pi]) if pi >= 0 else 0.0
        elapsed = torch.tensor([ep.timestamps[t] - ep.timestamps[0]], dtype=torch.float32)
        chunk = model.predict_chunk(lat[torch.from_numpy(idx)][None], torch.tensor([p]), text, elapsed_s=elapsed)
        out[t] = float(chunk[0, -1])
    return out


def prefix_loop_report(model, episodes) -> dict:
    """Benchmark metrics and mean errors of the loop fed the ground-truth prefix vs its own."""
    rep = {}
    for prefix in ("gt", "own"):
        preds = [prefix_loop_predictions(model, ep, prefix) for ep in episodes]
        hes = [(p - ep.gt)[a:b + 1] for ep, p in zip(episodes, preds) for a, b in ep.hesitation_segments]
        rep[f"{prefix}_prefix"] = {
            "metrics": scores(episodes, preds),
            "mean_error_all_frames": float(np.concatenate([p - ep.gt for ep, p in zip(episodes, preds)]).mean()),
            "mean_error_hesitation_frames": float(np.concatenate(hes).mean()) if hes else None}
    return rep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--dataset", required=True, help="split to measure (a validation split)")
    ap.add_argument("--fit-dataset", help="split to fit the constant offset on (another validation split)")
    ap.add_argument("--output", required=True, help="folder for value_bias.json")
    ap.add_argument("--max-episodes", type=int, default=None)
    ap.add_argument("--window-episodes", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--estimate-fps", type=float, default=10.0,
                    help="live estimates per second, as wvm eval (default 10; 0: one per 2 Hz sample)")
    ap.add_argument("--prefix-loop", action="store_true",
                    help="also run the loop fed the ground-truth prefix vs its own (one window per frame; slow)")
    ap.add_argument("--prefix-loop-kinds", default="hesitation",
                    help="comma-separated attempt kinds the --prefix-loop runs on (default: hesitation)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_value_model(args.checkpoint)
    episodes = E.load_lerobot_episodes(args.dataset, max_episodes=args.max_episodes, progress=False)
    if args.estimate_fps < 0:
        ap.error(f"--estimate-fps: expected >= 0, got {args.estimate_fps:g}")
    preds = live_predictions(model, episodes, args.estimate_fps)
    report = {"checkpoint": str(args.checkpoint), "checkpoint_id": getattr(model, "checkpoint_id", "?"),
              "dataset": str(args.dataset), "episodes": len(episodes), "estimate_fps": args.estimate_fps,
              "metrics": scores(episodes, preds), "error_profile": error_profile(episodes, preds),
              "chunk_position_errors_gt_prefix": chunk_position_errors(model, episodes, args.window_episodes)}
    if args.prefix_loop:
        kinds = {k.strip() for k in args.prefix_loop_kinds.split(",") if k.strip()}
        chosen = [ep for ep in episodes if ep.kind in kinds]
        if not chosen:
            ap.error(f"--prefix-loop-kinds {args.prefix_loop_kinds!r}: no such attempts in {args.dataset}")
        report["prefix_loop"] = {"kinds": sorted(kinds), "episodes": len(chosen), **prefix_loop_report(model, chosen)}
    if args.fit_dataset:
        fit_eps = E.load_lerobot_episodes(args.fit_dataset, max_episodes=args.max_episodes, progress=False)
        d = np.concatenate([p - ep.gt for ep, p in zip(fit_eps, live_predictions(model, fit_eps, args.estimate_fps))])
        offset = float(-d[np.isfinite(d)].mean())
        shifted = [np.clip(p + offset, 0.0, 1.0) for p in preds]
        report["offset"] = {"fit_dataset": str(args.fit_dataset), "offset": offset,
                            "metrics_with_offset": scores(episodes, shifted)}
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "value_bias.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("metrics", "chunk_position_errors_gt_prefix")}, indent=None))
    for kind, v in report["error_profile"].items():
        print(kind, json.dumps(v))
    if "prefix_loop" in report:
        print("prefix_loop", json.dumps(report["prefix_loop"]))
    if "offset" in report:
        print("offset", json.dumps(report["offset"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
