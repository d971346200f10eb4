"""`wvm eval`: the value benchmark (Expert-VOC, Retry-VOC, Hesitation-RMSE) vs baselines.

    wvm eval --checkpoint models/wvm-tiny-pusht --output out/eval
    wvm eval --checkpoint CK --output DIR --dataset ROOT \\
             --baseline-checkpoint models/single-frame-pusht --no-video-checkpoint models/wvm-tiny-pusht-novideo
    # train the single-frame baseline on the WVM's training data first, then evaluate:
    wvm eval --train-baseline --train-dataset runs/data/pusht-train --train-dataset runs/data/pusht-train2 \\
             --baseline-checkpoint runs/single-frame-pusht --checkpoint models/wvm-tiny-pusht --output out/eval

With no --dataset it evaluates the shipped held-out simulated split (data/pusht-heldout).
The blind clock is always reported beside the model. See docs/evaluation.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HELP = "value benchmark: Expert-VOC, Retry-VOC, Hesitation-RMSE vs baselines"

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATASET = REPO_ROOT / "data" / "pusht-heldout"
DEFAULT_BASELINE = REPO_ROOT / "models" / "single-frame-pusht"
DEFAULT_NO_VIDEO = REPO_ROOT / "models" / "wvm-tiny-pusht-novideo"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="WVM checkpoint (folder) to evaluate")
    p.add_argument("--output", required=True, help="folder for metrics.json, metrics.md and plots/")
    p.add_argument("--dataset", help=f"local LeRobot dataset root (default: the shipped held-out split {DEFAULT_DATASET})")
    p.add_argument("--baseline-checkpoint", help=f"single-frame regressor checkpoint (default {DEFAULT_BASELINE} if present)")
    p.add_argument("--no-video-checkpoint", help=f"WVM trained with lambda=0 (default {DEFAULT_NO_VIDEO} if present)")
    p.add_argument("--no-baselines", action="store_true", help="only the model and the blind clock")
    p.add_argument("--no-offline", action="store_true",
                   help="leave out the model's offline (overlap-averaged, non-causal) scores")
    p.add_argument("--estimate-fps", type=float, default=10.0,
                   help="WVM estimates per second: a multiple of the model's sample_fps; every frame taken at this "
                        "rate gets its own estimate from a window at sample_fps spacing (default 10, the value "
                        "node's default; 0: one estimate per sampled frame, the paper's stream)")
    p.add_argument("--no-calibration", action="store_true",
                   help="score the WVMs' raw estimates, without their checkpoints' value offsets "
                        "(`wvm calibrate-value`; by default each WVM is scored as the value node publishes it)")
    p.add_argument("--preset", default=None, help="WVM preset the checkpoints were trained with (default: from the checkpoint)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: batch-1 streaming gains nothing from more, and on a "
                        "shared CPU extra threads made it 15x slower here)")
    p.add_argument("--workers", type=int, default=0,
                   help="processes the episodes are shared out over, each with one torch thread; the scores "
                        "do not depend on it (default 0: one per CPU core this process may use; 1 with --threads "
                        "above 1 or --device other than cpu)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="attempts whose WVM estimates are computed together, one batched model call per "
                        "step (each attempt keeps its own estimator; the scores equal one-by-one ones up to "
                        "float rounding; 1: one by one; default 16, wvm_ros.core.evaluation.EVAL_BATCH)")
    p.add_argument("--camera-key", default=None, help="dataset image/video feature (default: the only or first camera)")
    p.add_argument("--gt-key", default="progress", help="per-frame ground-truth progress column (default: progress)")
    p.add_argument("--max-episodes", type=int, default=None, help="evaluate only the first N episodes")
    p.add_argument("--plots-per-kind", type=int, default=2, help="episode plots per kind (expert / hesitation / retry)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("training the single-frame baseline (before evaluating)")
    g.add_argument("--train-baseline", action="store_true",
                   help="train the single-frame regressor on --train-dataset and save it to --baseline-checkpoint")
    g.add_argument("--train-dataset", action="append", metavar="ROOT",
                   help="LeRobot dataset root the WVM was trained on (repeatable)")
    g.add_argument("--baseline-target", choices=["progress", "time"], default="progress",
                   help="progress: the dataset's --gt-key column when present, as the WVM trainer does "
                        "(default); time: t / (T - 1)")
    g.add_argument("--baseline-steps", type=int, default=2000)
    g.add_argument("--baseline-batch-size", type=int, default=32)
    g.add_argument("--baseline-lr", type=float, default=1e-3)
    g.add_argument("--baseline-image-size", type=int, nargs=2, default=[64, 64], metavar=("H", "W"))
    g.add_argument("--baseline-channels", type=int, nargs="+", default=[32, 64, 128, 256, 512],
                   help="conv stage widths (default: 1.83M parameters, the tiny WVM's size)")
    g.add_argument("--baseline-hidden", type=int, default=512)
    g.add_argument("--baseline-convs-per-stage", type=int, default=1)
    g.add_argument("--seed", type=int, default=0)


def _show(path: Path) -> str:
    """A default path as the user would type it (relative to the repository when inside it)."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _err(msg: str) -> int:
    print(f"wvm eval: error: {msg}", file=sys.stderr)
    return 2


