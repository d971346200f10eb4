"""Attempts (live messages or rosbags) -> LeRobot dataset episodes with values. ROS-free.

One alignment code path serves both the live logger (`LiveDatasetRecorder`, fed by
`wvm_logger` with the raw CDR bytes it records) and `wvm bag2lerobot` (`convert_bags`,
fed by replaying bags in log-time order), so a live dataset and one converted from the same
bags agree.

Alignment (`FrameAligner`), per attempt:
* one dataset frame per message on the reference camera topic (default /camera/image_raw);
* other image topics and the state (/robot/joint_states: position) take the newest message
  whose header stamp is at or before the frame's image stamp and at most `max_age_s`
  older (messages with a zero stamp: by recording time instead); ground truth
  (/sim/ground_truth_progress, no header) the one received nearest to the frame within
  `max_age_s` (NaN if none); a frame without a camera or state is dropped and counted;
* the action is the policy's answer to the frame: the first action received after the
  frame and at most `max_age_s` later; if none, the newest one at most `max_age_s` old;
* progress and value chunk come from the newest *valid* Progress whose header stamp (= the
  stamp of the newest image the model used) is at or before the frame's image stamp and at
  most `progress_max_age_s` older; when the newest one is older (the value node stalled),
  it is kept but `value_valid = False`; frames before the first estimate get progress 0
  and `value_valid = False`;
* `success_probability` is the success classifier's P(done) carried by that same Progress
  (`Progress.success`; NaN when the value node had none, or the bag predates the field);
* `next.done` is set on the last frame, `next.success` on the last frame of a successful
  attempt;
* bad data costs a frame, never the attempt: a reference image that cannot be decoded (e.g.
  an empty 0x0 image) and a frame whose state or action has a NaN/inf are dropped and
  counted per reason (`dropped_frames`); other undecodable messages and estimates with a
  NaN/inf progress or chunk are ignored and counted (`ignored_messages`); an error that
  still stops a conversion names the bag, the topic and the log time;
* lookups do not assume that stamps arrive in order (a second publisher, a late estimate).
Times are the recording (log) times in nanoseconds, except the progress match which uses
header stamps. Nothing depends on wall time or on dict order, so converting twice gives
the same dataset.

Bags without values (no /wvm/progress): `convert_bags(..., checkpoint=...)` runs the value
model offline through `StreamingValueEstimator` over the reference frames (what the value
node would have published for them).
"""
from __future__ import annotations

import bisect
import json
import logging
import math
import os
import shutil
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from wvm_ros.core.bag import (BagError, bag_custom_data, bag_metadata, deserialize, iter_bag,
                              list_bags, normalize_typename)

log = logging.getLogger(__name__)

IMAGE_TYPES = {"sensor_msgs/msg/Image"}
STATE_TYPES = {"sensor_msgs/msg/JointState", "std_msgs/msg/Float64MultiArray", "std_msgs/msg/Float32MultiArray"}
ACTION_TYPES = {"std_msgs/msg/Float64MultiArray", "std_msgs/msg/Float32MultiArray",
                "trajectory_msgs/msg/JointTrajectory", "sensor_msgs/msg/JointState"}


class ConversionError(RuntimeError):
    """Bags that cannot become a dataset; the message says which bag lacks what."""


@dataclass
class AlignConfig:
    reference_topic: str = "/camera/image_raw"
    # topic -> dataset feature key; the reference topic must be one of them
    image_keys: dict[str, str] = field(default_factory=lambda: {"/camera/image_raw": "observation.image"})
    state_topic: str = "/robot/joint_states"
    action_topic: str = "/robot/action"
    progress_topic: str = "/wvm/progress"
    event_topic: str = "/wvm/episode_event"
    ground_truth_topic: str = "/sim/ground_truth_progress"
    max_age_s: float = 0.1
    progress_max_age_s: float = 1.5

    def __post_init__(self):
        if self.reference_topic not in self.image_keys:
            self.image_keys = {self.reference_topic: default_image_key(self.reference_topic, first=True),
                               **self.image_keys}
        if self.max_age_s <= 0:
            raise ValueError(f"max_age_s: expected > 0 seconds, got {self.max_age_s}")

    @property
    def image_topics(self) -> list[str]:
        return list(self.image_keys)


def default_image_key(topic: str, first: bool = False) -> str:
    if first:
        return "observation.image"
    parts = [p for p in topic.strip("/").split("/") if p not in ("image_raw", "image", "image_rect", "color")]
    return "observation.images." + ("_".join(parts) or "camera")


def parse_image_keys(entries: Iterable[str]) -> dict[str, str]:
    """['/camera/image_raw=observation.image', '/wrist/image_raw'] -> {topic: key}."""
    out: dict[str, str] = {}
    for e in entries:
        e = str(e).strip()
        if not e:
            continue
        topic, _, key = e.partition("=")
        out[topic.strip()] = key.strip() or default_image_key(topic.strip(), first=not out)
    return out


# ----------------------------------------------------------------------------- decoding

