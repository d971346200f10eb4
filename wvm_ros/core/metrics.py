"""Value metrics of the WVM paper (see ../shared/WVM_NOTES.md, "Metrics"), ROS-free.

Definitions used here (each a pure function of per-frame arrays):

* **VOC** (value-order correlation, from GVL): the Spearman rank correlation between the
  predicted values of an episode's frames and the frames' time order, in [-1, 1]. Ties in
  the predictions get average ranks (scipy's `spearmanr`). A *constant* prediction carries
  no order information: its VOC is defined as 0.0 (scipy would return NaN). Fewer than two
  scored frames: NaN (nothing to rank), and NaN values are left out of every average.
* **Expert-VOC**: VOC over whole expert episodes.
* **Retry-VOC**: VOC over only the windows where ground-truth progress decreases. A window
  is a maximal run of frames ``[a, b]`` with ``gt[i+1] < gt[i]`` for all ``a <= i < b``.
  Within it the expected order of the values is the ground truth's order (reverse time),
  so the score is the Spearman correlation between prediction and ground truth over the
  window's frames: a model that follows the regression scores +1, a clock that keeps
  rising scores -1. An episode's Retry-VOC is the mean over its windows.
* **Hesitation-RMSE**: the root-mean-square error between prediction and ground truth over
  the frames of the episode's hesitation segments (ground truth is flat there), pooled
  over all of an episode's hesitation frames.

Aggregation: a metric is computed per episode, averaged over the episodes of a task
(NaN skipped), then averaged over tasks (each task counts once, as the paper averages over
datasets). Frames whose prediction is NaN (e.g. while a streaming estimator warms up) are
not scored.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
from scipy.stats import spearmanr

__all__ = [
    "voc",
    "decreasing_windows",
    "retry_voc",
    "hesitation_rmse",
    "segment_mask",
    "EpisodeScore",
    "score_episode",
    "aggregate",
    "METRIC_KEYS",
    "blind_clock",
]

METRIC_KEYS = ("expert_voc", "retry_voc", "hesitation_rmse")


def blind_clock(num_frames: int) -> np.ndarray:
    """The blind-clock reference: progress i / (T - 1), never looking at an image.

    It scores Expert-VOC 1.0 by construction; only Retry-VOC exposes it (-1.0). Report it
    beside every model (WVM_NOTES.md).
    """
    if num_frames < 1:
        raise ValueError(f"blind_clock: expected at least 1 frame, got {num_frames}")
    if num_frames == 1:
        return np.zeros(1, dtype=np.float64)
    return np.arange(num_frames, dtype=np.float64) / (num_frames - 1)


def _as_1d(name: str, x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of per-frame values, got shape {a.shape}")
    return a


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rho of two equally long finite arrays; 0.0 when either is constant."""
    if len(a) < 2:
        return float("nan")
    if np.all(a == a[0]) or np.all(b == b[0]):
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = spearmanr(a, b).statistic
    return float(rho)


def voc(pred: Sequence[float], order: Sequence[float] | None = None) -> float:
    """Value-order correlation: Spearman rho of `pred` vs the time order (or `order`).

    NaN entries of `pred` are dropped (their frames are not scored). Constant predictions
    give 0.0; fewer than two scored frames give NaN.
    """
    p = _as_1d("pred", pred)
    o = np.arange(len(p), dtype=np.float64) if order is None else _as_1d("order", order)
    if len(o) != len(p):
        raise ValueError(f"pred and order lengths differ: {len(p)} vs {len(o)}")
    keep = np.isfinite(p) & np.isfinite(o)
    return _spearman(p[keep], o[keep])


def decreasing_windows(gt: Sequence[float], eps: float = 1e-9) -> list[tuple[int, int]]:
    """Maximal inclusive frame ranges ``(a, b)`` over which ground truth strictly decreases."""
    g = _as_1d("gt", gt)
    windows: list[tuple[int, int]] = []
    start = None
    for i in range(len(g) - 1):
        if g[i + 1] < g[i] - eps:
            if start is None:
                start = i
        elif start is not None:
            windows.append((start, i))
            start = None
    if start is not None:
        windows.append((start, len(g) - 1))
    return windows


