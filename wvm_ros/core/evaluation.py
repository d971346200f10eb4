"""The value benchmark behind `wvm eval` (ROS-free).

Runs every method on the same episodes and scores it with `wvm_ros.core.metrics`:

* `wvm`: the WVM checkpoint under test, run through the same `StreamingValueEstimator`
  the value node uses (frames pushed one by one with their dataset timestamps), so the
  numbers reflect live use. Frames before its first estimate (warm-up) are not scored.
* `wvm_no_video`: the WVM trained without the video loss (`wvm train --lambda 0`), same path.
* `single_frame`: the single-frame progress regressor (`wvm_ros.core.baselines`), no
  temporal context: the stand-in for a static-image VLM.
* `blind_clock`: progress = i / (T - 1), never looking at an image (WVM_NOTES.md requires it
  beside every model in the same run).

Episodes come from a local LeRobot v3 dataset written by `wvm sim-collect` (see
`load_lerobot_episodes` for the columns it reads). Outputs (`write_report`): `metrics.json`,
`metrics.md` and PNG plots of predicted vs ground-truth curves.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from wvm_ros.core import metrics as M

__all__ = [
    "EvalEpisode",
    "DatasetError",
    "Method",
    "MethodResult",
    "EvalReport",
    "load_lerobot_episodes",
    "clock_method",
    "single_frame_method",
    "streaming_method",
    "offline_method",
    "evaluate",
    "write_report",
    "METHOD_LABELS",
]

METHOD_LABELS = {
    "wvm": "WVM",
    "wvm_offline": "WVM, offline (overlap-averaged)",
    "wvm_no_video": "WVM without video loss",
    "single_frame": "single-frame regressor",
    "blind_clock": "blind clock",
    # privileged-state estimators (wvm_ros.core.state_oracle; `wvm experiment state-oracle`)
    "state_window": "state oracle, the WVM's context (start + last 1.5 s)",
    "state_window_elapsed": "state oracle, the WVM's context + elapsed time",
    "state_5s": "state oracle, start + last 5 s",
    "state_history": "state oracle, start + last 5 s + elapsed time and distance so far",
}
KINDS = ("expert", "hesitation", "retry")


class DatasetError(ValueError):
    """An evaluation dataset that is missing or lacks what the benchmark needs."""


@dataclass
class EvalEpisode:
    """One attempt with its per-frame ground truth and labelled non-progress segments."""

    episode_index: int
    task: str
    kind: str  # "expert" | "hesitation" | "retry" (other kinds are scored with VOC only)
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    timestamps: np.ndarray  # (T,) seconds from the start of the episode
    gt: np.ndarray  # (T,) ground-truth progress (the paper's piecewise-linear curve)
    hesitation_segments: list[tuple[int, int]] = field(default_factory=list)  # inclusive frame ranges
    retry_segments: list[tuple[int, int]] = field(default_factory=list)
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # other per-frame columns, (T, d) float64

    def __post_init__(self):
        T = len(self.frames)
        self.gt = np.asarray(self.gt, dtype=np.float64)
        self.timestamps = np.asarray(self.timestamps, dtype=np.float64)
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise DatasetError(f"episode {self.episode_index}: frames must be (T, H, W, 3) RGB, got {self.frames.shape}")
        if len(self.gt) != T or len(self.timestamps) != T:
            raise DatasetError(f"episode {self.episode_index}: {T} frames but {len(self.gt)} ground-truth values "
                               f"and {len(self.timestamps)} timestamps")
        for key, col in self.extras.items():
            if len(col) != T:
                raise DatasetError(f"episode {self.episode_index}: {T} frames but {len(col)} rows of {key!r}")

    @property
    def num_frames(self) -> int:
        return len(self.frames)


# A method maps an episode to per-frame predictions (NaN = no estimate for that frame).
Predictor = Callable[[EvalEpisode], np.ndarray]


@dataclass
class Method:
    name: str
    predict: Predictor
    info: dict = field(default_factory=dict)  # checkpoint path / id, parameter count, ...
    #: optional: several episodes at once (one prediction array each, in order), where batching
    #: them is cheaper than one by one; `evaluate` then hands it groups of `batch_size` episodes
    predict_many: Callable[[list[EvalEpisode]], list[np.ndarray]] | None = None

    @property
    def label(self) -> str:
        return METHOD_LABELS.get(self.name, self.name)


def clock_method() -> Method:
    return Method("blind_clock", lambda ep: M.blind_clock(ep.num_frames), {"kind": "progress = i / (T - 1)"})


def single_frame_method(model, name: str = "single_frame", info: dict | None = None) -> Method:
    """Each frame scored on its own by a `SingleFrameRegressor`."""
    base = {"checkpoint_id": getattr(model, "checkpoint_id", "?"),
            "num_parameters": int(sum(p.numel() for p in model.parameters()))}
    return Method(name, lambda ep: model.predict(ep.frames).astype(np.float64), {**base, **(info or {})})


def streaming_method(model, name: str = "wvm", info: dict | None = None,
                     estimate_fps: float | None = None, keep_offline: dict | None = None,
                     value_offset: float | None = None) -> Method:
    """Run a WVM through `StreamingValueEstimator`, exactly as the value node does.

    Every frame is pushed with its dataset timestamp; a frame's prediction is the estimate
    returned by that push (the latest estimate between samples); frames before the first
    estimate are NaN (not scored). `keep_offline`: a dict that receives each episode's offline
    (overlap-averaged) estimates of the same pass, for `offline_method(..., from_live=...)`.
    `value_offset`: added to the published values as the value node does; None: the
    checkpoint's calibration (0 without one), 0.0: the raw estimates.
    """
    from wvm_ros.core.streaming import estimate_episodes, resolve_value_offset

    offset = resolve_value_offset(model, value_offset)

    def predict_many(eps: list[EvalEpisode]) -> list[np.ndarray]:
        rs = estimate_episodes(model, [(ep.frames, ep.timestamps, ep.task) for ep in eps],
                               estimate_fps=estimate_fps, value_offset=offset)
        if keep_offline is not None:
            for ep, r in zip(eps, rs):
                keep_offline[ep.episode_index] = r["smoothed"].astype(np.float64)
        return [r["online"].astype(np.float64) for r in rs]

    def predict(ep: EvalEpisode) -> np.ndarray:
        return predict_many([ep])[0]

    base = {"checkpoint_id": getattr(model, "checkpoint_id", "?"), "preset": getattr(model, "name", "?"),
            "estimate_fps": estimate_fps or float(model.config.sample_fps), "value_offset": offset}
    try:
        base["num_parameters"] = int(sum(p.numel() for p in model.parameters()))
    except Exception:
        pass
    return Method(name, predict, {**base, **(info or {})}, predict_many=predict_many)


def offline_method(model, name: str = "wvm_offline", info: dict | None = None,
                   estimate_fps: float | None = None, from_live: dict | None = None,
                   value_offset: float | None = None) -> Method:
    """The same WVM scored on its offline estimates: every sampled frame gets the average of
    all the windows that cover it (up to h, later windows included), as the paper's inference
    describes ("windows overlap; overlapping predictions are averaged"). Not causal: a live
    node cannot publish these (it reports the newest window's estimate, `streaming_method`).
    `from_live`: the `keep_offline` dict of a streaming method run before this one on the same
    episodes (the same windows; saves a second pass; give both the same `value_offset`)."""
    from wvm_ros.core.streaming import estimate_episodes, resolve_value_offset

    offset = resolve_value_offset(model, value_offset)

    def predict_many(eps: list[EvalEpisode]) -> list[np.ndarray]:
        out: dict[int, np.ndarray] = {}
        if from_live is not None:
            out = {j: from_live.pop(ep.episode_index) for j, ep in enumerate(eps) if ep.episode_index in from_live}
        todo = [j for j in range(len(eps)) if j not in out]
        rs = estimate_episodes(model, [(eps[j].frames, eps[j].timestamps, eps[j].task) for j in todo],
                               estimate_fps=estimate_fps, value_offset=offset)
        out.update({j: r["smoothed"].astype(np.float64) for j, r in zip(todo, rs)})
        return [out[j] for j in range(len(eps))]

    def predict(ep: EvalEpisode) -> np.ndarray:
        return predict_many([ep])[0]

    base = {"checkpoint_id": getattr(model, "checkpoint_id", "?"), "preset": getattr(model, "name", "?"),
            "estimate_fps": estimate_fps or float(model.config.sample_fps), "value_offset": offset,
            "protocol": "offline: overlap-averaged over all windows covering a frame (not causal)"}
    return Method(name, predict, {**base, **(info or {})}, predict_many=predict_many)


@dataclass
class MethodResult:
    method: Method
    scores: list[M.EpisodeScore]
    aggregate: M.Aggregate
    predictions: dict[int, np.ndarray]
    seconds: float

    def summary(self) -> dict:
        return {
            "label": self.method.label,
            **{k: _num(self.aggregate.overall.get(k)) for k in M.METRIC_KEYS},
            "voc": _num(self.aggregate.overall.get("voc")),
            "per_task": {t: {k: _num(v) for k, v in m.items()} for t, m in self.aggregate.per_task.items()},
            "episodes_scored": {t: c for t, c in self.aggregate.counts.items()},
            "frames_scored": int(sum(s.frames_scored for s in self.scores)),
            "frames_total": int(sum(s.num_frames for s in self.scores)),
            "seconds": round(self.seconds, 2),
            "info": self.method.info,
        }


@dataclass
class EvalReport:
    episodes: list[EvalEpisode]
    results: dict[str, MethodResult]  # name -> result, in run order
    dataset: dict = field(default_factory=dict)

    def to_json(self, primary: str = "wvm") -> dict:
        primary = primary if primary in self.results else next(iter(self.results))
        main = self.results[primary].summary()
        clock = self.results.get("blind_clock")
        out: dict = {k: main[k] for k in M.METRIC_KEYS}
        out["model"] = {"name": primary, **main}
        out["baselines"] = {n: r.summary() for n, r in self.results.items() if n != primary}
        tasks = sorted({e.task for e in self.episodes})
        out["per_task"] = {t: {n: r.summary()["per_task"].get(t, {}) for n, r in self.results.items()} for t in tasks}
        if clock is not None:
            c = clock.summary()
            out["beats_blind_clock"] = {
                n: {"retry_voc": _better(r.summary()["retry_voc"], c["retry_voc"], higher=True),
                    "hesitation_rmse": _better(r.summary()["hesitation_rmse"], c["hesitation_rmse"], higher=False)}
                for n, r in self.results.items() if n != "blind_clock"
            }
        out["dataset"] = {
            **self.dataset,
            "num_episodes": len(self.episodes),
            "episodes_by_kind": {k: sum(e.kind == k for e in self.episodes) for k in sorted({e.kind for e in self.episodes})},
            "num_frames": int(sum(e.num_frames for e in self.episodes)),
            "tasks": tasks,
        }
        out["definitions"] = ("VOC: Spearman(pred, time order), constant -> 0; Retry-VOC: Spearman(pred, gt) over "
                              "windows where gt decreases, mean per episode; Hesitation-RMSE: RMSE over hesitation "
                              "frames; per-episode -> mean per task -> mean over tasks (docs/evaluation.md)")
        out["episodes"] = [
            {"episode_index": e.episode_index, "task": e.task, "kind": e.kind, "num_frames": e.num_frames,
             **{n: {k: v for k, v in r.scores[i].as_dict().items() if k in M.METRIC_KEYS + ("voc", "frames_scored")}
                for n, r in self.results.items()}}
            for i, e in enumerate(self.episodes)
        ]
        return out


def _num(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 4)


def _better(a, b, higher: bool):
    if a is None or b is None:
        return None
    return bool(a > b) if higher else bool(a < b)


#: episodes per batched call of a method that has `predict_many` (a WVM's streaming pass)
EVAL_BATCH = 16


def evaluate(episodes: Sequence[EvalEpisode], methods: Iterable[Method], progress: bool = True,
             workers: int = 1, batch_size: int = EVAL_BATCH) -> EvalReport:
    """Run every method on every episode and score it.

    Episodes go in groups of `batch_size` (longest first, so that a group's attempts end at
    about the same frame) to methods that have `predict_many` (the WVMs: one batched model call
    per step for the whole group); other methods take them one by one. The groups do not depend
    on `workers`, so neither do the predictions.
    workers > 1: the groups are shared out over that many forked worker processes (each runs
    every method on its groups, in the methods' order, with one torch thread: as in torch's
    DataLoader workers, since GNU OpenMP's thread pool does not survive a fork);
    the scores are computed here in episode order. Needs the "fork" start method (Linux) and
    models on the CPU; `MethodResult.seconds` is then summed over the workers."""
    from tqdm.auto import tqdm

    if not episodes:
        raise DatasetError("no episodes to evaluate")
    methods = list(methods)
    names = [m.name for m in methods]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise ValueError(f"method name {n!r} given twice")
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups = episode_groups(episodes, int(batch_size))
    workers = min(int(workers), len(groups))
    total = len(episodes) * len(methods)
    preds: dict[str, dict[int, np.ndarray]] = {m.name: {} for m in methods}
    seconds = {m.name: 0.0 for m in methods}
    with tqdm(total=total, desc="wvm eval", unit="episode", disable=not progress) as bar:
        if workers > 1:
            bar.set_postfix(workers=workers)
            for g, out in _predict_parallel(episodes, methods, workers, groups):
                for name, (ps, dt) in out.items():
                    for i, p in zip(g, ps):
                        preds[name][i] = _checked(name, episodes[i], p)
                    seconds[name] += dt
                bar.update(len(g) * len(methods))
        else:
            for m in methods:
                for g in groups:
                    bar.set_postfix(method=m.name, episode=episodes[g[0]].episode_index)
                    t0 = time.perf_counter()
                    for i, p in zip(g, _run_method(m, [episodes[i] for i in g])):
                        preds[m.name][i] = _checked(m.name, episodes[i], p)
                    seconds[m.name] += time.perf_counter() - t0
                    bar.update(len(g))
    results: dict[str, MethodResult] = {}
    for m in methods:
        scores = [M.score_episode(preds[m.name][i], ep.gt, ep.kind, ep.hesitation_segments,
                                  episode_index=ep.episode_index, task=ep.task) for i, ep in enumerate(episodes)]
        by_index = {ep.episode_index: preds[m.name][i] for i, ep in enumerate(episodes)}
        results[m.name] = MethodResult(m, scores, M.aggregate(scores), by_index, seconds[m.name])
    return EvalReport(list(episodes), results)


def episode_groups(episodes: Sequence[EvalEpisode], batch_size: int) -> list[list[int]]:
    """Positions of the episodes in groups of at most `batch_size`, longest episodes first."""
    order = sorted(range(len(episodes)), key=lambda i: -episodes[i].num_frames)
    return [order[k:k + batch_size] for k in range(0, len(order), batch_size)]


def _run_method(m: Method, eps: list[EvalEpisode]) -> list:
    if m.predict_many is not None:
        out = list(m.predict_many(eps))
        if len(out) != len(eps):
            raise RuntimeError(f"method {m.name}: predict_many gave {len(out)} results for {len(eps)} episodes")
        return out
    return [m.predict(ep) for ep in eps]


def _checked(name: str, ep: EvalEpisode, p) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.shape != (ep.num_frames,):
        raise RuntimeError(f"method {name}: episode {ep.episode_index}: {p.shape} predictions "
                           f"for {ep.num_frames} frames")
    return p


#: (episodes, methods) of the parallel evaluation in progress: set before the workers are forked,
#: so they inherit the models and frames (copy-on-write) instead of receiving pickles
_SHARED: tuple | None = None


def _worker_init() -> None:
    import torch

    # one thread: a parallel region of more than one thread, in a process forked from one whose
    # OpenMP team had started, waits forever on threads that the fork did not copy
    torch.set_num_threads(1)


def _predict_group(g: list[int]):
    episodes, methods = _SHARED
    out = {}
    for m in methods:  # in order: an offline method takes the live pass's estimates of these episodes
        t0 = time.perf_counter()
        ps = [np.asarray(p, dtype=np.float64) for p in _run_method(m, [episodes[i] for i in g])]
        out[m.name] = (ps, time.perf_counter() - t0)
    return g, out


def _predict_parallel(episodes, methods, workers: int, groups: list[list[int]]):
    """Yield (episode positions, {method: (predictions, seconds)}) as forked workers finish groups."""
    import multiprocessing as mp

    global _SHARED
    if "fork" not in mp.get_all_start_methods():
        raise RuntimeError("evaluating with workers > 1 needs the 'fork' start method (Linux); use workers=1")
    if _SHARED is not None:
        raise RuntimeError("a parallel evaluation is already running in this process")
    _SHARED = (list(episodes), list(methods))
    try:
        with mp.get_context("fork").Pool(workers, initializer=_worker_init) as pool:
            # the groups hold the longest episodes first: no worker is left with a long one at the end
            yield from pool.imap_unordered(_predict_group, groups)
    finally:
        _SHARED = None


# --------------------------------------------------------------------------------------
# datasets

#: per-frame segment-label columns looked for, in order, and the columns naming the attempt kind
SEGMENT_KEYS = ("segment", "segment_label", "segment_kind")
KIND_KEYS = ("attempt_kind", "episode_kind", "kind")
#: int codes when the dataset names none: wvm_ros.core.sim.scripted.SEGMENT_KINDS and
#: wvm_ros.core.sim.rollout.EPISODE_KINDS (what `wvm sim-collect` writes; it also lists them in
#: meta/wvm_sim_collect.json as segment_codes / kind_codes, which win when present)
DEFAULT_SEGMENT_NAMES = ("progress", "hesitation", "retry", "stuck", "random")
DEFAULT_KIND_NAMES = ("expert", "hesitation", "retry", "stuck", "random")


def label_runs(labels: Sequence[str], kind: str) -> list[tuple[int, int]]:
    """Inclusive (start, end) frame ranges of the maximal runs of `kind` in per-frame labels."""
    runs, start = [], None
    for i, lab in enumerate(labels):
        if lab == kind and start is None:
            start = i
        elif lab != kind and start is not None:
            runs.append((start, i - 1))
            start = None
    if start is not None:
        runs.append((start, len(labels) - 1))
    return runs


def _names_of(feature: dict) -> list[str] | None:
    names = feature.get("names")
    if isinstance(names, dict):  # {"axes": [...]} style
        names = next(iter(names.values()), None)
    if isinstance(names, (list, tuple)) and len(names) > 1 and all(isinstance(n, str) for n in names):
        return list(names)
    return None


def _decode_labels(values, feature: dict | None, default_names: Sequence[str] = DEFAULT_SEGMENT_NAMES) -> list[str]:
    vals = [v.item() if hasattr(v, "item") else v for v in values]
    vals = [v[0] if isinstance(v, (list, tuple)) and len(v) == 1 else v for v in vals]
    if all(isinstance(v, str) for v in vals):
        return [v.lower() for v in vals]
    names = (_names_of(feature) if feature else None) or list(default_names)
    out = []
    for v in vals:
        iv = int(v)
        out.append(names[iv] if 0 <= iv < len(names) else f"code{iv}")
    return out


def _episode_kind(labels: list[str], explicit: str | None) -> str:
    if explicit:
        k = explicit.lower()
        return "expert" if k in ("expert", "progress", "success") else k
    has_h, has_r = "hesitation" in labels, "retry" in labels
    others = sorted(set(labels) - {"progress", "expert", "hesitation", "retry"})
    if others:
        return others[0]  # e.g. "stuck", "random": scored with VOC only
    if has_h and has_r:
        return "mixed"
    return "hesitation" if has_h else "retry" if has_r else "expert"


def load_lerobot_episodes(
    root: str | Path,
    *,
    camera_key: str | None = None,
    gt_key: str | None = "progress",
    segment_key: str | None = None,
    kind_key: str | None = None,
    episodes: Sequence[int] | None = None,
    max_episodes: int | None = None,
    progress: bool = True,
    extra_keys: Sequence[str] = (),
    decode_frames: bool = True,
) -> list[EvalEpisode]:
    """Read a local LeRobot v3 dataset into EvalEpisodes (frames decoded once per episode).

    Columns read:
      * camera_key: a video or image feature (default: `observation.image` if present, else the
        first camera);
      * gt_key: per-frame ground-truth progress (default `progress`, the paper's curve written
        by `wvm sim-collect`); None = no ground truth needed (training), filled with t / (T - 1);
      * segment labels: a per-frame column (`segment`, `segment_label` or `segment_kind`):
        strings, or integer codes named by the feature's `names` (default
        progress / hesitation / retry / stuck / random). Hesitation frames -> the hesitation
        segments; the attempt kind is `attempt_kind` / `episode_kind` / `kind` if the dataset
        has such a column, else derived from the labels (no hesitation or retry: expert);
      * `task` from the dataset's task table, `timestamp` for the streaming estimator;
      * extra_keys: other numeric per-frame columns (e.g. `observation.state`, `coverage`), into
        `EvalEpisode.extras` as (T, d) float64.
    decode_frames=False reads no pixels (frames are (T, 0, 0, 3)): for methods that do not look
    at the camera, such as the privileged-state estimators of wvm_ros.core.state_oracle.
    Raises DatasetError naming the root and what is missing.
    """
    from tqdm.auto import tqdm

    root = Path(root).expanduser()
    if not (root / "meta" / "info.json").is_file():
        raise DatasetError(f"dataset {root}: not a LeRobot dataset (no meta/info.json); expected the root of a "
                           "local LeRobot v3 dataset, e.g. one written by `wvm sim-collect`")
    try:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset
        from lerobot.datasets.video_utils import decode_video_frames

        ds = LeRobotDataset(repo_id=f"local/{root.name}", root=root, video_backend="pyav")
    except Exception as e:  # lerobot raises many kinds on a broken dataset
        raise DatasetError(f"dataset {root}: cannot be opened by lerobot ({type(e).__name__}: {e})") from e
    feats = dict(ds.meta.info.features if hasattr(ds.meta.info, "features") else ds.meta.info["features"])
    cams = list(ds.meta.camera_keys)
    missing = [k for k in extra_keys if k not in feats]
    if missing:
        raise DatasetError(f"dataset {root}: no column {missing[0]!r}; columns are {sorted(feats)}")
    if not decode_frames:
        camera_key = None
    elif camera_key is None:
        if not cams:
            raise DatasetError(f"dataset {root}: no camera (image or video) feature; features are {sorted(feats)}")
        camera_key = "observation.image" if "observation.image" in cams else cams[0]
    elif camera_key not in cams:
        raise DatasetError(f"dataset {root}: camera key {camera_key!r} not found; cameras are {cams}")
    if gt_key is not None and gt_key not in feats:
        raise DatasetError(f"dataset {root}: no ground-truth column {gt_key!r}; columns are {sorted(feats)} "
                           "(name it with --gt-key)")
    segment_key = segment_key or next((k for k in SEGMENT_KEYS if k in feats), None)
    kind_key = kind_key or next((k for k in KIND_KEYS if k in feats), None)
    is_video = camera_key is not None and camera_key in ds.meta.video_keys
    seg_names, kind_names = DEFAULT_SEGMENT_NAMES, DEFAULT_KIND_NAMES
    collect_meta = root / "meta" / "wvm_sim_collect.json"
    if collect_meta.is_file():
        try:
            cm = json.loads(collect_meta.read_text())
            seg_names = tuple(cm.get("segment_codes") or seg_names)
            kind_names = tuple(cm.get("kind_codes") or kind_names)
        except (OSError, ValueError):
            pass

    hf = ds.hf_dataset
    cols = ["episode_index", "frame_index", "timestamp", "task_index"]
    cols += [k for k in (gt_key, segment_key, kind_key, *extra_keys) if k and k not in cols]
    table = hf.select_columns(cols).with_format("numpy")[:]
    ep_col = np.asarray(table["episode_index"]).reshape(-1)
    tasks = ds.meta.tasks
    task_of = {int(row.task_index): str(name) for name, row in tasks.iterrows()} if tasks is not None else {}

    wanted = sorted(set(ep_col.tolist())) if episodes is None else list(episodes)
    if max_episodes is not None:
        wanted = wanted[: max(0, int(max_episodes))]
    out: list[EvalEpisode] = []
    for ep_idx in tqdm(wanted, desc=f"reading {root.name}", unit="episode", disable=not progress):
        rows = np.nonzero(ep_col == ep_idx)[0]
        if len(rows) == 0:
            raise DatasetError(f"dataset {root}: episode {ep_idx} not found")
        order = rows[np.argsort(np.asarray(table["frame_index"]).reshape(-1)[rows])]
        ts = np.asarray(table["timestamp"], dtype=np.float64).reshape(-1)[order]
        T = len(order)
        if not decode_frames:
            frames = np.zeros((T, 0, 0, 3), np.uint8)
        elif is_video:
            meta = ds.meta.episodes[int(ep_idx)]
            offset = float(meta[f"videos/{camera_key}/from_timestamp"])
            path = root / ds.meta.get_video_file_path(int(ep_idx), camera_key)
            frames_t = decode_video_frames(path, [offset + float(t) for t in ts], ds.tolerance_s, "pyav",
                                           return_uint8=True)
            frames = frames_t.permute(0, 2, 3, 1).contiguous().numpy()
        else:
            imgs = [np.asarray(ds[int(i)][camera_key]) for i in order]
            frames = np.stack([(im.transpose(1, 2, 0) * (255 if im.dtype != np.uint8 else 1)).round().astype(np.uint8)
                               if im.shape[0] == 3 else im for im in imgs])
        if gt_key is not None:
            gt = np.asarray(table[gt_key], dtype=np.float64).reshape(len(ep_col), -1)[order, 0]
        else:
            gt = np.arange(T) / max(T - 1, 1)
        labels = (_decode_labels(np.asarray(table[segment_key]).reshape(len(ep_col), -1)[order, 0],
                                 feats.get(segment_key), seg_names)
                  if segment_key else ["progress"] * T)
        explicit = None
        if kind_key:
            explicit = _decode_labels(np.asarray(table[kind_key]).reshape(len(ep_col), -1)[order[:1], 0],
                                      feats.get(kind_key), kind_names)[0]
        task_idx = int(np.asarray(table["task_index"]).reshape(-1)[order[0]])
        out.append(EvalEpisode(
            episode_index=int(ep_idx), task=task_of.get(task_idx, ""), kind=_episode_kind(labels, explicit),
            frames=frames, timestamps=ts - ts[0], gt=gt,
            hesitation_segments=label_runs(labels, "hesitation"), retry_segments=label_runs(labels, "retry"),
            extras={k: np.asarray(table[k], dtype=np.float64).reshape(len(ep_col), -1)[order] for k in extra_keys},
        ))
    if not out:
        raise DatasetError(f"dataset {root}: no episodes to evaluate")
    return out


# --------------------------------------------------------------------------------------
# report writing

def _fmt(v, digits=3):
    return "n/a" if v is None else f"{v:.{digits}f}"


def markdown_table(report_json: dict) -> str:
    rows = [("wvm" if report_json["model"]["name"] == "wvm" else report_json["model"]["name"], report_json["model"])]
    rows += list(report_json["baselines"].items())
    lines = [
        "| method | Expert-VOC (higher better) | Retry-VOC (higher better) | Hesitation-RMSE (lower better) | checkpoint |",
        "|---|---|---|---|---|",
    ]
    for name, s in rows:
        info = s.get("info", {})
        ck = info.get("checkpoint") or info.get("kind") or ""
        cid = info.get("checkpoint_id")
        ck = f"`{ck}`" + (f" ({cid})" if cid else "") if ck else ""
        lines.append(f"| {s['label']} | {_fmt(s['expert_voc'])} | {_fmt(s['retry_voc'])} | "
                     f"{_fmt(s['hesitation_rmse'])} | {ck} |")
    return "\n".join(lines)


def render_markdown(report_json: dict) -> str:
    d = report_json["dataset"]
    kinds = ", ".join(f"{n} {k}" for k, n in d["episodes_by_kind"].items())
    parts = [
        "# Value benchmark",
        "",
        f"Dataset: `{d.get('root', '?')}`: {d['num_episodes']} episodes ({kinds}), {d['num_frames']} frames, "
        f"tasks: {', '.join(d['tasks'])}.",
        "",
        markdown_table(report_json),
        "",
    ]
    beats = report_json.get("beats_blind_clock")
    if beats:
        parts.append("Beats the blind clock (a model counts as good only where it beats the clock on both):")
        parts.append("")
        for n, b in beats.items():
            parts.append(f"- {METHOD_LABELS.get(n, n)}: Retry-VOC {b['retry_voc']}, Hesitation-RMSE {b['hesitation_rmse']}")
        parts.append("")
    if len(d["tasks"]) > 1:
        parts += ["## Per task", "", "| task | method | Expert-VOC | Retry-VOC | Hesitation-RMSE |", "|---|---|---|---|---|"]
        for t, by_m in report_json["per_task"].items():
            for n, m in by_m.items():
                parts.append(f"| {t} | {METHOD_LABELS.get(n, n)} | {_fmt(m.get('expert_voc'))} | "
                             f"{_fmt(m.get('retry_voc'))} | {_fmt(m.get('hesitation_rmse'))} |")
        parts.append("")
    parts.append("Metric definitions: docs/evaluation.md. Per-episode scores: metrics.json.")
    return "\n".join(parts) + "\n"


def _pick_episodes(episodes: Sequence[EvalEpisode], per_kind: int) -> list[EvalEpisode]:
    chosen, seen = [], {}
    for e in episodes:
        if seen.get(e.kind, 0) < per_kind:
            chosen.append(e)
            seen[e.kind] = seen.get(e.kind, 0) + 1
    return chosen


def write_plots(report: EvalReport, out_dir: Path, per_kind: int = 2) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    styles = {"wvm": ("tab:blue", "-"), "wvm_offline": ("tab:cyan", "--"), "wvm_no_video": ("tab:purple", "-"),
              "single_frame": ("tab:orange", "-"), "blind_clock": ("tab:gray", ":")}
    for ep in _pick_episodes(report.episodes, per_kind):
        fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
        x = ep.timestamps if np.all(np.diff(ep.timestamps) > 0) else np.arange(ep.num_frames)
        for a, b in ep.hesitation_segments:
            ax.axvspan(x[a], x[b], color="gold", alpha=0.25, lw=0, label="hesitation")
        for a, b in ep.retry_segments:
            ax.axvspan(x[a], x[b], color="tomato", alpha=0.2, lw=0, label="retry")
        ax.plot(x, ep.gt, color="black", lw=2, label="ground truth")
        for n, r in report.results.items():
            c, ls = styles.get(n, (None, "-"))
            ax.plot(x, r.predictions[ep.episode_index], color=c, ls=ls, lw=1.4, label=r.method.label)
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="upper left")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("time (s)" if x is ep.timestamps else "frame")
        ax.set_ylabel("progress")
        ax.set_title(f"episode {ep.episode_index} ({ep.kind}): {ep.task[:60]}", fontsize=9)
        fig.tight_layout()
        p = out_dir / f"episode_{ep.episode_index:04d}_{ep.kind}.png"
        fig.savefig(p)
        plt.close(fig)
        paths.append(p)
    # summary bars
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2), dpi=100)
    names = list(report.results)
    for ax, key, title in zip(axes, M.METRIC_KEYS, ("Expert-VOC", "Retry-VOC", "Hesitation-RMSE")):
        vals = [report.results[n].aggregate.overall.get(key, math.nan) for n in names]
        ax.bar(range(len(names)), [0 if math.isnan(v) else v for v in vals],
               color=[styles.get(n, ("tab:green",))[0] for n in names])
        ax.set_xticks(range(len(names)), [METHOD_LABELS.get(n, n) for n in names], rotation=30, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.axhline(0, color="black", lw=0.5)
    fig.tight_layout()
    p = out_dir / "summary.png"
    fig.savefig(p)
    plt.close(fig)
    paths.append(p)
    return paths


def write_report(report: EvalReport, out_dir: str | Path, primary: str = "wvm", plots_per_kind: int = 2) -> dict:
    """Write metrics.json, metrics.md and plots/*.png into out_dir; return the JSON dict."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    js = report.to_json(primary)
    (out_dir / "metrics.json").write_text(json.dumps(js, indent=2) + "\n")
    (out_dir / "metrics.md").write_text(render_markdown(js))
    write_plots(report, out_dir / "plots", per_kind=plots_per_kind)
    return js