def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def decode(typename: str, raw: bytes, msgdef: str | None = None):
    """CDR bytes of a recorded message -> what the aligner needs (numpy, floats). `msgdef`: the
    definition it was recorded with (bags from older versions of wvm_msgs stay readable)."""
    from wvm_ros.core.images import image_to_rgb8

    typename = normalize_typename(typename)
    msg = deserialize(raw, typename, msgdef)
    if typename == "sensor_msgs/msg/Image":
        rgb = image_to_rgb8(msg.encoding, int(msg.height), int(msg.width), int(msg.step),
                            np.asarray(msg.data), bool(msg.is_bigendian))
        return _stamp_ns(msg.header), np.ascontiguousarray(rgb)
    if typename == "sensor_msgs/msg/JointState":
        return _stamp_ns(msg.header), np.asarray(msg.position, dtype=np.float32).reshape(-1)
    if typename in ("std_msgs/msg/Float64MultiArray", "std_msgs/msg/Float32MultiArray"):
        return np.asarray(msg.data, dtype=np.float32).reshape(-1)
    if typename == "trajectory_msgs/msg/JointTrajectory":
        if not len(msg.points):
            return np.zeros(0, np.float32)
        return np.asarray(msg.points[0].positions, dtype=np.float32).reshape(-1)
    if typename == "wvm_msgs/msg/Progress":
        return {"stamp_ns": _stamp_ns(msg.header), "progress": float(msg.progress),
                "chunk": np.asarray(msg.chunk, dtype=np.float32).reshape(-1), "valid": bool(msg.valid),
                "success": float(getattr(msg, "success", math.nan)),   # absent in bags before it existed
                "task": str(msg.task), "model_name": str(msg.model_name), "checkpoint_id": str(msg.checkpoint_id)}
    if typename in ("std_msgs/msg/Float32", "std_msgs/msg/Float64"):
        return float(msg.data)
    if typename == "wvm_msgs/msg/EpisodeEvent":
        return msg
    if typename == "std_msgs/msg/String":
        return str(msg.data)
    return msg


# ----------------------------------------------------------------------------- alignment

@dataclass
class Frame:
    t_ns: int                      # log time of the reference image
    stamp_ns: int                  # header stamp of the reference image
    images: dict[str, np.ndarray]
    state: np.ndarray
    action: np.ndarray
    progress: float
    chunk: np.ndarray | None
    value_valid: bool
    ground_truth: float
    success: float = math.nan      # the success classifier's P(done) from the same Progress; NaN: none


@dataclass
class AlignStats:
    """Per attempt: reference frames seen (= frames + dropped ones), frames made, dropped
    frames per reason, and messages ignored per reason (undecodable ones other than the
    reference camera's, estimates with non-finite values); nothing is dropped silently."""
    reference_frames: int = 0
    frames: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    ignored: dict[str, int] = field(default_factory=dict)

    def drop(self, why: str) -> None:
        self.dropped[why] = self.dropped.get(why, 0) + 1

    def ignore(self, why: str) -> None:
        self.ignored[why] = self.ignored.get(why, 0) + 1


def _add_counts(total: dict[str, int], more: Mapping[str, int]) -> None:
    for k, n in more.items():
        total[k] = total.get(k, 0) + int(n)


def _why(exc: BaseException, limit: int = 200) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _log_time(t_ns: int) -> str:
    return f"log time {int(t_ns)} ns ({int(t_ns) / 1e9:.3f} s)"


def _finite(a) -> bool:
    return bool(np.all(np.isfinite(np.asarray(a, dtype=np.float64))))


class _Latest:
    """(t_ns, value) pairs kept sorted by t, whatever order they arrive in (a second publisher,
    a late or re-sent message may carry an older stamp), with 'newest at or before t within max
    age' lookups. Holds the `keep` newest by t."""

    def __init__(self, keep: int = 512):
        self.keep = int(keep)
        self.ts: list[int] = []
        self.vs: list = []

    def __len__(self) -> int:
        return len(self.ts)

    def add(self, t: int, v) -> None:
        t = int(t)
        if not self.ts or t >= self.ts[-1]:          # the usual case: in order
            self.ts.append(t)
            self.vs.append(v)
        else:                                        # after the ones with the same t
            i = bisect.bisect_right(self.ts, t)
            self.ts.insert(i, t)
            self.vs.insert(i, v)
        if len(self.ts) > self.keep:
            del self.ts[0], self.vs[0]

    def newest_at_or_before(self, t: int):
        """(t_i, value) of the newest item at or before t (the last added of equal t), or None."""
        i = bisect.bisect_right(self.ts, t) - 1
        return (self.ts[i], self.vs[i]) if i >= 0 else None

    def at_or_before(self, t: int, max_age_ns: int):
        hit = self.newest_at_or_before(t)
        return hit[1] if hit is not None and t - hit[0] <= max_age_ns else None

    def nearest(self, t: int, max_age_ns: int):
        """The item nearest to t within max age; on a tie the earlier one (the first added of equal t)."""
        j = bisect.bisect_left(self.ts, t)
        best, bd = None, None
        if j > 0:
            i = bisect.bisect_left(self.ts, self.ts[j - 1])
            best, bd = self.vs[i], t - self.ts[i]
        if j < len(self.ts) and (bd is None or self.ts[j] - t < bd):
            best, bd = self.vs[j], self.ts[j] - t
        return best if bd is not None and bd <= max_age_ns else None

    def first_after(self, t: int, max_age_ns: int):
        i = bisect.bisect_right(self.ts, t)
        return self.vs[i] if i < len(self.ts) and self.ts[i] - t <= max_age_ns else None


