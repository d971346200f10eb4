"""Success classifier: P(the task is done | the newest camera frame). ROS-free.

The value tells how far the task has come; it is a poor *done* detector. Trained on attempts
that end at first success (the paper's target v = t / T), the value is 0.93-0.95 half a second
before success and 0.97-0.98 at it, so a threshold-and-dwell rule on it waits about a second
longer than the scene needs (docs/closing_the_loop.md shows this holds even for a value read
from the simulator's exact state). LeRobot's human-in-the-loop RL ends episodes with a
success classifier instead; this module is that second output beside the value: a small
single-frame CNN (the architecture of the single-frame baseline, `wvm_ros.core.baselines`)
trained with binary cross-entropy on frames labelled done / not done. The value node publishes
its probability in `wvm_msgs/Progress.success` next to the progress of the same frame, and the
episode state machine can end an attempt on it (`EpisodeConfig.success_source`).

Why not LeRobot's own `reward_classifier` (lerobot.rewards.classifier): it wraps a frozen
pretrained encoder fetched from the Hugging Face hub (`lerobot/resnet10`), which nothing here
may download at run time; a 0.1M-parameter CNN trained from scratch separates success from
near-success at 96 x 96 (scripts/analysis/render_resize_probe.py: AUC 0.99).

Labels come from a per-frame column of a LeRobot dataset: a boolean column (LeRobot's
`next.success`) or a number compared with a threshold (`wvm sim-collect`'s `coverage` >= 0.95,
the simulator's own success test on the frame shown). Data must show the solved scene for a
while (`wvm sim-collect --after-success-s 2`), as a robot shows it until it is stopped;
otherwise there are almost no positive frames and training refuses.

Checkpoint: a directory with `model.safetensors` + `config.json`
(`{"kind": "success_classifier", ...}`), written and read through the single-frame baseline's
checkpoint code with that kind.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from wvm_ros.core.baselines import (BaselineLoadError, SingleFrameConfig, SingleFrameRegressor, load_single_frame,
                                    save_single_frame, train_single_frame)

KIND = "success_classifier"


class SuccessLoadError(BaselineLoadError):
    """A success-classifier checkpoint that is missing, unreadable or of another kind."""


def default_config(image_size: tuple[int, int] = (96, 96)) -> SingleFrameConfig:
    """0.11M parameters: enough to tell success from near-success at 96 x 96 (the render probe)."""
    return SingleFrameConfig(image_size=tuple(image_size), channels=(16, 32, 64, 128), hidden=128)


class SuccessClassifier(SingleFrameRegressor):
    """One RGB frame -> probability that the task is done. `predict(frames)` -> (N,) in [0, 1]."""

    def __init__(self, config: SingleFrameConfig | None = None):
        super().__init__(config or default_config())
        self.name = KIND


def save_success(model: SuccessClassifier, path: str | Path, training: dict | None = None) -> Path:
    return save_single_frame(model, path, training, kind=KIND)


def load_success(path: str | Path, device: str = "cpu") -> SuccessClassifier:
    """Load a directory written by `save_success`; SuccessLoadError naming the file on any mismatch."""
    try:
        m = load_single_frame(path, device, kind=KIND, cls=SuccessClassifier, what="success classifier")
    except SuccessLoadError:
        raise
    except BaselineLoadError as e:
        raise SuccessLoadError(str(e)) from e
    m.training_info = json.loads((Path(path) / "config.json").read_text()).get("training", {})
    return m


# ------------------------------------------------------------------------------ data
@dataclass
class LabelSpec:
    key: str = "next.success"      # per-frame column
    threshold: float | None = None  # None: the column is boolean (0/1); else label = value >= threshold

    def labels(self, column: np.ndarray) -> np.ndarray:
        col = np.asarray(column, dtype=np.float64).reshape(len(column), -1)[:, 0]
        if not np.all(np.isfinite(col)):
            raise ValueError(f"label column {self.key!r} has NaN or inf values")
        if self.threshold is None:
            bad = ~np.isin(col, (0.0, 1.0))
            if bad.any():
                raise ValueError(f"label column {self.key!r} is not boolean (e.g. {col[bad][0]!r}); name a "
                                 "threshold (--label-threshold) to label value >= threshold as success")
            return col.astype(bool)
        return col >= float(self.threshold)


def load_labelled(roots: Sequence[str | Path], label: LabelSpec, camera_key: str | None = None,
                  progress: bool = True) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames and per-frame success labels of every episode of the LeRobot datasets `roots`."""
    from wvm_ros.core.evaluation import load_lerobot_episodes

    frames, labels = [], []
    for root in roots:
        eps = load_lerobot_episodes(root, camera_key=camera_key, gt_key=None, extra_keys=[label.key],
                                    progress=progress)
        for ep in eps:
            frames.append(ep.frames)
            labels.append(label.labels(ep.extras[label.key]))
    return frames, labels


