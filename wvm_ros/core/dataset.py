"""`ValuedDatasetWriter`: LeRobot v3 datasets (lerobot 0.6.1) with per-frame progress.

One writer serves the simulator collector (`wvm sim-collect`) and live recording (the data
logger): any number of camera keys of any shape, any state / action dimension.

Features written (all per frame):
    <image keys>          video (AV1 via pyav when the encoder is available) or image
    observation.state     float32 (state_dim,)
    action                float32 (action_dim,)
    progress              float32 (1,)   ground-truth or estimated task progress in [0, 1]
    value_chunk           float32 (h,)   values of frames t-h+1 .. t (see groundtruth.value_chunks)
    next.success          bool (1,)
    next.done             bool (1,)
    <extra scalars>       float32 / int64 / bool (1,), e.g. progress_coverage, segment
plus LeRobot's own timestamp, frame_index, episode_index, index, task_index and `task`.

Sidecars (written by `finalize()`):
    <root>/sarm_progress.parquet   lerobot's SARM / RA-BC progress file: columns
        index, episode_index, frame_index (int64), progress_sparse, progress_dense (float32),
        sorted by index, schema metadata reward_model_path (what lerobot 0.6.1's
        `rewards/sarm/compute_rabc_weights.py` writes and `utils/sample_weighting.py` reads)
    <root>/meta/wvm_episodes.jsonl  one JSON object per kept episode: episode_index, length,
        first global index, plus whatever metadata the caller passed (kind, segment, ...).

`progress`, `value_chunk` and extra scalars may be given per frame or replaced for the whole
episode at `end_episode(overrides=...)` (the paper's ground truth needs the episode length,
known only at the end). `end_episode(keep=False)` drops the attempt.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

SARM_PROGRESS_FILE = "sarm_progress.parquet"
EPISODES_SIDECAR = "meta/wvm_episodes.jsonl"
SCALAR_DTYPES = ("float32", "int64", "bool")
_NP = {"float32": np.float32, "int64": np.int64, "bool": np.bool_}


def video_support(vcodec: str = "libsvtav1") -> tuple[bool, str]:
    """Can lerobot encode videos here? Returns (ok, reason)."""
    try:
        import av  # noqa: F401
    except ImportError:
        return False, "PyAV (`av`) is not installed"
    try:
        from lerobot.datasets import detect_available_encoders_pyav

        if not detect_available_encoders_pyav([vcodec]):
            return False, f"the {vcodec} encoder is not available in this PyAV/FFmpeg build"
    except Exception as e:  # pragma: no cover - depends on the installed codecs
        return False, f"probing the {vcodec} encoder failed: {e}"
    return True, f"{vcodec} via PyAV"


def _shape_of(name: str, shape) -> tuple[int, ...]:
    try:
        t = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a shape like (height, width, 3), got {shape!r}") from None
    if len(t) != 3 or t[2] not in (1, 3) or min(t) < 1:
        raise ValueError(f"{name}: expected an image shape (height, width, 1 or 3), got {shape!r}")
    return t


def _names(kind: str, dim_or_names) -> tuple[int, list[str] | None]:
    if isinstance(dim_or_names, (int, np.integer)) and not isinstance(dim_or_names, bool):
        if dim_or_names < 1:
            raise ValueError(f"{kind}: expected a dimension >= 1, got {dim_or_names!r}")
        return int(dim_or_names), None
    names = [str(n) for n in dim_or_names]
    if not names:
        raise ValueError(f"{kind}: expected a dimension or a non-empty list of names, got {dim_or_names!r}")
    return len(names), names


class ValuedDatasetWriter:
    """Record episodes with per-frame progress into a LeRobot v3 dataset."""

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        image_shapes: Mapping[str, Sequence[int]],
        state: int | Sequence[str],
        action: int | Sequence[str],
        fps: int = 10,
        repo_id: str = "local/wvm",
        value_horizon: int = 4,
        extra_scalars: Mapping[str, str] | None = None,
        use_videos: bool | str = "auto",
        robot_type: str | None = None,
        default_task: str = "",
        image_writer_threads: int = 0,
        overwrite: bool = False,
        sarm_source: str = "wvm_ros",
    ):
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        self.root = Path(root)
        if self.root.exists():
            if not overwrite and any(self.root.iterdir()):
                raise FileExistsError(f"dataset root {self.root} exists and is not empty (pass overwrite=True)")
            shutil.rmtree(self.root)
        if not image_shapes:
            raise ValueError("image_shapes: expected at least one camera, e.g. {'observation.image': (96, 96, 3)}")
        if int(fps) < 1:
            raise ValueError(f"fps: expected an int >= 1, got {fps!r}")
        if isinstance(value_horizon, bool) or int(value_horizon) < 1:
            raise ValueError(f"value_horizon: expected an int >= 1, got {value_horizon!r}")
        self.fps = int(fps)
        self.h = int(value_horizon)
        self.default_task = default_task
        self.sarm_source = sarm_source
        self.image_shapes = {str(k): _shape_of(k, v) for k, v in image_shapes.items()}
        self.state_dim, state_names = _names("state", state)
        self.action_dim, action_names = _names("action", action)
        self.extra_scalars = dict(extra_scalars or {})
        for k, dt in self.extra_scalars.items():
            if dt not in SCALAR_DTYPES:
                raise ValueError(f"extra scalar {k!r}: expected dtype one of {SCALAR_DTYPES}, got {dt!r}")

        # the SVT-AV1 encoder prints ~20 info lines per episode unless told otherwise
        os.environ.setdefault("SVT_LOG", "1")
        if use_videos == "auto":
            ok, reason = video_support()
            self.use_videos = ok
            self.video_note = reason if ok else f"storing images instead of videos: {reason}"
            if not ok:
                log.warning("ValuedDatasetWriter: %s", self.video_note)
        elif use_videos is True:
            ok, reason = video_support()
            if not ok:
                raise RuntimeError(f"use_videos=True but videos cannot be encoded here: {reason}")
            self.use_videos, self.video_note = True, reason
        elif use_videos is False:
            self.use_videos, self.video_note = False, "images (videos not requested)"
        else:
            raise ValueError(f"use_videos: expected True, False or 'auto', got {use_videos!r}")

        img_dtype = "video" if self.use_videos else "image"
        features: dict[str, dict] = {}
        for k, shp in self.image_shapes.items():
            features[k] = {"dtype": img_dtype, "shape": shp, "names": ["height", "width", "channels"]}
        reserved = {"observation.state", "action", "progress", "value_chunk", "next.success", "next.done", "task"}
        clash = reserved & (set(self.image_shapes) | set(self.extra_scalars))
        if clash:
            raise ValueError(f"feature names {sorted(clash)} are reserved by ValuedDatasetWriter")
        features["observation.state"] = {"dtype": "float32", "shape": (self.state_dim,), "names": state_names}
        features["action"] = {"dtype": "float32", "shape": (self.action_dim,), "names": action_names}
        features["progress"] = {"dtype": "float32", "shape": (1,), "names": None}
        features["value_chunk"] = {"dtype": "float32", "shape": (self.h,), "names": None}
        features["next.success"] = {"dtype": "bool", "shape": (1,), "names": None}
        features["next.done"] = {"dtype": "bool", "shape": (1,), "names": None}
        for k, dt in self.extra_scalars.items():
            features[k] = {"dtype": dt, "shape": (1,), "names": None}
        self.features = features

        self.root.parent.mkdir(parents=True, exist_ok=True)
        self.dataset = LeRobotDataset.create(
            repo_id=repo_id,
            fps=self.fps,
            features=features,
            root=self.root,
            robot_type=robot_type,
            use_videos=self.use_videos,
            image_writer_threads=int(image_writer_threads),
            # only used to decode while writing; skips lerobot's noisy torchcodec probe
            video_backend="pyav",
        )
        self.repo_id = repo_id
        self._frames = 0
        self._sarm: list[dict[str, np.ndarray]] = []
        self._episodes: list[dict] = []
        self._finalized = False

    # --- recording ---------------------------------------------------------------------
    @property
    def num_episodes(self) -> int:
        return int(self.dataset.meta.total_episodes)

    @property
    def num_frames(self) -> int:
        return int(self.dataset.meta.total_frames)

    @property
    def pending_frames(self) -> int:
        return self._frames

    def add_frame(
        self,
        images: Mapping[str, np.ndarray],
        state,
        action,
        progress: float = 0.0,
        value_chunk=None,
        success: bool = False,
        done: bool = False,
        task: str | None = None,
        **extras,
    ) -> None:
        """Buffer one frame of the open episode (images go to disk right away)."""
        if self._finalized:
            raise RuntimeError("ValuedDatasetWriter.add_frame: the dataset is finalized")
        frame: dict = {}
        if set(images) != set(self.image_shapes):
            raise ValueError(f"images: expected keys {sorted(self.image_shapes)}, got {sorted(images)}")
        for k, img in images.items():
            a = np.asarray(img)
            if a.shape != self.image_shapes[k] or a.dtype != np.uint8:
                raise ValueError(f"image {k!r}: expected uint8 {self.image_shapes[k]}, got {a.dtype} {a.shape}")
            frame[k] = a
        frame["observation.state"] = self._vec("state", state, self.state_dim)
        frame["action"] = self._vec("action", action, self.action_dim)
        frame["progress"] = self._vec("progress", [progress], 1)
        chunk = np.full(self.h, float(progress)) if value_chunk is None else value_chunk
        frame["value_chunk"] = self._vec("value_chunk", chunk, self.h)
        frame["next.success"] = np.array([bool(success)])
        frame["next.done"] = np.array([bool(done)])
        missing = set(self.extra_scalars) - set(extras)
        unknown = set(extras) - set(self.extra_scalars)
        if missing or unknown:
            raise ValueError(f"extra scalars: missing {sorted(missing)}, unknown {sorted(unknown)} "
                             f"(declared: {sorted(self.extra_scalars)})")
        for k, v in extras.items():
            dt = self.extra_scalars[k]
            try:
                frame[k] = np.array([v], dtype=_NP[dt]).reshape(1)
            except (TypeError, ValueError):
                raise ValueError(f"extra scalar {k!r}: expected one {dt} value, got {v!r}") from None
        frame["task"] = self.default_task if task is None else str(task)
        self.dataset.add_frame(frame)
        self._frames += 1

    @staticmethod
    def _vec(name: str, value, dim: int) -> np.ndarray:
        """`value` as float32 (dim,); a ValueError naming `name` says what is wrong with it (a
        rejected frame is not added: the open episode stays as it was)."""
        try:
            a = np.asarray(value, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected {dim} finite numbers, got {value!r}") from None
        if a.shape != (dim,):
            raise ValueError(f"{name}: expected {dim} finite numbers, got {a.size}: {value!r}")
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            where = bad[:8].tolist()
            raise ValueError(f"{name}: expected {dim} finite numbers, got {bad.size} NaN/inf (at index "
                             f"{where}{' ...' if bad.size > len(where) else ''}): {value!r}")
        return a

    def end_episode(
        self,
        keep: bool = True,
        *,
        overrides: Mapping[str, Sequence] | None = None,
        metadata: Mapping | None = None,
        sarm_progress: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> int | None:
        """Close the open episode. keep=False drops it. Returns the episode index or None.

        overrides: per-frame arrays (length = episode length) replacing what add_frame got,
            for `progress`, `value_chunk`, `next.success`, `next.done` or extra scalars.
        metadata: JSON-serialisable facts about the episode for meta/wvm_episodes.jsonl.
        sarm_progress: (sparse, dense) per-frame progress for sarm_progress.parquet;
            default: the episode's `progress` for both.
        """
        if self._frames == 0:
            if keep:
                raise RuntimeError("ValuedDatasetWriter.end_episode: the open episode has no frames")
            return None
        if not keep:
            self.discard_episode()
            return None
        n = self._frames
        buf = self.dataset.writer.episode_buffer
        for key, values in (overrides or {}).items():
            ft = self.features.get(key)
            if ft is None or ft["dtype"] in ("image", "video") or key in ("observation.state", "action"):
                raise ValueError(f"overrides: {key!r} is not a per-frame value this writer can replace")
            arr = np.asarray(values, dtype=_NP.get(ft["dtype"], np.float32))
            arr = arr.reshape(n, *ft["shape"]) if arr.size == n * int(np.prod(ft["shape"])) else None
            if arr is None:
                raise ValueError(f"overrides[{key!r}]: expected {n} frames of shape {ft['shape']}")
            if arr.dtype == np.float32 and not np.all(np.isfinite(arr)):
                raise ValueError(f"overrides[{key!r}]: expected finite numbers")
            buf[key] = [row for row in arr]
        progress = np.stack(buf["progress"]).reshape(n).astype(np.float32)
        if sarm_progress is None:
            sparse = dense = progress
        else:
            sparse = np.asarray(sarm_progress[0], dtype=np.float32).reshape(-1)
            dense = np.asarray(sarm_progress[1], dtype=np.float32).reshape(-1)
            if sparse.shape != (n,) or dense.shape != (n,):
                raise ValueError(f"sarm_progress: expected two arrays of {n} frames")
        episode_index = self.num_episodes
        first = self.num_frames
        self.dataset.save_episode()
        self._sarm.append({
            "index": np.arange(first, first + n, dtype=np.int64),
            "episode_index": np.full(n, episode_index, dtype=np.int64),
            "frame_index": np.arange(n, dtype=np.int64),
            "progress_sparse": sparse,
            "progress_dense": dense,
        })
        record = {"episode_index": episode_index, "length": n, "index_from": first}
        record.update(dict(metadata or {}))
        self._episodes.append(record)
        self._frames = 0
        return episode_index

    def discard_episode(self) -> None:
        """Drop the open episode (frames and their temporary images)."""
        if self.dataset.has_pending_frames():
            self.dataset.clear_episode_buffer(delete_images=True)
        self._frames = 0

    def finalize(self) -> Path:
        """Drop an unfinished episode, close the parquet files, write the sidecars."""
        if self._finalized:
            return self.root
        self.discard_episode()
        self.dataset.finalize()
        self._write_sarm()
        side = self.root / EPISODES_SIDECAR
        side.parent.mkdir(parents=True, exist_ok=True)
        with open(side, "w") as f:
            for rec in self._episodes:
                f.write(json.dumps(rec, default=_json_default) + "\n")
        # lerobot leaves the (now empty) temporary image folders behind when encoding videos
        images = self.root / "images"
        if self.use_videos and images.is_dir() and not any(p.is_file() for p in images.rglob("*")):
            shutil.rmtree(images)
        self._finalized = True
        return self.root

    def _write_sarm(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = ("index", "episode_index", "frame_index", "progress_sparse", "progress_dense")
        if self._sarm:
            data = {c: np.concatenate([e[c] for e in self._sarm]) for c in cols}
        else:
            data = {c: np.zeros(0, dtype=np.int64 if "index" in c else np.float32) for c in cols}
        order = np.argsort(data["index"], kind="stable")
        table = pa.table({c: data[c][order] for c in cols})
        table = table.replace_schema_metadata({b"reward_model_path": self.sarm_source.encode()})
        pq.write_table(table, self.root / SARM_PROGRESS_FILE)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.finalize()
        return False


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_episode_metadata(root: str | os.PathLike) -> list[dict]:
    """The per-episode records of meta/wvm_episodes.jsonl (empty list if absent)."""
    p = Path(root) / EPISODES_SIDECAR
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
