"""Training the WVM on local LeRobot v3 datasets (ROS-free).

    cfg = TrainConfig(datasets=["data/pusht-train"], output="runs/wvm-tiny", steps=3000)
    train(cfg)                      # or `wvm train --dataset data/pusht-train --output runs/wvm-tiny`

Data: episodes are read with lerobot (offline, `root=`; via wvm_ros.core.evaluation's loader,
which decodes each episode's video once), resized to the preset's image size and kept in
memory as uint8. Targets: the dataset's `progress` column when present, else v_t = t / (T - 1).

A training example is a clip of 1 + 2h frames spaced 1 / sample_fps apart (by the dataset's
fps): the prefix frame, h current frames (their values are the targets) and h future frames
(the video flow-matching target). Indices before the episode start repeat the first frame and
the prefix value there is the first frame's value (as the streaming estimator does); indices
after the end repeat the last frame.

Transforms (WVM_NOTES.md, "Training"):
* video rewinding (after ReWiND): a clip is kept (rising), made a plateau (every frame is the
  prefix frame) or reversed (descending), with probabilities 1 - r - p, p, r (r = rewind ratio
  0.5, p = plateau ratio 0.1); targets follow the frames shown;
* prefix randomisation: with probability 0.5 the prefix value is replaced by U[0, 1]. The
  prefix token is clean conditioning and never carries loss; the h value tokens do.

Beyond the paper (all off by default, the shipped checkpoint's card says what it used):
* segment weighting (`segment_weight`): clips whose current frames touch a labelled
  hesitation / retry segment are drawn w times as often (they are a few % of the frames);
  with `segment_loss="uniform"` their value loss is weighted by 1 / w (importance weights, so
  the value is fit as under uniform sampling; the extra draws only add examples);
* an EMA of the weights (`ema_decay`), saved as the checkpoint's weights;
* prefix noise (`prefix_noise`): a prefix value that is not randomised gets N(0, sigma^2)
  added (clipped to [0, 1]), so that the model learns a prefix as live inference gives it (its
  own earlier estimate, with that estimate's error) rather than the exact ground truth
  (scheduled sampling's idea, without the second forward pass);
* image flips (`flip`): with probability 0.5 every frame of a clip (prefix, current and future
  frames alike) is mirrored (`horizontal`, `vertical`, `transpose`: about the main diagonal,
  `anti-transpose`: about the other one); targets are unchanged. Only sound where the task, the
  scene's physics and the policy that made the data are symmetric under that mirror, so that a
  mirrored attempt is one the data could have held with the same progress: for the PushT
  simulator (goal T at 45 degrees) `anti-transpose` is such a symmetry, to the bit for the
  scripted expert's trajectories (tests/test_train.py::test_pusht_anti_transpose_symmetry);
  on a real cell (an arm mounted on one side) almost never;
* a validation split (`val_dataset`): benchmark metrics through the streaming estimator every
  `val_every` steps, and the best checkpoint by VAL_SCORE kept in <output>/best.
* an elapsed-time input (model config `elapsed_input`): each clip also carries the seconds
  from the episode's first frame to its newest current frame (unchanged by rewinding: time
  passes while a rewound clip shows progress falling or flat).

Loss L_value + lambda * L_video (lambda 0 = the "without video loss" ablation); AdamW
(0.9, 0.95), weight decay 0, linear warm-up then cosine to 0.1 x lr, grad clip 1.0.
A non-finite loss stops training with the step (TrainingDiverged); nothing is saved then, and
earlier checkpoints stay intact (files are written atomically).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from wvm_ros.core.model import (
    TRAINING_STATE, WEIGHTS, build_model, load_value_model, preset_config, read_checkpoint_config, save_checkpoint,
)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; `step` says when."""

    def __init__(self, step: int, losses: dict[str, float]):
        self.step = step
        self.losses = losses
        super().__init__(f"non-finite loss at step {step} ({', '.join(f'{k}={v}' for k, v in losses.items())}); "
                         "stopped without saving (earlier checkpoints are intact)")


class TrainDataError(ValueError):
    """A dataset cannot be used for training (missing, no camera key, no usable episodes)."""