class FrameAligner:
    """Streaming alignment of one attempt's messages onto the reference camera's frames.

    push() decoded messages (or push_raw() recorded ones) in log-time order; pop_ready()
    returns frames whose answers (action, progress) have arrived or can no longer arrive;
    finish() returns the rest. Lookups do not assume that stamps arrive in order.

    Bad data costs the frame it touches, never the attempt: a reference image that cannot be
    decoded, and a frame whose state or action has a NaN/inf, are dropped and counted in
    `stats.dropped`; other undecodable messages and estimates with a NaN/inf progress or
    chunk are ignored and counted in `stats.ignored` (the frame takes the newest usable
    estimate, as it does when the value node skipped its image).
    """

    def __init__(self, cfg: AlignConfig, use_recorded_progress: bool = True):
        self.cfg = cfg
        self.use_recorded_progress = use_recorded_progress
        self.max_age = int(cfg.max_age_s * 1e9)
        self.progress_max_age = int(cfg.progress_max_age_s * 1e9)
        # stamped messages are matched by header stamp, unstamped ones by recording time
        self.images = {t: (_Latest(64), _Latest(64)) for t in cfg.image_topics if t != cfg.reference_topic}
        self.state = (_Latest(), _Latest())
        self.action = _Latest()
        self.gt = _Latest()          # no header: nearest by recording time, either side
        self.progress = _Latest(1024)   # stamp_ns -> (progress, chunk, success): valid, finite ones
        self.newest_progress_stamp = -1
        self.pending: deque = deque()                 # (t_ns, stamp_ns, rgb)
        self.stats = AlignStats()
        self.has_ground_truth = False
        self.last_t = 0

    def push(self, topic: str, t_ns: int, value) -> None:
        c = self.cfg
        self.last_t = max(self.last_t, t_ns)
        if topic == c.reference_topic:
            stamp, rgb = value
            self.pending.append((t_ns, stamp, rgb))
            self.stats.reference_frames += 1
        elif topic in self.images:
            self._add_stamped(self.images[topic], t_ns, value)
        elif topic == c.state_topic:
            self._add_stamped(self.state, t_ns, value)
        elif topic == c.action_topic:
            self.action.add(t_ns, value)
        elif topic == c.ground_truth_topic:
            self.gt.add(t_ns, float(value))
            self.has_ground_truth = True
        elif topic == c.progress_topic and self.use_recorded_progress:
            self.add_progress(value["stamp_ns"], value["progress"], value["chunk"], value["valid"],
                              value.get("success", math.nan))

    def push_raw(self, topic: str, typename: str, raw: bytes, t_ns: int, msgdef: str | None = None):
        """Decode one recorded message (CDR bytes) and push it. One that cannot be decoded is
        counted, not fatal: on the reference camera as a dropped frame, on other topics as an
        ignored message. Returns the decoded value, or None when it could not be decoded."""
        try:
            value = decode(typename, raw, msgdef)
        except Exception as exc:  # noqa: BLE001 - a bad message costs itself (counted), not the attempt
            why = f"undecodable {topic}: {_why(exc)}"
            if topic == self.cfg.reference_topic:
                self.stats.reference_frames += 1
                self.stats.drop(why)
            else:
                self.stats.ignore(why)
            self.last_t = max(self.last_t, t_ns)
            return None
        self.push(topic, t_ns, value)
        return value

    @staticmethod
    def _add_stamped(bufs, t_ns: int, value) -> None:
        if isinstance(value, tuple):
            stamp, v = value
            if stamp > 0:
                bufs[0].add(int(stamp), v)
                return
            value = v
        bufs[1].add(t_ns, value)

    def _lookup(self, bufs, t: int, stamp: int):
        v = bufs[0].at_or_before(stamp, self.max_age) if (stamp > 0 and len(bufs[0])) else None
        if v is None and len(bufs[1]):
            v = bufs[1].at_or_before(t, self.max_age)
        return v

    def add_progress(self, stamp_ns: int, progress: float, chunk, valid: bool = True,
                     success: float = math.nan) -> None:
        if valid:
            ch = np.asarray(chunk, np.float32).reshape(-1)
            if not (math.isfinite(progress) and _finite(ch)):
                # not an estimate: frames take the newest usable one (as for an image it skipped)
                self.stats.ignore(f"non-finite {self.cfg.progress_topic} (progress or chunk)")
            else:
                ps = float(success)
                ps = ps if 0.0 <= ps <= 1.0 else math.nan      # NaN, inf, out of range: unknown
                self.progress.add(int(stamp_ns), (float(progress), ch, ps))
        self.newest_progress_stamp = max(self.newest_progress_stamp, int(stamp_ns))

    def _ready(self, i: int, now: int) -> bool:
        t, stamp, _ = self.pending[i]
        if now - t <= self.max_age and i + 1 >= len(self.pending):
            return False          # its action may still come
        if self.use_recorded_progress and self.newest_progress_stamp < stamp and now - t <= self.progress_max_age:
            return False          # its estimate may still come
        return True

    def pop_ready(self, now: int | None = None) -> list[Frame]:
        now = self.last_t if now is None else now
        out = []
        while self.pending and self._ready(0, now):
            f = self._make(*self.pending.popleft())
            if f is not None:
                out.append(f)
        return out

    def finish(self) -> list[Frame]:
        out = []
        while self.pending:
            f = self._make(*self.pending.popleft())
            if f is not None:
                out.append(f)
        return out

    def _progress_for(self, stamp: int):
        """(progress, chunk, fresh, success): the newest valid estimate at or before the stamp;
        not fresh when older than progress_max_age (the value stays, value_valid is False)."""
        hit = self.progress.newest_at_or_before(stamp)
        if hit is None:
            return None
        s, (p, ch, ps) = hit
        return p, ch, stamp - s <= self.progress_max_age, ps

    def _make(self, t: int, stamp: int, rgb) -> Frame | None:
        images = {self.cfg.image_keys[self.cfg.reference_topic]: rgb}
        for topic, bufs in self.images.items():
            img = self._lookup(bufs, t, stamp)
            if img is None:
                self.stats.drop(f"no {topic} within {self.cfg.max_age_s} s")
                return None
            images[self.cfg.image_keys[topic]] = img
        state = self._lookup(self.state, t, stamp)
        if state is None:
            self.stats.drop(f"no {self.cfg.state_topic} within {self.cfg.max_age_s} s")
            return None
        if not _finite(state):
            self.stats.drop(f"non-finite {self.cfg.state_topic} (NaN/inf)")
            return None
        action = self.action.first_after(t, self.max_age)
        if action is None:
            action = self.action.at_or_before(t, self.max_age)
        if action is None:
            self.stats.drop(f"no {self.cfg.action_topic} within {self.cfg.max_age_s} s")
            return None
        if not _finite(action):
            self.stats.drop(f"non-finite {self.cfg.action_topic} (NaN/inf)")
            return None
        pv = self._progress_for(stamp) if self.use_recorded_progress else None
        gt = self.gt.nearest(t, self.max_age) if self.has_ground_truth else None
        self.stats.frames += 1
        return Frame(t, stamp, images, state, action,
                     float(np.clip(pv[0], 0.0, 1.0)) if pv else 0.0,
                     pv[1] if pv else None, bool(pv and pv[2]),
                     float("nan") if gt is None else float(gt), pv[3] if pv else math.nan)