def eval_workers(workers: int, device: str, threads: int = 1) -> int:
    """--workers as a process count: 0 = one per CPU core available to this process. The workers
    are forked and run one torch thread each, so more than one worker needs the CPU (a forked
    process cannot use the parent's CUDA context) and --threads 1."""
    if workers < 0:
        raise ValueError(f"--workers must be >= 0 (0: one per CPU core), got {workers}")
    on_cpu = str(device).split(":")[0] == "cpu"
    if workers > 1 and not on_cpu:
        raise ValueError(f"--workers {workers} needs --device cpu (got --device {device}); use --workers 1")
    if workers > 1 and threads > 1:
        raise ValueError(f"--workers {workers} runs one torch thread per worker: use --threads 1, "
                         f"or --workers 1 for --threads {threads}")
    if workers == 0:
        import multiprocessing

        if not on_cpu or threads > 1 or "fork" not in multiprocessing.get_all_start_methods():
            return 1
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)
    return workers


def _load_wvm(path: str, preset: str | None, device: str):
    """preset None: the checkpoint's own preset."""
    from wvm_ros.core.model import load_value_model

    return load_value_model(path, preset=preset, device=device)


def run(args: argparse.Namespace) -> int:
    import torch

    before = torch.get_num_threads()
    try:
        if args.threads and args.threads > 0:
            torch.set_num_threads(args.threads)
        return _run(args)
    finally:
        torch.set_num_threads(before)  # when called in-process (tests), leave the caller's setting


def _run(args: argparse.Namespace) -> int:
    from wvm_ros.core import evaluation as E
    from wvm_ros.core.baselines import BaselineLoadError, SingleFrameConfig, load_single_frame, save_single_frame

    progress = not args.no_progress
    out = Path(args.output)

    if args.train_baseline:
        if not args.train_dataset:
            return _err("--train-baseline needs --train-dataset ROOT (the data the WVM was trained on)")
        if not args.baseline_checkpoint:
            return _err("--train-baseline needs --baseline-checkpoint DIR to save the trained regressor to")
        try:
            rc = _train_baseline(args, progress)
        except E.DatasetError as e:
            return _err(str(e))
        if rc:
            return rc
    if not args.checkpoint:
        if args.train_baseline:
            return 0
        return _err("--checkpoint PATH is required (the WVM checkpoint folder to evaluate)")

    try:
        workers = eval_workers(args.workers, args.device, args.threads)
    except ValueError as e:
        return _err(str(e))
    if args.batch_size is None:
        args.batch_size = E.EVAL_BATCH
    if args.batch_size < 1:
        return _err(f"--batch-size must be >= 1 (attempts per batched model call), got {args.batch_size}")
    ck = Path(args.checkpoint)
    if not ck.exists():
        return _err(f"checkpoint {ck} does not exist (expected a WVM checkpoint folder, e.g. models/wvm-tiny-pusht)")
    dataset = Path(args.dataset) if args.dataset else DEFAULT_DATASET
    try:
        episodes = E.load_lerobot_episodes(dataset, camera_key=args.camera_key, gt_key=args.gt_key,
                                           max_episodes=args.max_episodes, progress=progress)
    except E.DatasetError as e:
        return _err(str(e))

    from wvm_ros.core.model import ModelLoadError

    methods = []
    try:
        model = _load_wvm(str(ck), args.preset, args.device)
    except ModelLoadError as e:
        return _err(str(e))
    fps = args.estimate_fps if args.estimate_fps and args.estimate_fps > 0 else None
    from wvm_ros.core.streaming import dense_factor

    try:
        dense_factor(float(model.config.sample_fps), fps)
    except ValueError as e:
        return _err(f"--estimate-fps {args.estimate_fps:g}: {e} (0: one estimate per sampled frame)")
    shared = None if args.no_offline else {}      # the offline scores come from the same pass
    offset = 0.0 if args.no_calibration else None     # None: each checkpoint's own calibration
    if offset is None and getattr(model, "value_offset", 0.0):
        from wvm_ros.core.value_calibration import rate_mismatch

        note = rate_mismatch(getattr(model, "calibration", None), fps or float(model.config.sample_fps))
        if note:
            print(f"wvm eval: warning: {ck}'s value offset {model.value_offset:+.4f} was {note}", file=sys.stderr)
    methods.append(E.streaming_method(model, "wvm", {"checkpoint": str(ck)}, estimate_fps=fps, keep_offline=shared,
                                      value_offset=offset))
    if not args.no_offline:
        methods.append(E.offline_method(model, info={"checkpoint": str(ck)}, estimate_fps=fps, from_live=shared,
                                        value_offset=offset))

    if not args.no_baselines:
        nv = args.no_video_checkpoint or (str(DEFAULT_NO_VIDEO) if DEFAULT_NO_VIDEO.exists() else None)
        if nv is None:
            print(f"wvm eval: warning: no --no-video-checkpoint and no {DEFAULT_NO_VIDEO}: "
                  "the WVM-without-video-loss baseline is left out", file=sys.stderr)
        else:
            if not Path(nv).exists():
                return _err(f"--no-video-checkpoint {nv} does not exist (expected a WVM checkpoint trained with lambda=0)")
            try:
                methods.append(E.streaming_method(_load_wvm(nv, args.preset, args.device), "wvm_no_video",
                                                  {"checkpoint": _show(Path(nv))}, estimate_fps=fps,
                                                  value_offset=offset))
            except ModelLoadError as e:
                return _err(str(e))
        bl = args.baseline_checkpoint or (str(DEFAULT_BASELINE) if DEFAULT_BASELINE.exists() else None)
        if bl is None:
            print(f"wvm eval: warning: no --baseline-checkpoint and no {DEFAULT_BASELINE}: "
                  "the single-frame baseline is left out", file=sys.stderr)
        else:
            try:
                methods.append(E.single_frame_method(load_single_frame(bl, args.device), info={"checkpoint": _show(Path(bl))}))
            except BaselineLoadError as e:
                return _err(str(e))
    methods.append(E.clock_method())

    report = E.evaluate(episodes, methods, progress=progress, workers=workers, batch_size=args.batch_size)
    report.dataset = {"root": _show(dataset), "camera_key": args.camera_key, "gt_key": args.gt_key}
    js = E.write_report(report, out, primary="wvm", plots_per_kind=args.plots_per_kind)
    print(E.markdown_table(js))
    print(f"wvm eval: wrote {out / 'metrics.json'}, {out / 'metrics.md'} and {out / 'plots'}/")
    return 0