@dataclass
class TrainConfig:
    datasets: list[str] = field(default_factory=list)
    output: str = ""
    preset: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)   # e.g. {"sample_fps": 2.0}
    camera_key: str | None = None
    progress_key: str = "progress"       # used when the dataset has it, else v_t = t / (T - 1)
    max_episodes: int | None = None
    steps: int = 3000
    batch_size: int = 32
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 200
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    lambda_video: float = 1.0
    prefix_random_p: float = 0.5
    # SD of the Gaussian noise added to a prefix value that is not randomised (0 = off, the paper)
    prefix_noise: float = 0.0
    rewind_ratio: float = 0.5
    plateau_ratio: float = 0.1
    # mirror every frame of a clip with probability 0.5 (targets unchanged): "none" (the paper),
    # or one of FLIPS where the task is symmetric under it (module docstring)
    flip: str = "none"
    seed: int = 0
    save_every: int = 500
    log_every: int = 25
    # clips whose current frames touch a labelled non-progress segment (hesitation, retry, ...)
    # are drawn this many times as often as others (1 = uniform over frames, the paper's sampling)
    segment_weight: float = 1.0
    # how the value loss counts those clips: "sampled" (as drawn: w times as much) or "uniform"
    # (each clip's value loss weighted by 1 / w, so the value is fit as under uniform sampling and
    # the extra draws only add examples; the video loss is not weighted)
    segment_loss: str = "sampled"
    # exponential moving average of the weights (0 = off); the saved model.safetensors then holds
    # the averaged weights, training_state.pt the raw ones. Warm-up: decay_t = min(d, (1+t)/(10+t))
    ema_decay: float = 0.0
    # validation split (a local LeRobot dataset with ground truth, e.g. from `wvm sim-collect`):
    # every val_every steps (0 = at each save) the benchmark metrics are measured on it through the
    # streaming estimator, logged, and the best checkpoint by VAL_SCORE is kept in <output>/best
    val_dataset: str | None = None
    val_every: int = 0
    val_max_episodes: int | None = None
    threads: int | None = None
    # folder for the decoded, resized training frames (uint8, memory-mapped; reused by later runs
    # on the same data). None: the frames are held in memory (1 + h clips are drawn from them)
    frame_cache: str | None = None
    device: str = "cpu"                   # "cpu", "cuda", "cuda:N" (frames stay on the host)
    resume: bool = False
    progress_bar: bool = True

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        self.datasets = [str(d) for d in self.datasets]
        r, pl = self.rewind_ratio, self.plateau_ratio
        checks = [("steps", self.steps, ">= 1", self.steps >= 1),
                  ("batch_size", self.batch_size, ">= 1", self.batch_size >= 1),
                  ("lr", self.lr, "> 0", self.lr > 0),
                  ("min_lr_ratio", self.min_lr_ratio, "in [0, 1]", 0 <= self.min_lr_ratio <= 1),
                  ("warmup_steps", self.warmup_steps, ">= 0", self.warmup_steps >= 0),
                  ("grad_clip", self.grad_clip, "> 0", self.grad_clip > 0),
                  ("lambda_video", self.lambda_video, ">= 0", self.lambda_video >= 0),
                  ("segment_weight", self.segment_weight, "> 0", self.segment_weight > 0),
                  ("ema_decay", self.ema_decay, "in [0, 1)", 0 <= self.ema_decay < 1),
                  ("segment_loss", self.segment_loss, "'sampled' or 'uniform'", self.segment_loss in ("sampled", "uniform")),
                  ("val_every", self.val_every, ">= 0", self.val_every >= 0),
                  ("prefix_random_p", self.prefix_random_p, "in [0, 1]", 0 <= self.prefix_random_p <= 1),
                  ("prefix_noise", self.prefix_noise, "in [0, 1]", 0 <= self.prefix_noise <= 1),
                  ("rewind_ratio + plateau_ratio", f"{r} + {pl}", "each >= 0, sum <= 1", 0 <= r and 0 <= pl and r + pl <= 1),
                  ("flip", self.flip, f"one of {', '.join(repr(f) for f in FLIPS)}", self.flip in FLIPS)]
        # comparisons with NaN are False, so NaN fails every check above
        bad = [f"{name}: expected {want}, got {got}" for name, got, want, ok in checks if not ok]
        if bad:
            raise ValueError(f"invalid training hyper-parameters: {'; '.join(bad)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training config keys: {unknown}; expected some of {sorted(names)}")
        return cls(**d)


# ---------------------------------------------------------------------------------------
# transforms (pure functions of index lists; tested on their own)

RISE, PLATEAU, DESCEND = "rise", "plateau", "descend"

FLIPS = ("none", "horizontal", "vertical", "transpose", "anti-transpose")


def flip_frames(frames: torch.Tensor, flip: str) -> torch.Tensor:
    """Mirror images laid out [..., H, W, C] (channels last, as stored): `horizontal` (x -> W-1-x),
    `vertical` (y -> H-1-y), `transpose` (x <-> y), `anti-transpose` (x -> W-1-y, y -> H-1-x);
    the two transposes need square images."""
    if flip not in FLIPS:
        raise ValueError(f"flip: expected one of {FLIPS}, got {flip!r}")
    if flip == "none":
        return frames
    if frames.dim() < 3:
        raise ValueError(f"flip_frames: expected [..., H, W, C] images, got shape {tuple(frames.shape)}")
    h, w = frames.dim() - 3, frames.dim() - 2
    if flip == "horizontal":
        return frames.flip(w)
    if flip == "vertical":
        return frames.flip(h)
    if frames.shape[h] != frames.shape[w]:
        raise ValueError(f"flip {flip!r} needs square images, got H x W = {frames.shape[h]} x {frames.shape[w]}")
    if flip == "transpose":
        return frames.transpose(h, w)
    return frames.flip(h, w).transpose(h, w)