# ----------------------------------------------------------------------------- dataset writing

@dataclass
class EpisodeSpec:
    """What the dataset looks like; fixed by the first episode written."""
    image_shapes: dict[str, tuple[int, int, int]]
    state_dim: int
    action_dim: int
    value_horizon: int
    ground_truth: bool

    def check(self, frames: Sequence[Frame], where: str) -> None:
        f = frames[0]
        shapes = {k: tuple(v.shape) for k, v in f.images.items()}
        problems = []
        if shapes != self.image_shapes:
            problems.append(f"images {shapes} (expected {self.image_shapes})")
        if f.state.shape != (self.state_dim,):
            problems.append(f"state of {f.state.shape[0]} values (expected {self.state_dim})")
        if f.action.shape != (self.action_dim,):
            problems.append(f"action of {f.action.shape[0]} values (expected {self.action_dim})")
        if problems:
            raise ConversionError(f"{where}: does not fit the dataset: " + "; ".join(problems))


def spec_from_frames(frames: Sequence[Frame], value_horizon: int, ground_truth: bool) -> EpisodeSpec:
    f = frames[0]
    return EpisodeSpec({k: tuple(v.shape) for k, v in f.images.items()}, int(f.state.shape[0]),
                       int(f.action.shape[0]), int(value_horizon), bool(ground_truth))


def _chunk(ch, h: int, progress: float) -> np.ndarray:
    if ch is None or len(ch) == 0:
        return np.full(h, progress, np.float32)
    ch = np.clip(np.asarray(ch, np.float32).reshape(-1), 0.0, 1.0)
    if len(ch) >= h:
        return ch[-h:]
    return np.concatenate([np.full(h - len(ch), ch[0], np.float32), ch])


MIN_VIDEO_SIDE = 64   # libsvtav1 dies with SIGFPE on smaller frames (seen with 16x16 here)


