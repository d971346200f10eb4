"""`wvm train-success --dataset D --output DIR`: train the success classifier (wvm_ros.core.success).

Frames and per-frame success labels from local LeRobot datasets (`--label-key`, boolean, or a
number with `--label-threshold`); binary cross-entropy, from scratch. With `--val-dataset` it
reports accuracy, precision, recall, false-positive rate and AUC on every frame and on the frames
near success (the 2 s before the first success frame and after it) into DIR/metrics.json.
The value node loads DIR with its `success_checkpoint` parameter (docs/closing_the_loop.md).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "train the success classifier (P(done | frame)) the value node publishes beside progress"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", action="append", required=True,
                   help="local LeRobot dataset to train on (repeatable); it must show solved scenes "
                        "(e.g. `wvm sim-collect --after-success-s 2`)")
    p.add_argument("--val-dataset", default=None, help="LeRobot dataset to report metrics on (not trained on)")
    p.add_argument("--output", required=True, help="checkpoint directory to write (model.safetensors, config.json)")
    p.add_argument("--label-key", default="next.success",
                   help="per-frame label column: boolean (default LeRobot's next.success), or a number with "
                        "--label-threshold (PushT: coverage with 0.95, the success test on the frame shown)")
    p.add_argument("--label-threshold", type=float, default=None,
                   help="label = column >= this (for a numeric column)")
    p.add_argument("--camera-key", default=None, help="camera feature (default observation.image, else the first)")
    p.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="input size of the classifier (default: the dataset's frame size)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", action="store_true",
                   help="pad-and-crop and brightness augmentation, as the single-frame baseline (off by default; "
                        "docs/closing_the_loop.md)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")


def _near(labels, fps: float, before_s: float = 2.0):
    import numpy as np

    out = []
    for y in labels:
        m = np.zeros(len(y), bool)
        pos = np.nonzero(y)[0]
        if len(pos):
            m[max(0, pos[0] - int(round(before_s * fps))):] = True
        out.append(m)
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from wvm_ros.core import success as S
    from wvm_ros.core.evaluation import DatasetError

    if args.steps < 1 or args.batch_size < 1:
        print(f"wvm train-success: --steps {args.steps} and --batch-size {args.batch_size} must be >= 1", file=sys.stderr)
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    label = S.LabelSpec(args.label_key, args.label_threshold)
    try:
        frames, labels = S.load_labelled(args.dataset, label, args.camera_key)
        val = S.load_labelled([args.val_dataset], label, args.camera_key) if args.val_dataset else None
    except (DatasetError, ValueError) as e:
        print(f"wvm train-success: {e}", file=sys.stderr)
        return 2
    size = tuple(args.image_size) if args.image_size else tuple(frames[0].shape[1:3])
    try:
        model, info = S.train_success(frames, labels, config=S.default_config(size), steps=args.steps,
                                      batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                      augment=args.augment)
    except (ValueError, FloatingPointError) as e:
        print(f"wvm train-success: {e}", file=sys.stderr)
        return 2
    info.update({"datasets": [str(d) for d in args.dataset], "label_key": label.key,
                 "label_threshold": label.threshold, "command": "wvm " + " ".join(sys.argv[1:])})
    metrics = None
    if val is not None:
        fps = _fps(args.val_dataset)
        metrics = S.evaluate_success(model, val[0], val[1], near=_near(val[1], fps))
        metrics["dataset"] = str(args.val_dataset)
        info["validation"] = metrics
    out = Path(args.output)
    S.save_success(model, out, training=info)
    if metrics is not None:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        for part, m in metrics.items():
            if isinstance(m, dict):
                print(f"{part:13s} frames {m['frames']:6d}  accuracy {m['accuracy']:.3f}  precision {m['precision']:.3f}  "
                      f"recall {m['recall']:.3f}  false-positive rate {m['false_positive_rate']:.3f}  AUC {m['auc']:.3f}")
    print(f"trained on {info['frames']} frames ({info['positives']} success) of {info['episodes']} episodes in "
          f"{info['seconds']:.0f} s; loss {info['first_loss']:.3f} -> {info['final_loss']:.3f}")
    print(f"wrote {out} (checkpoint id {S.load_success(out).checkpoint_id})")
    return 0


def _fps(root) -> float:
    try:
        return float(json.loads((Path(root) / "meta" / "info.json").read_text())["fps"])
    except (OSError, KeyError, ValueError):
        return 10.0