def choose_rewind_mode(rng: random.Random, rewind_ratio: float, plateau_ratio: float) -> str:
    u = rng.random()
    if u < rewind_ratio:
        return DESCEND
    if u < rewind_ratio + plateau_ratio:
        return PLATEAU
    return RISE


def clip_indices(end: int, T: int, h: int, stride: int) -> np.ndarray:
    """Frame indices of a clip whose last current frame is `end`: [prefix, h current, h future],
    clamped to [0, T - 1]."""
    offsets = np.arange(-h, h + 1) * stride
    return np.clip(end + offsets, 0, T - 1)


def rewind_indices(idx: np.ndarray, mode: str) -> np.ndarray:
    """Make a clip rising (kept), a plateau (every frame the prefix frame) or descending (reversed)."""
    if mode == RISE:
        return idx.copy()
    if mode == PLATEAU:
        return np.full_like(idx, idx[0])
    if mode == DESCEND:
        return idx[::-1].copy()
    raise ValueError(f"rewind mode must be {RISE!r}, {PLATEAU!r} or {DESCEND!r}, got {mode!r}")


def randomize_prefix(prefix_value: float, rng: random.Random, p: float, noise: float = 0.0) -> tuple[float, bool]:
    """With probability p the prefix value is replaced by U[0, 1]; otherwise, with noise > 0, it
    gets N(0, noise^2) added, clipped to [0, 1]. Returns (value, replaced). With noise 0 no
    further random number is drawn (runs without prefix noise draw the same clips as before)."""
    if rng.random() < p:
        return rng.random(), True
    if noise > 0:
        return min(1.0, max(0.0, prefix_value + rng.gauss(0.0, noise))), False
    return prefix_value, False


# ---------------------------------------------------------------------------------------
# data


@dataclass
class EpisodeStore:
    frames: Any                     # [N, H, W, 3] uint8, all episodes concatenated: a numpy array,
    #                                 a read-only np.memmap of a frame cache, or a torch tensor
    values: np.ndarray              # [N] float32 targets
    starts: np.ndarray              # [E] first row of each episode
    lengths: np.ndarray             # [E]
    text_ids: np.ndarray            # [E] index into texts
    texts: list[str]
    stride: int
    skipped_short: int = 0
    sources: list[dict] = field(default_factory=list)
    segment_mask: np.ndarray | None = None  # [N] bool: frame inside a labelled non-progress segment
    fps: float | None = None        # frame rate of the episodes (for the elapsed-time input)

    @property
    def num_episodes(self) -> int:
        return len(self.starts)


def _resize_uint8(frames: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    t = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t, size=tuple(size), mode="area")
    return t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


FRAME_CACHE_FORMAT = 1


def _dataset_fingerprint(root: Path) -> list:
    """What identifies a dataset's content for the frame cache: its info.json and the name, size
    and modification time of every file under meta/, data/ and videos/."""
    files = []
    for sub in ("meta", "data", "videos"):
        d = root / sub
        if d.is_dir():
            for f in sorted(d.rglob("*")):
                if f.is_file():
                    st = f.stat()
                    files.append([str(f.relative_to(root)), st.st_size, st.st_mtime_ns])
    return [str(root.resolve()), files]