def make_writer(root: Path, spec: EpisodeSpec, fps: int, task: str, use_videos, repo_id: str,
                overwrite: bool = False):
    from wvm_ros.core.dataset import ValuedDatasetWriter

    small = [k for k, (h, w, _c) in spec.image_shapes.items() if min(h, w) < MIN_VIDEO_SIDE]
    if small and use_videos is True:
        raise ConversionError(f"cameras {small} are smaller than {MIN_VIDEO_SIDE} px: the AV1 encoder cannot "
                              "encode them; store images instead (no --video / dataset.use_videos false)")
    if small and use_videos == "auto":
        log.warning("cameras %s are smaller than %d px: storing images, not videos", small, MIN_VIDEO_SIDE)
        use_videos = False

    extras = {"value_valid": "bool", "success_probability": "float32"}
    if spec.ground_truth:
        extras["ground_truth_progress"] = "float32"
    return ValuedDatasetWriter(root, image_shapes=spec.image_shapes, state=spec.state_dim,
                               action=spec.action_dim, fps=fps, repo_id=repo_id,
                               value_horizon=spec.value_horizon, extra_scalars=extras,
                               use_videos=use_videos, default_task=task, overwrite=overwrite)


def add_frame(writer, spec: EpisodeSpec, f: Frame, task: str, last: bool, success: bool) -> None:
    extras = {"value_valid": bool(f.value_valid), "success_probability": float(f.success)}
    if spec.ground_truth:
        extras["ground_truth_progress"] = float(f.ground_truth)
    writer.add_frame(f.images, f.state, f.action, progress=f.progress,
                     value_chunk=_chunk(f.chunk, spec.value_horizon, f.progress),
                     success=bool(success and last), done=last, task=task, **extras)


def write_episode(writer, spec: EpisodeSpec, frames: Sequence[Frame], task: str, success: bool,
                  metadata: Mapping) -> int | None:
    n = len(frames)
    for i, f in enumerate(frames):
        add_frame(writer, spec, f, task, i == n - 1, success)
    return writer.end_episode(keep=True, metadata=dict(metadata))


def _drop_note(dropped: Mapping[str, int], ignored: Mapping[str, int]) -> str:
    parts = []
    if dropped:
        parts.append(f"dropped {sum(dropped.values())} frames: {json.dumps(dict(dropped))}")
    if ignored:
        parts.append(f"ignored {sum(ignored.values())} messages: {json.dumps(dict(ignored))}")
    return ("; " + "; ".join(parts)) if parts else ""


# ----------------------------------------------------------------------------- live recording

