"""`wvm calibrate-value`: fit a WVM checkpoint's value offset on validation splits.

    wvm calibrate-value --checkpoint models/wvm-tiny-pusht \\
        --dataset runs/data/pusht-val --dataset runs/data/pusht-val150          # fit and write
    wvm calibrate-value --checkpoint CK --dataset VAL --dry-run               # fit, print only
    wvm calibrate-value --checkpoint CK --remove                              # back to raw values

The offset is minus the mean error of the checkpoint's raw live estimates (as the value node
makes them, at --estimate-fps) over every scored frame of the given splits. It is written into
the checkpoint's config.json as `calibration` (weights untouched); the streaming estimator
adds it to every published value. The shipped held-out split (data/pusht-heldout) is refused:
it scores the benchmark and must not choose anything. See docs/model.md, "Value offset".
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "fit a WVM checkpoint's value offset on validation splits (written to its config.json)"

REPO_ROOT = Path(__file__).resolve().parents[2]
HELDOUT = REPO_ROOT / "data" / "pusht-heldout"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="WVM checkpoint folder (its config.json is updated)")
    p.add_argument("--dataset", action="append", metavar="ROOT", default=[],
                   help="validation split (local LeRobot dataset from `wvm sim-collect`); repeat to pool several")
    p.add_argument("--estimate-fps", type=float, default=10.0,
                   help="live estimates per second, as the value node (default 10; 0: one per 2 Hz sample)")
    p.add_argument("--camera-key", default=None, help="dataset camera feature (default: the only or first)")
    p.add_argument("--gt-key", default="progress", help="per-frame ground-truth progress column (default: progress)")
    p.add_argument("--workers", type=int, default=0,
                   help="worker processes with one torch thread each (default 0: one per CPU core)")
    p.add_argument("--dry-run", action="store_true", help="fit and print; leave the checkpoint as it is")
    p.add_argument("--remove", action="store_true", help="remove the checkpoint's calibration (raw values)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _err(msg: str) -> int:
    print(f"wvm calibrate-value: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    import torch

    from wvm_ros.core import evaluation as E
    from wvm_ros.core.model import ModelLoadError, load_value_model
    from wvm_ros.core.model.checkpoint import read_checkpoint_config, write_calibration
    from wvm_ros.core.value_calibration import CalibrationFitError, fit_value_offset

    ck = Path(args.checkpoint)
    if args.remove:
        if args.dataset:
            return _err("--remove takes no --dataset")
        try:
            read_checkpoint_config(ck)
            write_calibration(ck, None)
        except (ModelLoadError, OSError) as e:
            return _err(str(e))
        print(f"wvm calibrate-value: removed the calibration of {ck}: it publishes its raw estimates")
        return 0
    if not args.dataset:
        return _err("give at least one --dataset ROOT (a validation split, e.g. runs/data/pusht-val)")
    if args.estimate_fps < 0:
        return _err(f"--estimate-fps: expected >= 0, got {args.estimate_fps:g}")
    for d in args.dataset:
        if Path(d).resolve() == HELDOUT.resolve():
            return _err(f"--dataset {d} is the benchmark's held-out split: fit on validation splits "
                        "(e.g. `wvm sim-collect --episodes 36 --seed 50000 --output runs/data/pusht-val`)")
    try:
        model = load_value_model(ck, preset=None)
    except ModelLoadError as e:
        return _err(str(e))
    workers = args.workers
    if workers <= 0:
        import os

        workers = max(1, len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else 1
    progress = not args.no_progress
    splits = {}
    for d in args.dataset:
        try:
            splits[str(d)] = E.load_lerobot_episodes(d, camera_key=args.camera_key, gt_key=args.gt_key,
                                                     progress=progress)
        except E.DatasetError as e:
            return _err(str(e))
    fps = args.estimate_fps if args.estimate_fps > 0 else None
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        cal = fit_value_offset(model, splits, estimate_fps=fps, workers=workers, progress=progress)
    except (CalibrationFitError, ValueError) as e:
        return _err(str(e))
    finally:
        torch.set_num_threads(before)
    old = model.calibration.get("value_offset") if model.calibration else None
    print(json.dumps(cal, indent=2))
    raw, new = cal["fit_metrics_raw"], cal["fit_metrics_calibrated"]
    print(f"value offset {cal['value_offset']:+.4f} over {cal['frames']} frames "
          f"(before: {'none' if old is None else f'{old:+.4f}'}); on the fit splits, Expert-VOC / Retry-VOC / "
          f"Hesitation-RMSE {raw['expert_voc']} / {raw['retry_voc']} / {raw['hesitation_rmse']} raw -> "
          f"{new['expert_voc']} / {new['retry_voc']} / {new['hesitation_rmse']} with it (in-sample)")
    if args.dry_run:
        print("wvm calibrate-value: --dry-run: checkpoint left as it is")
        return 0
    try:
        write_calibration(ck, cal)
    except (ModelLoadError, OSError) as e:
        return _err(str(e))
    print(f"wvm calibrate-value: wrote the calibration into {ck / 'config.json'}")
    return 0