def frame_cache_key(datasets: Sequence[str], image_size, h: int, sample_fps: float, camera_key: str | None,
                    progress_key: str, max_episodes: int | None) -> str:
    import hashlib

    doc = {"format": FRAME_CACHE_FORMAT, "image_size": list(image_size), "h": h, "sample_fps": sample_fps,
           "camera_key": camera_key, "progress_key": progress_key, "max_episodes": max_episodes,
           "datasets": [_dataset_fingerprint(Path(d).expanduser()) for d in datasets]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _open_frame_cache(folder: Path, log) -> EpisodeStore | None:
    meta_p, idx_p, frames_p = folder / "meta.json", folder / "index.npz", folder / "frames.u8"
    if not (meta_p.is_file() and idx_p.is_file() and frames_p.is_file()):
        return None
    meta = json.loads(meta_p.read_text())
    shape = tuple(meta["frames_shape"])
    if frames_p.stat().st_size != int(np.prod(shape)):
        log(f"[wvm train] frame cache {folder}: frames.u8 is {frames_p.stat().st_size} bytes, expected "
            f"{int(np.prod(shape))} for {shape}; rebuilding it")
        return None
    idx = np.load(idx_p)
    return EpisodeStore(frames=np.memmap(frames_p, dtype=np.uint8, mode="r", shape=shape), values=idx["values"],
                        starts=idx["starts"], lengths=idx["lengths"], text_ids=idx["text_ids"], texts=meta["texts"],
                        stride=int(meta["stride"]), skipped_short=int(meta["skipped_short"]), sources=meta["sources"],
                        segment_mask=idx["segment_mask"], fps=meta["fps"])


def _remove_stale_partials(parent: Path, key: str, log) -> None:
    """Delete the partial caches of this key that a killed run left (their process is gone)."""
    import shutil

    for d in parent.glob(f".{key}.tmp-*"):
        try:
            os.kill(int(d.name.rsplit("-", 1)[1]), 0)
            continue                                   # its run is still going
        except (ValueError, ProcessLookupError):
            pass
        except PermissionError:                        # alive, another user's
            continue
        log(f"[wvm train] removing {d}: a partial frame cache left by a run that stopped")
        shutil.rmtree(d, ignore_errors=True)


def load_training_data(datasets: Sequence[str], image_size: tuple[int, int], h: int, sample_fps: float,
                       camera_key: str | None = None, progress_key: str = "progress",
                       max_episodes: int | None = None, progress: bool = True, log=print,
                       frame_cache: str | os.PathLike | None = None) -> EpisodeStore:
    """Decode the datasets' frames at the model's input size, with targets and segment labels.

    frame_cache: a folder for a memory-mapped copy of the decoded frames, keyed by the datasets'
    content and the settings above; a later call with the same key opens it instead of decoding
    again. The training process then holds only the pages it reads (the OS page cache keeps the
    rest), so a dataset larger than the memory can be trained on. Without it the frames are held
    in one array in memory (N x H x W x 3 bytes)."""
    import shutil

    if not datasets:
        raise TrainDataError("no training dataset given (expected one or more local LeRobot v3 dataset roots)")
    roots = [Path(r).expanduser() for r in datasets]
    for root_p in roots:
        if not (root_p / "meta" / "info.json").is_file():
            raise TrainDataError(f"dataset {root_p}: not a LeRobot dataset (no meta/info.json); expected the root of a "
                                 "local LeRobot v3 dataset, e.g. one written by `wvm sim-collect`")
    cache_dir = final_dir = sink = None
    if frame_cache is not None:
        key = frame_cache_key(datasets, image_size, h, sample_fps, camera_key, progress_key, max_episodes)
        final_dir = Path(frame_cache).expanduser() / key
        cached = _open_frame_cache(final_dir, log)
        if cached is not None:
            gb = cached.frames.nbytes / 1e9
            log(f"[wvm train] frames from the cache {final_dir} ({len(cached.frames)} frames, {gb:.2f} GB, memory-mapped)")
            return cached
        if final_dir.exists():   # incomplete or damaged (a complete one opens above): start it again
            log(f"[wvm train] frame cache {final_dir}: incomplete, decoding again")
            shutil.rmtree(final_dir, ignore_errors=True)
        total = sum(int(json.loads((r / "meta" / "info.json").read_text()).get("total_frames", 0)) for r in roots)
        need = total * int(image_size[0]) * int(image_size[1]) * 3
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(final_dir.parent).free
        if need > free:
            raise TrainDataError(f"frame cache {final_dir.parent}: the decoded frames need up to {need / 1e9:.1f} GB "
                                 f"({total} frames at {image_size[0]} x {image_size[1]}), the disk has "
                                 f"{free / 1e9:.1f} GB free; free space or choose another --frame-cache folder")
        _remove_stale_partials(final_dir.parent, key, log)
        cache_dir = final_dir.parent / f".{key}.tmp-{os.getpid()}"
        shutil.rmtree(cache_dir, ignore_errors=True)
        cache_dir.mkdir()
        sink = open(cache_dir / "frames.u8", "wb")
        log(f"[wvm train] decoding {total} frames into the frame cache {final_dir} (up to {need / 1e9:.2f} GB)")
    try:
        store_parts = _read_datasets(roots, image_size, h, sample_fps, camera_key, progress_key, max_episodes,
                                     progress, log, sink=sink)
    except BaseException:
        if cache_dir is not None:
            sink.close()
            shutil.rmtree(cache_dir, ignore_errors=True)
        raise
    pieces, n_rows, fields = store_parts
    H, W = int(image_size[0]), int(image_size[1])
    if cache_dir is None:
        # one array, filled piece by piece (each piece freed once copied): no second full copy
        frames = np.empty((n_rows, H, W, 3), dtype=np.uint8)
        row = 0
        while pieces:
            p = pieces.pop(0)
            frames[row:row + len(p)] = p
            row += len(p)
        return EpisodeStore(frames=frames, **fields)
    sink.close()
    np.savez(cache_dir / "index.npz", values=fields["values"], starts=fields["starts"], lengths=fields["lengths"],
             text_ids=fields["text_ids"], segment_mask=fields["segment_mask"])
    meta = {"format": FRAME_CACHE_FORMAT, "frames_shape": [n_rows, H, W, 3], "texts": fields["texts"],
            "stride": fields["stride"], "skipped_short": fields["skipped_short"], "sources": fields["sources"],
            "fps": fields["fps"]}
    (cache_dir / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")   # written last: marks it complete
    try:
        os.replace(cache_dir, final_dir)
    except OSError:   # another run finished the same cache first: use that one
        shutil.rmtree(cache_dir, ignore_errors=True)
    store = _open_frame_cache(final_dir, log)
    if store is None:
        raise TrainDataError(f"frame cache {final_dir}: could not be read back after writing it")
    log(f"[wvm train] frame cache {final_dir}: {n_rows} frames, {store.frames.nbytes / 1e9:.2f} GB")
    return store


def _read_datasets(roots, image_size, h, sample_fps, camera_key, progress_key, max_episodes, progress, log,
                   sink=None):
    """Read every episode; frames go to `sink` (a binary file) when given, else are returned as a
    list of uint8 arrays. Returns (pieces, number of frames, the EpisodeStore fields but frames)."""
    from wvm_ros.core.evaluation import DatasetError, load_lerobot_episodes

    pieces: list[np.ndarray] = []
    values_all: list[np.ndarray] = []
    masks_all: list[np.ndarray] = []
    starts, lengths, text_ids, texts = [], [], [], []
    skipped = 0
    sources = []
    row = 0
    stride = None
    fps_all = None
    for root_p in roots:
        info = json.loads((root_p / "meta" / "info.json").read_text())
        fps = float(info.get("fps", 0)) or None
        if fps is None:
            raise TrainDataError(f"dataset {root_p}: meta/info.json has no fps")
        s = max(1, int(round(fps / sample_fps)))
        if abs(fps / sample_fps - s) > 1e-3:
            log(f"[wvm train] note: {root_p.name}: {fps} fps is not a multiple of sample_fps {sample_fps}; "
                f"using a stride of {s} frames ({fps / s:.3f} Hz)")
        if stride is None:
            stride = s
            fps_all = fps
        elif s != stride:
            raise TrainDataError(f"dataset {root_p}: {fps} fps gives a frame stride of {s}, other datasets {stride}; "
                                 "train on datasets of one fps")
        gt_key = progress_key if progress_key in info.get("features", {}) else None
        if gt_key is None:
            log(f"[wvm train] {root_p.name}: no {progress_key!r} column; targets are v_t = t / (T - 1)")
        n_eps = int(info.get("total_episodes", 0))
        wanted = list(range(n_eps))
        if max_episodes is not None:
            wanted = wanted[:max_episodes]
        min_len = h * s + 1
        n_used = 0
        for b in range(0, len(wanted), 16):   # decode in batches to bound memory (frames resized at once)
            try:
                eps = load_lerobot_episodes(root_p, camera_key=camera_key, gt_key=gt_key, episodes=wanted[b:b + 16],
                                            progress=False)
            except DatasetError as e:
                raise TrainDataError(str(e)) from e
            for ep in eps:
                T = ep.num_frames
                if T < min_len:
                    skipped += 1
                    continue
                if ep.task not in texts:
                    texts.append(ep.task)
                frames = _resize_uint8(ep.frames, image_size).numpy()
                if sink is not None:
                    sink.write(np.ascontiguousarray(frames).tobytes())
                else:
                    pieces.append(frames)
                values_all.append(np.clip(np.asarray(ep.gt, dtype=np.float32), 0.0, 1.0))
                mask = np.zeros(T, dtype=bool)
                for a, b_ in list(ep.hesitation_segments) + list(ep.retry_segments):
                    mask[int(a):int(b_) + 1] = True
                masks_all.append(mask)
                starts.append(row)
                lengths.append(T)
                text_ids.append(texts.index(ep.task))
                row += T
                n_used += 1
            del eps
            if progress:
                log(f"[wvm train] {root_p.name}: read {min(b + 16, len(wanted))}/{len(wanted)} episodes")
        sources.append({"root": str(root_p), "episodes": n_used, "fps": fps, "targets": gt_key or "t/(T-1)"})
    if skipped:
        log(f"[wvm train] skipped {skipped} episodes shorter than one window ({h} x {stride} + 1 frames)")
    if not starts:
        raise TrainDataError(f"no usable episodes in {[str(r) for r in roots]} (skipped {skipped} shorter than one window)")
    fields = dict(values=np.concatenate(values_all), starts=np.array(starts), lengths=np.array(lengths),
                  text_ids=np.array(text_ids), texts=texts, stride=int(stride), skipped_short=skipped,
                  sources=sources, segment_mask=np.concatenate(masks_all), fps=fps_all)
    return pieces, row, fields


def clip_end_weights(store: EpisodeStore, h: int, segment_weight: float) -> np.ndarray | None:
    """Sampling probabilities of clip ends over all frames of `store`, or None for the uniform
    sampling (segment_weight 1, or no labelled segments).

    A clip ending at frame `end` has its h current frames at end - (h - 1) * stride ... end; it gets
    weight `segment_weight` when any of them lies in a labelled non-progress segment, else 1."""
    mask = store.segment_mask
    if segment_weight == 1.0 or mask is None or not mask.any():
        return None
    span = (h - 1) * store.stride
    w = np.ones(len(mask), dtype=np.float64)
    for e, (a, T) in enumerate(zip(store.starts, store.lengths)):
        m = mask[a:a + T]
        if not m.any():
            continue
        # touched[end] = any(m[end - span : end + 1])
        c = np.concatenate([[0], np.cumsum(m)])
        ends = np.arange(T)
        touched = (c[ends + 1] - c[np.maximum(0, ends - span)]) > 0
        w[a:a + T][touched] = segment_weight
    return w / w.sum()


class ClipSampler:
    """Random training clips from an EpisodeStore with rewinding and prefix randomisation."""

    def __init__(self, store: EpisodeStore, h: int, cfg: TrainConfig, seed: int):
        self.store = store
        self.h = h
        self.cfg = cfg
        self.rng = random.Random(seed)
        self.weights = store.lengths / store.lengths.sum()
        self.np_rng = np.random.default_rng(seed)
        self.row_p = clip_end_weights(store, h, cfg.segment_weight)
        if cfg.flip in ("transpose", "anti-transpose") and store.frames.shape[1] != store.frames.shape[2]:
            raise ValueError(f"flip {cfg.flip!r} needs square training frames, got H x W = "
                             f"{store.frames.shape[1]} x {store.frames.shape[2]} (set the model's image_size square)")

    def state(self) -> dict:
        return {"rng": self.rng.getstate(), "np_rng": self.np_rng.bit_generator.state}

    def set_state(self, st: dict) -> None:
        self.rng.setstate(st["rng"])
        self.np_rng.bit_generator.state = st["np_rng"]

    def sample(self, batch_size: int, with_weights: bool = False):
        """A batch (frames, prefix, targets, text_ids, elapsed); with_weights: also the clips'
        value-loss weights [B] (1 / the clip's sampling weight under segment_loss "uniform",
        scaled so unboosted clips weigh 1; all ones otherwise)."""
        s = self.store
        eps = self.np_rng.choice(s.num_episodes, size=batch_size, p=self.weights)
        rows = np.empty((batch_size, 1 + 2 * self.h), dtype=np.int64)
        prefix = np.empty(batch_size, dtype=np.float32)
        targets = np.empty((batch_size, self.h), dtype=np.float32)
        text_ids = np.empty(batch_size, dtype=np.int64)
        elapsed = np.empty(batch_size, dtype=np.float32)
        flipped = np.zeros(batch_size, dtype=bool)
        if self.row_p is not None:  # segment-weighted: draw clip ends over all frames
            ends = self.np_rng.choice(len(self.row_p), size=batch_size, p=self.row_p)
            eps = np.searchsorted(s.starts, ends, side="right") - 1
        for b, e in enumerate(eps):
            T = int(s.lengths[e])
            end = int(ends[b] - s.starts[e]) if self.row_p is not None else self.rng.randrange(T)
            idx = clip_indices(end, T, self.h, s.stride)
            idx = rewind_indices(idx, choose_rewind_mode(self.rng, self.cfg.rewind_ratio, self.cfg.plateau_ratio))
            r = s.starts[e] + idx
            rows[b] = r
            v = s.values[r]
            prefix[b], _ = randomize_prefix(float(v[0]), self.rng, self.cfg.prefix_random_p, self.cfg.prefix_noise)
            targets[b] = v[1:1 + self.h]
            text_ids[b] = s.text_ids[e]
            # seconds since the attempt began at the newest current frame, as a live camera gives
            # it: rewinding reorders the frames shown, not the time that passes
            elapsed[b] = end / s.fps if s.fps else np.nan
            if self.cfg.flip != "none":   # drawn only when on: runs without flips draw as before
                flipped[b] = self.rng.random() < 0.5
        flat = rows.reshape(-1)
        if isinstance(s.frames, torch.Tensor):
            frames = s.frames[torch.from_numpy(flat)]                      # [B*(1+2h), H, W, 3] uint8
        else:   # numpy array or memory-mapped frame cache: reads only the rows drawn
            frames = torch.from_numpy(np.ascontiguousarray(s.frames[flat]))
        frames = frames.view(batch_size, 1 + 2 * self.h, *frames.shape[1:])
        if flipped.any():
            sel = torch.from_numpy(np.flatnonzero(flipped))
            frames[sel] = flip_frames(frames[sel], self.cfg.flip).contiguous()
        frames = frames.permute(0, 1, 4, 2, 3)
        frames = frames.float() / 127.5 - 1.0
        out = (frames, torch.from_numpy(prefix), torch.from_numpy(targets), torch.from_numpy(text_ids),
               torch.from_numpy(elapsed))
        if not with_weights:
            return out
        weight = np.ones(batch_size, dtype=np.float32)
        if self.row_p is not None and self.cfg.segment_loss == "uniform":
            weight = (self.row_p.min() / self.row_p[ends]).astype(np.float32)
        return out + (torch.from_numpy(weight),)


# ---------------------------------------------------------------------------------------
# loop


class WeightEMA:
    """Exponential moving average of a model's floating-point weights and buffers.

    decay_t = min(decay, (1 + t) / (10 + t)) so that the average is not dominated by the
    random initialisation early on."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.dtype.is_floating_point}

    def rate(self, step: int) -> float:
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        w = 1.0 - self.rate(step)
        sd = model.state_dict()
        for k, v in self.shadow.items():
            v.lerp_(sd[k].detach(), w)

    @contextmanager
    def applied(self, model: torch.nn.Module):
        """Temporarily load the averaged weights into `model` (the raw ones come back after)."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield model
        finally:
            model.load_state_dict(backup, strict=False)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, st: dict) -> None:
        missing = set(self.shadow) - set(st["shadow"])
        if missing:
            raise ValueError(f"EMA state lacks {sorted(missing)[:3]}... (was it saved by another model?)")
        self.shadow = {k: st["shadow"][k].to(self.shadow[k].device).clone() for k in self.shadow}


#: validation score used to keep the best checkpoint: higher is better. A hesitation RMSE of
#: 0.05 costs as much as 0.2 of Retry-VOC; a metric the split cannot measure counts 0.
VAL_SCORE = "retry_voc + expert_voc - 4 * hesitation_rmse"


def validation_score(metrics: dict[str, float]) -> float:
    def g(k):
        v = metrics.get(k)
        return 0.0 if v is None or not math.isfinite(v) else float(v)
    return g("retry_voc") + g("expert_voc") - 4.0 * g("hesitation_rmse")


def lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        span = max(1, cfg.steps - cfg.warmup_steps)
        p = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))
    return f