class LiveDatasetRecorder:
    """The logger's live LeRobot dataset: one episode per attempt.

    Fed the same raw CDR bytes that go into the bags (on_start / on_message / on_end, from
    the node's executor). Alignment happens there (cheap); aligned frames go through a
    queue to a writer thread that adds them to the dataset as they come (images are
    encoded there, not in the executor, and an attempt is never held in memory). The last
    frame of an attempt is held back until END says whether it succeeded; a failed attempt
    is dropped with `discard_episode()` when `keep_failed` is false. The dataset is created
    at the first frame (its shapes fix the features) and finalised by close(). If the
    logger is killed, the dataset's open files are lost but the bags are not: rebuild it
    with `wvm bag2lerobot` (same alignment, same result).
    """

    def __init__(self, root: str | os.PathLike, cfg: AlignConfig, *, fps: int = 10,
                 keep_failed: bool = True, use_videos="auto", repo_id: str = "local/wvm_live",
                 value_horizon: int = 4, default_task: str = "", log_fn: Callable[[str], None] | None = None,
                 error_fn: Callable[[str], None] | None = None, threaded: bool = True):
        import queue
        import threading

        self.root = Path(root)
        if self.root.exists() and any(self.root.iterdir()):
            raise ConversionError(f"dataset folder {str(self.root)!r} exists and is not empty; "
                                  "choose a new dataset.root for this logging session")
        self.cfg = cfg
        self.fps = int(fps)
        self.keep_failed = bool(keep_failed)
        self.use_videos = use_videos
        self.repo_id = repo_id
        self.h = int(value_horizon)
        self.default_task = default_task
        self.log = log_fn or log.info
        self.error = error_fn or log.error
        self.writer = None
        self.spec: EpisodeSpec | None = None
        self.aligner: FrameAligner | None = None
        self.task = default_task
        self.episode: dict = {}
        self.episodes_written = 0
        self.episodes_dropped = 0
        # per reason, over the attempts ended so far (counts() adds the open one): for diagnostics
        self.dropped_frames: dict[str, int] = {}
        self.ignored_messages: dict[str, int] = {}
        # writer-thread state
        self._q: queue.Queue = queue.Queue()
        self._last: Frame | None = None
        self._n = 0
        self._skip = ""
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="live-dataset", daemon=True) if threaded else None
        if self._thread is not None:
            self._thread.start()

    # -- executor side
    def _put(self, item) -> None:
        if self._thread is None:
            self._handle(item)
        else:
            self._q.put(item)

    def on_start(self, ev) -> None:
        self.aligner = FrameAligner(self.cfg)
        self.task = getattr(ev, "task", "") or self.default_task
        self.episode = {"episode_id": str(getattr(ev, "episode_id", "")), "attempt": int(getattr(ev, "attempt", 0))}
        self._put(("start", dict(self.episode)))

    def on_message(self, topic: str, typename: str, raw: bytes, t_ns: int) -> None:
        if self.aligner is None:
            return
        c = self.cfg
        if topic not in (c.state_topic, c.action_topic, c.progress_topic, c.ground_truth_topic) \
                and topic not in c.image_keys:
            return
        # a message that cannot be decoded is counted there, not fatal (as in convert_bags)
        value = self.aligner.push_raw(topic, typename, raw, t_ns)
        if topic == c.progress_topic and isinstance(value, dict) and value.get("task"):
            self.task = value["task"]
        for f in self.aligner.pop_ready(t_ns):
            self._put(("frame", f, self.task))

    def on_end(self, custom: Mapping[str, str]) -> None:
        if self.aligner is None:
            return
        for f in self.aligner.finish():
            self._put(("frame", f, self.task))
        stats, self.aligner = self.aligner.stats, None
        _add_counts(self.dropped_frames, stats.dropped)
        _add_counts(self.ignored_messages, stats.ignored)
        self._put(("end", dict(custom), dict(sorted(stats.dropped.items())), dict(sorted(stats.ignored.items()))))

    def counts(self) -> dict[str, dict[str, int]]:
        """Dropped frames and ignored messages per reason, over this session's attempts
        (the open one included): what the logger shows in its diagnostics."""
        dropped, ignored = dict(self.dropped_frames), dict(self.ignored_messages)
        if self.aligner is not None:
            _add_counts(dropped, self.aligner.stats.dropped)
            _add_counts(ignored, self.aligner.stats.ignored)
        return {"dropped_frames": dropped, "ignored_messages": ignored}

    def on_abort(self) -> None:
        self.aligner = None
        self._put(("abort",))

    def close(self, timeout_s: float | None = None) -> Path | None:
        """Write what is queued, drop an unfinished attempt, finalise the dataset."""
        self._put(("close",))
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self.root if self.writer is not None else None

    def pending(self) -> int:
        return self._q.qsize()

    # -- writer thread
    def _run(self) -> None:
        while True:
            item = self._q.get()
            try:
                self._handle(item)
            except Exception as exc:  # noqa: BLE001 - reported, the bags are the record
                self.error(f"live dataset: {item[0]} failed: {type(exc).__name__}: {exc}")
                self._skip = self._skip or f"error: {exc}"
            if item[0] == "close":
                return

    def _add(self, f: Frame, task: str, last: bool, success: bool) -> None:
        add_frame(self.writer, self.spec, f, task, last, success)
        self._n += 1

    def _drop_open(self) -> None:
        if self.writer is not None and self._n:
            self.writer.discard_episode()
        self._last, self._n = None, 0

    def _handle(self, item) -> None:
        kind = item[0]
        if kind == "start":
            self._drop_open()
            self._skip = ""
            self._episode = item[1]
        elif kind == "frame":
            _, f, task = item
            if self._skip:
                return
            if self.writer is None:
                self.spec = spec_from_frames([f], self.h, math.isfinite(f.ground_truth))
                self.writer = make_writer(self.root, self.spec, self.fps, task or self.default_task,
                                          self.use_videos, self.repo_id)
            try:
                self.spec.check([f], f"attempt {self._episode}")
            except ConversionError as exc:
                self._skip = str(exc)
                self.error(f"live dataset: {exc}; attempt not written")
                self._drop_open()
                return
            if self._last is not None:
                self._add(self._last[0], self._last[1], last=False, success=False)
            self._last = (f, task)
        elif kind == "end":
            _, custom, dropped, ignored = item
            outcome = custom.get("outcome", "")
            label = custom.get("bag") or f"{self._episode}"
            if self._skip or self._last is None:
                self.log(f"live dataset: {label} not written ({self._skip or f'no aligned frames: {dropped}'})"
                         + (f"; ignored messages: {ignored}" if ignored else ""))
                self._drop_open()
                return
            if outcome != "success" and not self.keep_failed:
                self._drop_open()
                self.episodes_dropped += 1
                self.log(f"live dataset: {label} dropped (outcome {outcome or 'unknown'})")
                return
            f, task = self._last
            self._add(f, task, last=True, success=outcome == "success")
            n = self._n
            meta = {**self._episode, **custom, "dropped_frames": dropped, "ignored_messages": ignored}
            idx = self.writer.end_episode(keep=True, metadata=meta)
            self._last, self._n = None, 0
            self.episodes_written += 1
            self.log(f"live dataset: {label} -> episode {idx} ({n} frames)" + _drop_note(dropped, ignored))
        elif kind == "abort":
            self._drop_open()
        elif kind == "close":
            self._drop_open()
            if self.writer is not None and not self._closed:
                self.writer.finalize()
                self._closed = True


# ----------------------------------------------------------------------------- bags -> dataset

@dataclass
class ConversionReport:
    output: Path
    episodes: list[dict]
    frames: int
    fps: int
    values: str                     # "recorded" | "offline:<checkpoint id>"
    skipped: list[str] = field(default_factory=list)
    # per reason, over all bags aligned (per bag: each episode's dropped_frames / ignored_messages)
    dropped_frames: dict[str, int] = field(default_factory=dict)
    ignored_messages: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"output": str(self.output), "episodes": self.episodes, "frames": self.frames,
                "fps": self.fps, "values": self.values, "skipped": self.skipped,
                "dropped_frames": self.dropped_frames, "ignored_messages": self.ignored_messages}