def retry_voc(pred: Sequence[float], gt: Sequence[float]) -> float:
    """Mean over the ground truth's decreasing windows of Spearman(pred, gt); NaN if none."""
    p, g = _as_1d("pred", pred), _as_1d("gt", gt)
    if len(p) != len(g):
        raise ValueError(f"pred and gt lengths differ: {len(p)} vs {len(g)}")
    scores = []
    for a, b in decreasing_windows(g):
        pw, gw = p[a : b + 1], g[a : b + 1]
        keep = np.isfinite(pw)
        s = _spearman(pw[keep], gw[keep])
        if not math.isnan(s):
            scores.append(s)
    return float(np.mean(scores)) if scores else float("nan")


def segment_mask(num_frames: int, segments: Iterable[tuple[int, int]]) -> np.ndarray:
    """Boolean mask of the frames inside the inclusive ``(start, end)`` segments."""
    mask = np.zeros(num_frames, dtype=bool)
    for start, end in segments:
        start, end = int(start), int(end)
        if not (0 <= start <= end < num_frames):
            raise ValueError(f"segment ({start}, {end}) is outside an episode of {num_frames} frames")
        mask[start : end + 1] = True
    return mask


def hesitation_rmse(pred: Sequence[float], gt: Sequence[float], segments: Iterable[tuple[int, int]]) -> float:
    """RMSE of pred vs gt over the frames of the inclusive hesitation `segments`; NaN if none."""
    p, g = _as_1d("pred", pred), _as_1d("gt", gt)
    if len(p) != len(g):
        raise ValueError(f"pred and gt lengths differ: {len(p)} vs {len(g)}")
    mask = segment_mask(len(p), segments) & np.isfinite(p)
    if not mask.any():
        return float("nan")
    return float(np.sqrt(np.mean((p[mask] - g[mask]) ** 2)))


@dataclass
class EpisodeScore:
    """The metrics of one episode of one method. NaN where a metric does not apply."""

    episode_index: int
    task: str
    kind: str  # "expert" | "hesitation" | "retry" | other
    expert_voc: float = float("nan")
    retry_voc: float = float("nan")
    hesitation_rmse: float = float("nan")
    voc: float = float("nan")  # VOC over the whole episode, whatever its kind
    frames_scored: int = 0
    num_frames: int = 0

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.__dict__.items()}


def score_episode(
    pred: Sequence[float],
    gt: Sequence[float],
    kind: str,
    hesitation_segments: Iterable[tuple[int, int]] = (),
    *,
    episode_index: int = 0,
    task: str = "",
) -> EpisodeScore:
    """Score one episode. `kind` picks which metrics apply:

    expert -> expert_voc; retry -> retry_voc; hesitation -> hesitation_rmse (over
    `hesitation_segments`); mixed (both kinds of segment) -> retry_voc and hesitation_rmse;
    any other kind (e.g. a failure) -> none of the three. VOC over the whole episode is
    always filled in.
    """
    p, g = _as_1d("pred", pred), _as_1d("gt", gt)
    if len(p) != len(g):
        raise ValueError(f"episode {episode_index}: pred and gt lengths differ: {len(p)} vs {len(g)}")
    s = EpisodeScore(episode_index=episode_index, task=task, kind=kind,
                     frames_scored=int(np.isfinite(p).sum()), num_frames=len(p))
    s.voc = voc(p)
    if kind == "expert":
        s.expert_voc = s.voc
    if kind in ("retry", "mixed"):
        s.retry_voc = retry_voc(p, g)
    if kind in ("hesitation", "mixed"):
        s.hesitation_rmse = hesitation_rmse(p, g, list(hesitation_segments))
    return s


def _nanmean(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


@dataclass
class Aggregate:
    """Per-task means and their mean over tasks, plus how many episodes fed each."""

    overall: dict[str, float] = field(default_factory=dict)
    per_task: dict[str, dict[str, float]] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


def aggregate(scores: Iterable[EpisodeScore]) -> Aggregate:
    """Average episode scores per task (NaN skipped), then over tasks."""
    by_task: dict[str, list[EpisodeScore]] = {}
    for s in scores:
        by_task.setdefault(s.task, []).append(s)
    out = Aggregate()
    keys = METRIC_KEYS + ("voc",)
    for task, items in sorted(by_task.items()):
        out.per_task[task] = {k: _nanmean([getattr(s, k) for s in items]) for k in keys}
        out.counts[task] = {k: sum(not math.isnan(getattr(s, k)) for s in items) for k in keys}
    for k in keys:
        out.overall[k] = _nanmean([m[k] for m in out.per_task.values()])
    return out