def training_device(name: str) -> torch.device:
    """The torch device for training; a clear error when it is not there."""
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device: expected cpu, cuda or cuda:N, got {name!r}") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: this torch ({torch.__version__}) sees no CUDA GPU; train with --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type != "cpu":
        raise ValueError(f"device: expected cpu, cuda or cuda:N, got {name!r}")
    return dev


def train(cfg: TrainConfig, store: EpisodeStore | None = None, log=print) -> dict[str, Any]:
    """Train (or resume) and write checkpoints into cfg.output. Returns a summary dict."""
    from tqdm.auto import tqdm

    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = training_device(cfg.device)
    out = Path(cfg.output)
    resume_state = None
    if cfg.resume and (out / TRAINING_STATE).is_file() and (out / WEIGHTS).is_file():
        doc = read_checkpoint_config(out)
        model = load_value_model(out, preset=doc["preset"])
        resume_state = torch.load(out / TRAINING_STATE, map_location="cpu", weights_only=False)
        log(f"[wvm train] resuming {out} at step {resume_state['step']}")
    else:
        torch.manual_seed(cfg.seed)
        model = build_model(preset_config(cfg.preset, **cfg.model_overrides))
    mcfg = model.config
    model.to(device)
    model.train()
    if store is None:
        store = load_training_data(cfg.datasets, mcfg.image_size, mcfg.h, mcfg.sample_fps, cfg.camera_key,
                                   cfg.progress_key, cfg.max_episodes, progress=cfg.progress_bar, log=log,
                                   frame_cache=cfg.frame_cache)
    if mcfg.elapsed_input and not store.fps:
        raise TrainDataError("the model has elapsed_input=True but the training data has no frame rate")
    val_eps = None
    if cfg.val_dataset:
        from wvm_ros.core.evaluation import DatasetError, load_lerobot_episodes

        try:
            val_eps = load_lerobot_episodes(cfg.val_dataset, max_episodes=cfg.val_max_episodes, progress=False)
        except DatasetError as e:
            raise TrainDataError(f"validation dataset: {e}") from e
        log(f"[wvm train] validation: {len(val_eps)} episodes of {cfg.val_dataset}, best by {VAL_SCORE}")
    ema = WeightEMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    texts = torch.cat([model.embed_text(t) for t in store.texts]).to(device)   # [n_texts, L, D] (L = 1 for MiniLM)
    sampler = ClipSampler(store, mcfg.h, cfg, cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    step = 0
    history: list[dict] = []
    val_history: list[dict] = []
    best: dict = {"score": None, "step": None}
    if resume_state is not None:
        if ema is not None:
            if "model_raw" in resume_state and "ema" in resume_state:
                model.load_state_dict(resume_state["model_raw"])   # the file holds the averaged weights
                ema.load_state_dict(resume_state["ema"])
            else:
                ema = WeightEMA(model, cfg.ema_decay)
        val_history = list(resume_state.get("val_history", []))
        best = dict(resume_state.get("best", best))
        opt.load_state_dict(resume_state["optimizer"])
        sched.load_state_dict(resume_state["scheduler"])
        sampler.set_state(resume_state["sampler"])
        torch.set_rng_state(resume_state["torch_rng"])
        step = int(resume_state["step"])
        history = list(resume_state.get("history", []))
    log(f"[wvm train] {store.num_episodes} episodes, {len(store.frames)} frames, stride {store.stride}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, lambda_video={cfg.lambda_video}, device {device}")

    def averaged():
        return ema.applied(model) if ema is not None else nullcontext(model)

    def save(tag: str) -> str:
        meta = {"train_config": cfg.to_dict(), "step": step, "data": store.sources,
                "skipped_short_episodes": store.skipped_short, "history_tail": history[-5:], "saved": tag,
                "weights": f"EMA (decay {cfg.ema_decay})" if ema is not None else "raw",
                "val_tail": val_history[-3:], "best": best if val_eps is not None else None}
        state = {"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "sampler": sampler.state(), "torch_rng": torch.get_rng_state(), "history": history,
                 "val_history": val_history, "best": best, "train_config": cfg.to_dict()}
        if ema is not None:
            state["model_raw"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            state["ema"] = ema.state_dict()
        with averaged():
            return save_checkpoint(model, out, meta=meta, training_state=state)

    def validate() -> None:
        from wvm_ros.core.evaluation import evaluate, streaming_method

        t_val = time.perf_counter()
        model.eval()
        try:
            with averaged():
                rep = evaluate(val_eps, [streaming_method(model)], progress=False)
                overall = rep.results["wvm"].aggregate.overall
                metrics = {k: (None if not math.isfinite(v) else round(float(v), 4)) for k, v in overall.items()}
                score = validation_score(overall)
                rec = {"step": step, **metrics, "score": round(score, 4)}
                val_history.append(rec)
                if best["score"] is None or score > best["score"]:
                    best.update(score=score, step=step, metrics=metrics)
                    save_checkpoint(model, out / "best", meta={
                        "train_config": cfg.to_dict(), "step": step, "data": store.sources, "saved": "best",
                        "val": {"dataset": cfg.val_dataset, "score": VAL_SCORE, **rec},
                        "weights": f"EMA (decay {cfg.ema_decay})" if ema is not None else "raw"})
        finally:
            model.train()
        log(f"[wvm train] step {step}: val Expert-VOC {metrics.get('expert_voc')} Retry-VOC "
            f"{metrics.get('retry_voc')} Hes-RMSE {metrics.get('hesitation_rmse')} score {score:.3f} "
            f"(best {best['score']:.3f} at step {best['step']}; {time.perf_counter() - t_val:.0f} s)")

    bar = tqdm(total=cfg.steps, initial=step, desc="wvm train", unit="step", disable=not cfg.progress_bar,
               dynamic_ncols=True)
    t0 = time.perf_counter()
    seen = 0
    acc = {"loss": 0.0, "loss_value": 0.0, "loss_video": 0.0}
    n_acc = 0
    ckpt_id = None
    while step < cfg.steps:
        batch = sampler.sample(cfg.batch_size, with_weights=True)
        if device.type != "cpu":
            batch = tuple(x.to(device, non_blocking=True) for x in batch)
        frames, prefix, targets, tids, elapsed, vweight = batch
        losses = model.training_loss(frames, prefix, targets, texts[tids], lambda_video=cfg.lambda_video,
                                     elapsed_s=elapsed if mcfg.elapsed_input else None,
                                     value_weight=vweight if cfg.segment_loss == "uniform" else None)
        vals = {k: float(v.detach()) for k, v in losses.items()}
        if not all(math.isfinite(v) for v in vals.values()):
            bar.close()
            raise TrainingDiverged(step + 1, vals)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(model, step)
        step += 1
        seen += cfg.batch_size
        for k in acc:
            acc[k] += vals[k]
        n_acc += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            rate = seen / max(1e-9, time.perf_counter() - t0)
            rec = {"step": step, **{k: v / n_acc for k, v in acc.items()}, "lr": sched.get_last_lr()[0],
                   "clips_per_s": rate}
            history.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", value=f"{rec['loss_value']:.4f}",
                            video=f"{rec['loss_video']:.4f}", clips_s=f"{rate:.1f}")
            acc = {k: 0.0 for k in acc}
            n_acc = 0
        bar.update(1)
        val_every = cfg.val_every or cfg.save_every
        if val_eps is not None and val_every and step % val_every == 0 and step < cfg.steps:
            validate()
        if cfg.save_every and step % cfg.save_every == 0 and step < cfg.steps:
            ckpt_id = save(f"step {step}")
    bar.close()
    if val_eps is not None and (not val_history or val_history[-1]["step"] != step):
        validate()
    model.eval()
    ckpt_id = save("final")
    wall = time.perf_counter() - t0
    (out / "train_log.json").write_text(json.dumps({"history": history, "val_history": val_history,
                                                    "best": best if val_eps is not None else None,
                                                    "wall_s": wall}, indent=1, default=float) + "\n")
    log(f"[wvm train] done: {step} steps in {wall:.0f} s, checkpoint {out} ({ckpt_id})"
        + (f"; best on validation: step {best['step']} -> {out / 'best'}" if val_eps is not None else ""))
    return {"checkpoint": str(out), "checkpoint_id": ckpt_id, "steps": step, "wall_s": wall, "history": history,
            "val_history": val_history, "best": best if val_eps is not None else None}