def bag_topics(bag: Path) -> dict[str, str]:
    md = bag_metadata(bag)
    return {t["topic_metadata"]["name"]: t["topic_metadata"]["type"]
            for t in md.get("topics_with_message_count", []) if t.get("message_count", 0) > 0}


def check_bags(bags: Sequence[Path], cfg: AlignConfig, need_progress: bool) -> None:
    """Raise ConversionError listing, per bag, the required topics it lacks."""
    required = {cfg.reference_topic: "reference camera", cfg.state_topic: "state",
                cfg.action_topic: "action"}
    for t in cfg.image_topics:
        required.setdefault(t, "camera")
    if need_progress:
        required[cfg.progress_topic] = "values (or pass --checkpoint to compute them offline)"
    problems = []
    for b in bags:
        topics = bag_topics(b)
        missing = [f"{t} ({why})" for t, why in required.items() if t not in topics]
        wrong = [f"{t} is {topics[t]}" for t in (cfg.reference_topic, *cfg.image_topics)
                 if t in topics and normalize_typename(topics[t]) not in IMAGE_TYPES]
        if missing or wrong:
            problems.append(f"  {b}: missing {', '.join(missing) or 'nothing'}"
                            + (f"; wrong type: {', '.join(wrong)}" if wrong else "")
                            + f"\n    (topics in this bag: {', '.join(sorted(topics)) or 'none'})")
    if problems:
        raise ConversionError("cannot convert: required topics are missing\n" + "\n".join(problems))


def measure_bag_fps(bag: Path, topic: str) -> int:
    ts = [t for _, _, t, _ in iter_bag(bag, [topic])]
    if len(ts) < 2:
        return 10
    dt = np.median(np.diff(np.asarray(ts, dtype=np.int64))) / 1e9
    return max(1, int(round(1.0 / dt))) if dt > 0 else 10


def _first_progress(bag: Path, cfg: AlignConfig) -> dict | None:
    for topic, typename, _t, raw, msgdef in iter_bag(bag, [cfg.progress_topic], definitions=True):
        try:
            v = decode(typename, raw, msgdef)
        except Exception:  # noqa: BLE001 - counted when the bag is aligned
            continue
        if isinstance(v, dict) and v.get("valid", True):
            return v
    return None


def _iter_frames(bag: Path, cfg: AlignConfig, use_recorded_progress: bool, stats_out: list,
                 where: list | None = None):
    """Aligned frames of one bag, in order, as they become ready (the bag is streamed).
    `where[0]` names the message being read (topic, log time), for error messages."""
    where = where if where is not None else [""]
    types = bag_topics(bag)
    wanted = [t for t in (*cfg.image_topics, cfg.state_topic, cfg.action_topic, cfg.progress_topic,
                          cfg.ground_truth_topic) if t in types]
    al = FrameAligner(cfg, use_recorded_progress)
    stats_out.append(al.stats)
    where[0] = "reading its messages"
    for topic, typename, t, raw, msgdef in iter_bag(bag, wanted, definitions=True):
        where[0] = f"{topic} message at {_log_time(t)}"
        al.push_raw(topic, typename, raw, t, msgdef)     # undecodable: counted in al.stats
        yield from al.pop_ready(t)
    where[0] = "aligning its last frames"
    yield from al.finish()