# --------------------------------------------------------------------------- metrics
def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties averaged); NaN with one class only."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def classification_metrics(p: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> dict:
    p, y = np.asarray(p, np.float64), np.asarray(y, bool)
    pred = p >= threshold
    tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
    return {"frames": int(len(y)), "positives": int(y.sum()), "threshold": threshold,
            "accuracy": float(np.mean(pred == y)) if len(y) else float("nan"),
            "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "recall": tp / (tp + fn) if tp + fn else float("nan"),
            "false_positive_rate": fp / max(1, int((~y).sum())), "auc": auc(p, y)}


def evaluate_success(model: SuccessClassifier, frames: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                     near: Sequence[np.ndarray] | None = None) -> dict:
    """Frame metrics on every frame, and (with `near`: per-episode boolean masks) on the frames
    near success only, where the hard cases are."""
    p = np.concatenate([model.predict(f) for f in frames])
    y = np.concatenate(labels)
    out = {"all": classification_metrics(p, y)}
    if near is not None:
        m = np.concatenate(near)
        out["near_success"] = classification_metrics(p[m], y[m])
    return out


# -------------------------------------------------------------------------- training
def train_success(frames: Sequence[np.ndarray], labels: Sequence[np.ndarray], *,
                  config: SingleFrameConfig | None = None, steps: int = 3000, batch_size: int = 64,
                  lr: float = 1e-3, seed: int = 0, augment: bool = False,
                  progress: bool = True) -> tuple[SuccessClassifier, dict]:
    """Train from scratch with binary cross-entropy (with `augment`: pad-and-crop and brightness
    augmentation, as the single-frame baseline). Refuses data without both classes."""
    n_pos = int(sum(int(np.sum(y)) for y in labels))
    n = int(sum(len(y) for y in labels))
    if n == 0:
        raise ValueError("success classifier: no frames to train on")
    if n_pos == 0 or n_pos == n:
        raise ValueError(f"success classifier: {n_pos} of {n} frames are labelled success; both classes are "
                         "needed (record attempts past success: wvm sim-collect --after-success-s 2)")
    torch.manual_seed(seed)   # the initial weights too: the same command gives the same checkpoint
    model = SuccessClassifier(config or default_config(tuple(frames[0].shape[1:3])))
    model, res = train_single_frame(frames, targets=[np.asarray(y, np.float32) for y in labels], steps=steps,
                                    batch_size=batch_size, lr=lr, seed=seed, augment=augment, progress=progress,
                                    model=model,
                                    loss="bce", desc="success classifier")
    info = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "augment": augment, "frames": n, "positives": n_pos,
            "episodes": len(frames), "first_loss": res.first_loss, "final_loss": res.final_loss,
            "seconds": round(res.seconds, 1), "config": asdict(model.config)}
    return model, info


# ------------------------------------------------------------------------- streaming
class SuccessEstimator:
    """Per-frame success probability for the live loop: `push(frame) -> (probability, seconds)`."""

    def __init__(self, model: SuccessClassifier):
        self.model = model.eval()
        self.checkpoint_id = model.checkpoint_id

    @torch.no_grad()
    def push(self, frame: np.ndarray) -> tuple[float, float]:
        f = np.asarray(frame)
        if f.ndim != 3 or f.shape[-1] != 3 or f.dtype != np.uint8:
            raise ValueError(f"success classifier: frame of shape {f.shape} dtype {f.dtype}; expected (H, W, 3) uint8 RGB")
        t0 = time.perf_counter()
        p = float(self.model(self.model.preprocess(f))[0])
        return (p if math.isfinite(p) else float("nan")), time.perf_counter() - t0


class WithSuccess:
    """A value estimator whose estimates also carry the success probability of the same frame
    (`ValueEstimate.success`): what the value node publishes when it has a success classifier.
    Used by `wvm experiment` so the experiment decides on exactly what the node publishes.
    Everything else (`set_task`, `task`, `frame_status`, `stamp_problem`, `counts`, ...) is the
    wrapped estimator's: the wrapper is a drop-in for it."""

    def __init__(self, estimator, success: SuccessEstimator):
        self.inner, self.success = estimator, success
        self.estimate_fps = estimator.estimate_fps
        self._prev = None   # the estimate returned last: returned again, it already has its success

    def __getattr__(self, name: str):
        # only called for names not found on the wrapper itself; `inner` is looked up in
        # __dict__ so that a half-built wrapper (copy, pickle) does not recurse
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r} (no wrapped estimator yet)")
        return getattr(inner, name)

    def set_task(self, text: str) -> None:
        self.inner.set_task(text)

    def reset(self) -> None:
        self.inner.reset()
        self._prev = None

    def push(self, frame: np.ndarray, stamp_s: float):
        est = self.inner.push(frame, stamp_s)
        # a new estimate of this frame (not the latest one again, e.g. for a frame with a repeated stamp)
        if est is not None and est is not self._prev and est.stamp_s == stamp_s:
            est.success, dt = self.success.push(frame)
            est.latency_s += dt
        self._prev = est
        return est