def _train_baseline(args, progress: bool) -> int:
    from wvm_ros.core import evaluation as E
    from wvm_ros.core.baselines import SingleFrameConfig, save_single_frame, train_single_frame

    # the WVM trainer's targets (wvm_ros.core.train): the dataset's progress column, else t / (T - 1)
    gt_key = args.gt_key if args.baseline_target == "progress" else None
    eps, notes = [], []
    for root in args.train_dataset:
        try:
            eps += E.load_lerobot_episodes(root, camera_key=args.camera_key, gt_key=gt_key, progress=progress)
            notes.append(f"dataset column {gt_key!r}" if gt_key else "t / (T - 1)")
        except E.DatasetError as e:
            if gt_key is None or "no ground-truth column" not in str(e):
                raise
            print(f"wvm eval: {e}; training on t / (T - 1) instead", file=sys.stderr)
            eps += E.load_lerobot_episodes(root, camera_key=args.camera_key, gt_key=None, progress=progress)
            notes.append("t / (T - 1)")
    target_note = ", ".join(sorted(set(notes)))
    cfg = SingleFrameConfig(image_size=tuple(args.baseline_image_size), channels=tuple(args.baseline_channels),
                            hidden=args.baseline_hidden, convs_per_stage=args.baseline_convs_per_stage)
    model, res = train_single_frame([e.frames for e in eps], targets=[e.gt for e in eps], config=cfg,
                                    steps=args.baseline_steps,
                                    batch_size=args.baseline_batch_size, lr=args.baseline_lr, seed=args.seed,
                                    progress=progress)
    training = {"dataset": ", ".join(str(d) for d in args.train_dataset), "episodes": res.num_episodes, "frames": res.num_frames,
                "steps": res.steps, "batch_size": args.baseline_batch_size, "lr": args.baseline_lr,
                "seed": args.seed, "target": target_note, "first_loss": round(res.first_loss, 5),
                "final_loss": round(res.final_loss, 5), "seconds": round(res.seconds, 1),
                "command": "wvm eval " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else ""}
    save_single_frame(model, args.baseline_checkpoint, training=training)
    print(f"wvm eval: single-frame baseline ({model.num_parameters():,} parameters) trained on {res.num_frames} frames, "
          f"loss {res.first_loss:.4f} -> {res.final_loss:.4f}, saved to {args.baseline_checkpoint}")
    return 0
