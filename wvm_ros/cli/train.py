"""`wvm train`: train a WVM on local LeRobot v3 datasets.

    wvm train --dataset data/pusht-train --output runs/wvm-tiny --preset tiny --steps 2000
    wvm train --config train.yaml                       # every flag can come from a YAML/JSON file
    wvm train --output runs/wvm-tiny --resume           # continue from runs/wvm-tiny/training_state.pt

Flags override the config file. The checkpoint (model.safetensors + config.json +
training_state.pt) is written into --output every --save-every steps and at the end.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "train a WVM on local LeRobot datasets"

# flag -> (TrainConfig field, type, help)
_FLAGS = [
    ("--preset", "preset", str, "model preset: tiny | small | paper (default tiny)"),
    ("--steps", "steps", int, "optimizer steps (default 3000)"),
    ("--batch-size", "batch_size", int, "clips per step (default 32)"),
    ("--lr", "lr", float, "peak learning rate (default 1e-3)"),
    ("--min-lr-ratio", "min_lr_ratio", float, "cosine decays to this fraction of --lr (default 0.1)"),
    ("--warmup-steps", "warmup_steps", int, "linear warm-up steps (default 200)"),
    ("--weight-decay", "weight_decay", float, "AdamW weight decay (default 0)"),
    ("--grad-clip", "grad_clip", float, "gradient-norm clip (default 1.0)"),
    ("--lambda-video", "lambda_video", float, "weight of the video flow-matching loss; 0 = the no-video ablation (default 1)"),
    ("--prefix-random-p", "prefix_random_p", float, "probability of a U[0,1] prefix value (default 0.5)"),
    ("--prefix-noise", "prefix_noise", float,
     "SD of Gaussian noise added to a prefix value that is not randomised, clipped to [0,1] (default 0 = off)"),
    ("--rewind-ratio", "rewind_ratio", float, "probability of a reversed (descending) clip (default 0.5)"),
    ("--plateau-ratio", "plateau_ratio", float, "probability of a plateau clip (default 0.1)"),
    ("--flip", "flip", str,
     "mirror each clip's frames with probability 0.5, targets unchanged: none | horizontal | vertical | transpose | "
     "anti-transpose (default none; only where the task is symmetric under it: PushT is under anti-transpose)"),
    ("--camera-key", "camera_key", str, "image/video feature to train on (default: observation.image or the first camera)"),
    ("--progress-key", "progress_key", str, "per-frame target column, used when present (default progress; else t/(T-1))"),
    ("--max-episodes", "max_episodes", int, "use only the first N episodes of each dataset"),
    ("--seed", "seed", int, "random seed (default 0)"),
    ("--save-every", "save_every", int, "checkpoint every N steps (default 500; 0 = only at the end)"),
    ("--log-every", "log_every", int, "loss averaging / logging period in steps (default 25)"),
    ("--threads", "threads", int, "torch CPU threads (default: torch's choice)"),
    ("--device", "device", str, "cpu | cuda | cuda:N (default cpu)"),
    ("--frame-cache", "frame_cache", str,
     "folder for a memory-mapped copy of the decoded frames, reused by later runs on the same data "
     "(default: none, frames held in memory; use it for datasets larger than the memory)"),
    ("--segment-weight", "segment_weight", float,
     "draw clips touching labelled hesitation/retry segments this many times as often (default 1 = uniform)"),
    ("--segment-loss", "segment_loss", str,
     "sampled (default: boosted clips count as drawn) | uniform (their value loss weighted by 1 / "
     "--segment-weight, so values are fit as under uniform sampling)"),
    ("--ema", "ema_decay", float, "EMA decay of the saved weights, e.g. 0.998 (default 0 = off)"),
    ("--val-dataset", "val_dataset", str,
     "validation split (local LeRobot dataset with ground truth): metrics every --val-every steps, best kept in OUTPUT/best"),
    ("--val-every", "val_every", int, "validation period in steps (default 0 = at every save)"),
    ("--val-max-episodes", "val_max_episodes", int, "use only the first N validation episodes"),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", action="append", default=None, metavar="ROOT",
                   help="local LeRobot v3 dataset root (repeatable)")
    p.add_argument("--output", help="checkpoint folder (created)")
    p.add_argument("--config", help="YAML or JSON file with training settings (TrainConfig fields); flags win")
    for flag, _, typ, text in _FLAGS:
        p.add_argument(flag, type=typ, default=None, help=text)
    p.add_argument("--betas", type=float, nargs=2, default=None, metavar=("B1", "B2"), help="AdamW betas (default 0.9 0.95)")
    p.add_argument("--sample-fps", type=float, default=None, help="model window sampling rate (preset default: 2 Hz)")
    p.add_argument("--model-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model config field, e.g. --model-set num_layers=2 (JSON values)")
    p.add_argument("--resume", action="store_true", help="continue from --output's training_state.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _load_file(path: str) -> dict:
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        d = yaml.safe_load(text) or {}
    else:
        d = json.loads(text)
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a mapping of training settings, got {type(d).__name__}")
    return d


def build_config(args: argparse.Namespace):
    from wvm_ros.core.train import TrainConfig

    d: dict = {}
    if args.resume and args.output and (Path(args.output) / "config.json").is_file():
        # resuming: start from the run's own settings; the config file and flags given now win
        from wvm_ros.core.model import read_checkpoint_config

        prev = read_checkpoint_config(args.output).get("meta", {}).get("train_config")
        if prev:
            d.update({k: v for k, v in prev.items() if k not in ("resume", "progress_bar")})
    if args.config:
        d.update(_load_file(args.config))
    if args.dataset:
        d["datasets"] = args.dataset
    if args.output:
        d["output"] = args.output
    for flag, name, _, _ in _FLAGS:
        v = getattr(args, flag[2:].replace("-", "_"))
        if v is not None:
            d[name] = v
    if args.betas is not None:
        d["betas"] = list(args.betas)
    overrides = dict(d.get("model_overrides") or {})
    if args.sample_fps is not None:
        overrides["sample_fps"] = args.sample_fps
    from wvm_ros.core.model.config import parse_overrides

    overrides.update(parse_overrides(args.model_set))
    if overrides:
        d["model_overrides"] = overrides
    d["resume"] = bool(args.resume)
    d["progress_bar"] = not args.no_progress
    return TrainConfig.from_dict(d)


def run(args: argparse.Namespace) -> int:
    from wvm_ros.core.model import ModelLoadError
    from wvm_ros.core.train import TrainDataError, TrainingDiverged, train

    try:
        cfg = build_config(args)
    except (OSError, ValueError, TypeError) as e:
        print(f"wvm train: {e}", file=sys.stderr)
        return 2
    if not cfg.output:
        print("wvm train: --output DIR is required", file=sys.stderr)
        return 2
    if not cfg.datasets and not cfg.resume:
        print("wvm train: give at least one --dataset ROOT (a local LeRobot v3 dataset)", file=sys.stderr)
        return 2
    if cfg.resume and not cfg.datasets:
        # the datasets of the run being resumed
        from wvm_ros.core.model import read_checkpoint_config

        try:
            prev = read_checkpoint_config(cfg.output)["meta"]["train_config"]
            cfg.datasets = list(prev["datasets"])
        except (ModelLoadError, KeyError) as e:
            print(f"wvm train: cannot resume {cfg.output}: {e}", file=sys.stderr)
            return 2
    try:
        result = train(cfg)
    except TrainingDiverged as e:
        print(f"wvm train: {e}", file=sys.stderr)
        return 3
    except (TrainDataError, ModelLoadError, ValueError) as e:
        print(f"wvm train: {e}", file=sys.stderr)
        return 2
    last = result["history"][-1] if result["history"] else {}
    print(json.dumps({"checkpoint": result["checkpoint"], "checkpoint_id": result["checkpoint_id"],
                      "steps": result["steps"], "wall_s": round(result["wall_s"], 1),
                      "final_loss": last.get("loss"),
                      **({"best": {"step": result["best"]["step"], "score": round(result["best"]["score"] or 0.0, 4),
                                   "metrics": result["best"].get("metrics"),
                                   "checkpoint": str(Path(result["checkpoint"]) / "best")}}
                         if result.get("best") else {})}, indent=2))
    return 0