def convert_bags(bag_paths: Sequence[str | os.PathLike], output: str | os.PathLike, *,
                 cfg: AlignConfig | None = None, checkpoint: str | None = None, preset: str = "tiny",
                 fps: int | None = None, keep_failed: bool = True, use_videos=False,
                 repo_id: str = "local/wvm_bags", overwrite: bool = False, task: str | None = None,
                 progress_bar: bool = True, estimate_fps: float | None = 10.0) -> ConversionReport:
    """Convert bags (one attempt each) into one LeRobot dataset at `output`.

    Recorded values are used when the bags have them and no checkpoint is given; with a
    checkpoint the value model runs offline over every bag, through the streaming estimator
    at `estimate_fps` (the value node's default 10; None: one estimate per sampled frame),
    i.e. what the value node would have published. Nothing is left at `output`
    when the conversion fails (it is built in a temporary folder next to it and moved).
    """
    from tqdm import tqdm

    cfg = cfg or AlignConfig()
    out = Path(output)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConversionError(f"output {str(out)!r} exists and is not empty (pass --overwrite)")
    try:
        bags = list_bags(bag_paths)
    except BagError as exc:
        raise ConversionError(str(exc)) from exc
    if not bags:
        raise ConversionError("no bags given")
    # sort for determinism: by recorded start time, then name
    bags = sorted(bags, key=lambda b: (bag_metadata(b)["starting_time"]["nanoseconds_since_epoch"], b.name))
    offline = checkpoint is not None
    check_bags(bags, cfg, need_progress=not offline)

    model = None
    values = "recorded"
    if offline:
        from wvm_ros.core.model import load_value_model

        model = load_value_model(checkpoint, preset=preset, device="cpu")
        values = f"offline:{model.name}:{model.checkpoint_id}"
        from wvm_ros.core.streaming import dense_factor

        dense_factor(float(model.config.sample_fps), estimate_fps)   # ValueError names the rate
    fps = int(fps) if fps else measure_bag_fps(bags[0], cfg.reference_topic)

    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    writer = None
    spec = None
    episodes: list[dict] = []
    skipped: list[str] = []
    total = 0
    dropped_total: dict[str, int] = {}
    ignored_total: dict[str, int] = {}

    def frame_at(f: Frame) -> str:
        return f"{cfg.reference_topic} frame at {_log_time(f.t_ns)}"

    try:
        for bag in tqdm(bags, desc="bag2lerobot", unit="bag", disable=not progress_bar):
            where = ["reading its metadata"]
            try:
                custom = bag_custom_data(bag)
                outcome = custom.get("outcome", "")
                if outcome != "success" and not keep_failed:
                    skipped.append(f"{bag.name}: outcome {outcome or 'unknown'} (failed attempts dropped)")
                    continue
                where[0] = f"reading its first {cfg.progress_topic}"
                first = _first_progress(bag, cfg)
                ep_task = task or custom.get("task") or (first or {}).get("task", "") or ""
                est = None
                if offline:
                    from wvm_ros.core.streaming import StreamingValueEstimator

                    est = StreamingValueEstimator(model, ep_task, estimate_fps=estimate_fps)
                stats: list[AlignStats] = []
                prev: Frame | None = None
                n = 0
                for f in _iter_frames(bag, cfg, not offline, stats, where):
                    where[0] = frame_at(f)
                    if est is not None:     # what the value node would have published for this frame
                        e = est.push(f.images[cfg.image_keys[cfg.reference_topic]], f.stamp_ns / 1e9)
                        ok = e is not None and e.valid
                        if ok and not (math.isfinite(float(e.progress)) and _finite(e.chunk)):
                            stats[0].ignore("non-finite offline estimate (progress or chunk)")
                            ok = False
                        f.progress = float(e.progress) if ok else 0.0
                        f.chunk = np.asarray(e.chunk, np.float32) if ok else None
                        f.value_valid = bool(ok)
                    if writer is None:
                        if offline:
                            h = int(model.config.h)
                        else:
                            h = len(first["chunk"]) if first is not None and len(first["chunk"]) else 4
                        spec = spec_from_frames([f], h, cfg.ground_truth_topic in bag_topics(bag))
                        writer = make_writer(tmp, spec, fps, ep_task, use_videos, repo_id)
                    spec.check([f], f"bag {bag}, {where[0]}")
                    if prev is not None:
                        where[0] = frame_at(prev)
                        add_frame(writer, spec, prev, ep_task, last=False, success=False)
                        n += 1
                    prev = f
                st = stats[0] if stats else AlignStats()
                _add_counts(dropped_total, st.dropped)
                _add_counts(ignored_total, st.ignored)
                if st.ignored:
                    log.warning("%s: ignored %d messages: %s", bag.name, sum(st.ignored.values()),
                                json.dumps(dict(sorted(st.ignored.items()))))
                if prev is None:
                    skipped.append(f"{bag.name}: no aligned frames ({st.dropped})"
                                   + (f"; ignored messages {st.ignored}" if st.ignored else ""))
                    continue
                where[0] = frame_at(prev)
                add_frame(writer, spec, prev, ep_task, last=True, success=outcome == "success")
                n += 1
                meta = {"bag": bag.name, "episode_id": custom.get("episode_id", ""),
                        "attempt": custom.get("attempt", ""), "outcome": outcome,
                        "final_progress": custom.get("final_progress", ""),
                        "model_name": custom.get("model_name", ""),
                        "checkpoint_id": custom.get("checkpoint_id", ""),
                        "values": values, "reference_frames": st.reference_frames,
                        "dropped_frames": dict(sorted(st.dropped.items())),
                        "ignored_messages": dict(sorted(st.ignored.items()))}
                where[0] = "ending its episode"
                idx = writer.end_episode(keep=True, metadata=meta)
            except ConversionError:
                raise
            except Exception as exc:  # name the bag and the message or frame: the bags are the record
                raise ConversionError(f"bag {bag}: {where[0]}: {_why(exc, 1000)}") from exc
            episodes.append({"episode_index": idx, "frames": n, **meta})
            total += n
        if writer is None:
            raise ConversionError("no bag produced any aligned frame:\n  " + "\n  ".join(skipped))
        writer.finalize()
        (tmp / "meta" / "wvm_conversion.json").write_text(json.dumps(
            {"reference_topic": cfg.reference_topic, "image_keys": cfg.image_keys,
             "max_age_s": cfg.max_age_s, "progress_max_age_s": cfg.progress_max_age_s,
             "values": values, "fps": fps, "bags": [b.name for b in bags], "skipped": skipped,
             "dropped_frames": dict(sorted(dropped_total.items())),
             "ignored_messages": dict(sorted(ignored_total.items()))},
            indent=2, sort_keys=True) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ConversionReport(out, episodes, total, fps, values, skipped, dict(sorted(dropped_total.items())),
                            dict(sorted(ignored_total.items())))
