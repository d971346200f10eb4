"""Value node: live task progress from the World Value Model.

Subscribes (defaults; remappable):
  image_topics (parameter, list)  sensor_msgs/Image, one streaming window per camera
  /wvm/task                       std_msgs/String (also the `task` parameter)
  /wvm/episode_event              wvm_msgs/EpisodeEvent (START resets the windows; ids go into Progress)
Publishes:
  /wvm/progress        wvm_msgs/Progress (header.stamp = newest image used; `success`: the success
                       classifier's P(done) for the same frame when success_checkpoint gives one)
  /wvm/progress_value  std_msgs/Float32 (valid estimates only)
  /wvm/overlay         sensor_msgs/Image rgb8 (progress bar, value, task, episode state, UNTRAINED banner)
  /wvm/marker          visualization_msgs/Marker TEXT_VIEW_FACING
  /wvm/state_text      std_msgs/String, with every Progress: "<episode> attempt <n>: <state>" and the
                       progress (RViz TextOverlay via rviz_2d_overlay_plugins' string_to_overlay_text)
  /diagnostics         input/output rate, latency, dropped and rejected frames, errors, backend

Inference backend (parameters backend, precision, backend_fallback, backend_strict, threads,
cuda_graphs, backend_cache_dir; wvm_ros.core.backends): one backend model shared by the
cameras' windows. A backend that cannot run: the fallback list is tried (diagnostics WARN
naming the backend in use), or with backend_strict the node exits at start (code 2).

Latest-frame semantics: subscription callbacks only validate a frame and put it in its
camera's one-frame slot; an inference thread takes the newest frame of each camera. A frame
replaced in its slot before inference took it is dropped and counted, never queued.
With several cameras, each has its own window; Progress carries the mean of the cameras'
latest valid estimates (the chunk of the camera that triggered the message).

Missing or unreadable checkpoint, or no usable backend: the node exits at start (code 2)
with the path and the expected preset / the backends tried and why. Bad frames: rejected with one rate-limited error per topic, counted.
Inference exceptions: Progress valid=false, diagnostics ERROR, the node keeps running.
Non-finite model output (NaN / inf): Progress valid=false with status "non-finite model output ...",
counted (`non-finite model outputs`), diagnostics ERROR, the node keeps running.

Stamps (wvm_ros.core.streaming): each camera's frames must be stamped later than its newest
one. A stamp of 0 (header.stamp not set) is rejected; a repeated stamp is not used; a stamp up
to `stamp_backward_tolerance_s` (1 s) behind the newest is dropped as stale; further back
starts the window over (a replayed bag restarting). All counted in /diagnostics and logged
(rate-limited). When frames keep coming without an advancing stamp, Progress says "frames have
no increasing header.stamp ..." and diagnostics go WARN. Frames stamped before the attempt's
START are dropped and counted (`frames older than the attempt's START`); when that lasts
START_AHEAD_WARN_S (1 s) diagnostics go WARN (the START is stamped ahead of the image clock).
"""
from __future__ import annotations

import copy
import math
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Float32, String
from visualization_msgs.msg import Marker
from wvm_msgs.msg import EpisodeEvent, Progress

from wvm_ros.core.diagnostics import NodeStats, RateLimitedLog
from wvm_ros.core.images import ENCODINGS, ImageError
from wvm_ros.core.overlay import OverlayState, draw_overlay, episode_label
from wvm_ros.ros.diagnostics import DiagnosticsPublisher
from wvm_ros.ros.images import array_to_image_msg, image_msg_to_rgb8
from wvm_ros.ros.qos import qos_from_name, reliable
from wvm_ros.ros.stamps import stamp_to_sec

SHIPPED_CHECKPOINT = "models/wvm-tiny-pusht"
SHIPPED_SUCCESS = "models/success-pusht"
# the shipped PushT value models: with any of them the shipped PushT success classifier is the default
SHIPPED_PUSHT_VALUE_MODELS = (SHIPPED_CHECKPOINT, "models/wvm-tiny-pusht-noclock", "models/wvm-tiny-pusht-480")
UNTRAINED_SEED = 0  # random weights are seeded: same weights -> same model hash -> cached ONNX reused
EVENT_NAMES = {getattr(EpisodeEvent, n): n for n in
               ("START", "SUCCESS", "STALL", "REGRESSION", "TIMEOUT", "RETRY", "ABORT", "HUMAN_LABEL", "END",
                "HOLD", "RESUME", "FAILURE") if hasattr(EpisodeEvent, n)}


UNTRAINED_NAMES = ("none", "untrained", "random")
PRE_START = "frames older than the attempt's START"   # diagnostics counter
START_AHEAD_WARN_S = 1.0   # frames older than the START for this long: diagnostics WARN
CONDITION_HOLD_S = 5.0     # a standing warning (stamps, START ahead) clears this long after it was last seen


def resolve_checkpoint(param: str) -> str | None:
    """The checkpoint to load: the parameter when set, else the shipped tiny model when
    present (source tree or package share dir), else None (random weights: UNTRAINED).
    `none` / `untrained` / `random` ask for random weights explicitly."""
    if param.strip().lower() in UNTRAINED_NAMES:
        return None
    if param:
        return param
    from wvm_ros.graph import find_data

    p = find_data(SHIPPED_CHECKPOINT)
    return str(p) if p is not None else None


def resolve_success_checkpoint(param: str, value_param: str) -> str | None:
    """The success classifier to load: the parameter when set ("none": no classifier), else the
    shipped PushT classifier when the value model is a shipped PushT one (the default, or
    `models/wvm-tiny-pusht` / `-noclock` / `-480` named by path), else none (a
    classifier of another task would be wrong)."""
    if param.strip().lower() in ("none", "off", "false"):
        return None
    if param:
        return param
    from wvm_ros.graph import find_data

    if value_param.strip():
        def where(p: str) -> Path | None:
            try:
                return Path(p).expanduser().resolve()
            except (OSError, RuntimeError):
                return None

        given = {where(value_param)}
        rel = find_data(value_param.strip())      # "models/..." relative to the source tree / share dir
        if rel is not None:
            given.add(where(str(rel)))
        shipped = {where(str(p)) for p in (find_data(m) for m in SHIPPED_PUSHT_VALUE_MODELS) if p is not None}
        if not (given - {None}) & shipped:
            return None
    p = find_data(SHIPPED_SUCCESS)
    return str(p) if p is not None else None


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


class CheckpointMissing(RuntimeError):
    """The checkpoint parameter names a path that does not exist."""


class BadParameter(ValueError):
    """A node parameter outside what it accepts (the message names it and what was expected)."""


class BadBackendParameters(ValueError):
    """backend / precision / backend_fallback parameters that BackendOptions refuses."""


def state_text(episode_id: str, attempt: int, state: str, msg: Progress, untrained: bool) -> str:
    """/wvm/state_text: the attempt state (RViz TextOverlay), then the progress line (with the
    success classifier's P(done) when there is one)."""
    why = "; ".join(s for s in msg.status.split("; ") if s and s != "UNTRAINED") or "no estimate"
    value = f"{msg.progress:.2f}" if msg.valid else f"-- ({why})"
    if msg.valid and math.isfinite(msg.success):
        value += f" | done {msg.success:.2f}"
    return f"{episode_label(episode_id, attempt, state)}\nprogress {value}" + (" UNTRAINED" if untrained else "")


@dataclass
class Camera:
    topic: str
    index: int
    estimator: object
    pending: tuple | None = None       # (rgb, stamp Time, frame_id, stamp_s)
    last: object | None = None         # latest ValueEstimate
    last_frame: np.ndarray | None = None
    stamps: dict = field(default_factory=dict)
    counted: dict = field(default_factory=dict)   # the estimator's `counts` already added to the stats
    pre_start_since: float | None = None          # monotonic time of the first frame older than START, this run
    pre_start_run: int = 0                        # frames older than START in a row


class ValueNode(Node):
    def __init__(self, **kwargs):
        super().__init__("wvm_value", **kwargs)
        p = self.declare_parameter
        ck_param = str(p("checkpoint", "").value)
        succ_param = str(p("success_checkpoint", "").value)
        self.preset = str(p("preset", "tiny").value) or None
        device = str(p("device", "cpu").value)
        self.task = str(p("task", "").value)
        topics = list(p("image_topics", ["/camera/image_raw"]).value)
        image_qos = str(p("image_qos", "reliable").value)
        self.expected_w = int(p("image_width", 0).value)
        self.expected_h = int(p("image_height", 0).value)
        self.overlay_every = int(p("overlay_every", 1).value)
        self.marker_frame_id = str(p("marker_frame_id", "camera").value)
        diag_period = float(p("diagnostics_period_s", 1.0).value)
        self.stale_after_s = float(p("stale_after_s", 2.0).value)
        estimate_fps = float(p("estimate_fps", 10.0).value)
        self.estimate_fps = estimate_fps if estimate_fps > 0 else None
        # the checkpoint's value offset (`wvm calibrate-value`) is added to published values; false: raw
        self.apply_value_calibration = bool(p("apply_value_calibration", True).value)
        self.start_ahead_warn_s = START_AHEAD_WARN_S
        backend_params = dict(
            backend=str(p("backend", "onnxruntime").value), device=device,
            precision=str(p("precision", "fp32").value),
            fallback=[f for f in p("backend_fallback", ["onnxruntime", "torch"]).value if f],
            strict=bool(p("backend_strict", False).value), threads=int(p("threads", 1).value),
            cuda_graphs=bool(p("cuda_graphs", False).value),
            cache_dir=str(p("backend_cache_dir", "").value))
        if not topics or not all(isinstance(t, str) and t for t in topics):
            raise ValueError(f"image_topics: expected a non-empty list of topic names, got {topics!r}")

        if ck_param and ck_param.strip().lower() not in UNTRAINED_NAMES and not Path(ck_param).expanduser().exists():
            # said before torch is imported (seconds), in the model loader's words
            raise CheckpointMissing(f"checkpoint {Path(ck_param).expanduser()} does not exist (expected a directory "
                                    f"with model.safetensors and config.json for preset {self.preset!r})")
        from wvm_ros.core.backends import BackendOptions
        try:
            opts = BackendOptions.from_params(backend_params)
        except ValueError as e:
            raise BadBackendParameters(f"backend parameters {backend_params}: {e}") from e
        import torch

        from wvm_ros.core.backends.wvm import create_value_backends
        from wvm_ros.core.model import ModelLoadError, load_value_model
        from wvm_ros.core.streaming import BACKWARD_TOLERANCE_S, StreamingValueEstimator

        # declared here, after the checkpoint check: its default lives with the estimator (torch)
        backward_tolerance_s = float(p("stamp_backward_tolerance_s", BACKWARD_TOLERANCE_S).value)
        if not math.isfinite(backward_tolerance_s) or backward_tolerance_s < 0:
            raise BadParameter(f"parameter stamp_backward_tolerance_s={backward_tolerance_s:g}: expected seconds >= 0 "
                               f"(a frame stamped up to this much before the newest is dropped as stale, further "
                               f"back starts the window over; default {BACKWARD_TOLERANCE_S:g})")

        ckpt = resolve_checkpoint(ck_param)
        if ckpt is None:
            torch.manual_seed(UNTRAINED_SEED)
        try:
            self.model = load_value_model(ckpt, preset=self.preset, device=device)
        except ModelLoadError:
            raise
        except Exception as e:  # unreadable files raise all sorts of things: name the path and preset
            raise ModelLoadError(f"cannot load checkpoint {ckpt} (expected preset {self.preset!r}): "
                                 f"{type(e).__name__}: {e}") from e
        self.untrained = bool(getattr(self.model, "untrained", ckpt is None))
        self.model_name = str(getattr(self.model, "name", self.preset or ""))
        self.checkpoint_id = str(getattr(self.model, "checkpoint_id", "UNTRAINED"))
        succ = resolve_success_checkpoint(succ_param, ck_param)
        self.success_model = None
        if succ is not None:
            from wvm_ros.core.success import load_success

            if not Path(succ).expanduser().exists():
                raise CheckpointMissing(f"success_checkpoint {Path(succ).expanduser()} does not exist (expected a "
                                        "directory written by `wvm train-success`, or 'none')")
            self.success_model = load_success(Path(succ).expanduser(), device=device)  # SuccessLoadError: exit 2
        self.success_id = self.success_model.checkpoint_id if self.success_model is not None else "none"
        # BackendError (nothing allowed can run; strict and the named one cannot) ends the node: code 2
        t_backend = time.perf_counter()
        self.infer_model, selections = create_value_backends(self.model, opts)
        self.backend_description = self.infer_model.backend_description
        self.backend_start_s = time.perf_counter() - t_backend
        fell_back = {part: sel for part, sel in selections.items() if sel.fell_back}
        timings = "; ".join(f"{part}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in sorted(sel.timings_ms.items(),
                                                                                        key=lambda kv: kv[1]))
                            for part, sel in selections.items() if sel.timings_ms)

        self.lock = threading.Lock()          # guards camera slots, task, episode state
        self.model_lock = threading.Lock()    # guards the estimators (used by the worker)
        self.wake = threading.Event()
        self.cameras: list[Camera] = []
        from wvm_ros.core.streaming import dense_factor

        cfg = getattr(self.model, "config", None)
        try:
            dense_factor(float(cfg.sample_fps), self.estimate_fps)
        except ValueError as e:
            raise BadParameter(f"parameter estimate_fps={estimate_fps:g}: {e} (0: one estimate per sampled frame)") from e
        for i, t in enumerate(topics):
            # a ROS header.stamp of 0 is an unset stamp: never a frame's time
            est = StreamingValueEstimator(self.infer_model, self.task, estimate_fps=self.estimate_fps,
                                          backward_tolerance_s=backward_tolerance_s, reject_zero_stamps=True,
                                          value_offset=None if self.apply_value_calibration else 0.0)
            if self.success_model is not None:   # P(done) of the same frame rides on each estimate
                from wvm_ros.core.success import SuccessEstimator, WithSuccess

                est = WithSuccess(est, SuccessEstimator(self.success_model))
            self.cameras.append(Camera(topic=t, index=i, estimator=est))
        self.task_pending: str | None = None
        self.reset_pending = False
        self.reset_after_s = -math.inf        # frames stamped before the last START are dropped
        self.episode_id, self.attempt, self.episode_state = "", 0, ""
        self.estimates = 0

        self.stats = NodeStats(rates=("input", "output", "estimate"), expect_input_within_s=5.0)
        self.stats.extra.update({"model": self.model_name, "checkpoint": self.checkpoint_id,
                                 "success classifier": self.success_id,
                                 "untrained": str(self.untrained), "device": device,
                                 "backend": self.backend_description,
                                 "backend requested": opts.backend,
                                 "backend start-up (s)": f"{self.backend_start_s:.2f}",
                                 **({"backend auto timings": timings} if timings else {}),
                                 "image topics": ", ".join(topics),
                                 "estimates per second": f"{self.cameras[0].estimator.estimate_fps:g}",
                                 "value offset": self._offset_text()})
        from wvm_ros.core.streaming import COUNT_KEYS, NON_FINITE, NON_FINITE_STATUS, ZERO_STAMP_STATUS

        self._non_finite = (NON_FINITE, NON_FINITE_STATUS)
        self._zero_stamp_status = ZERO_STAMP_STATUS

        for k in ("dropped frames", "rejected frames", "errors", PRE_START, *COUNT_KEYS):
            self.stats.count(k, 0)
        warnings = []
        if self.untrained:
            warnings.append("UNTRAINED: randomly initialised weights, values are meaningless")
        if fell_back:
            why = next(iter(fell_back.values())).tried.get(opts.backend, "unavailable")
            fb = (f"backend {opts.backend} unavailable ({why}); using fallback "
                  + " + ".join(sel.backend.describe() for sel in fell_back.values()))
            self.stats.extra["backend fallback"] = fb
            warnings.append(fb)
            self.get_logger().warning(fb)
        self._base_warning = "; ".join(warnings) or None   # standing for the node's life
        self._conditions: dict[str, tuple[float, str]] = {}  # key -> (monotonic time last seen, text)
        self._cond_lock = threading.Lock()
        self.stats.warn(self._base_warning)
        self.errlog = RateLimitedLog(5.0)

        self.pub_progress = self.create_publisher(Progress, "/wvm/progress", reliable(20))
        self.pub_value = self.create_publisher(Float32, "/wvm/progress_value", reliable(20))
        self.pub_overlay = self.create_publisher(Image, "/wvm/overlay", qos_from_name(image_qos, 5))
        self.pub_marker = self.create_publisher(Marker, "/wvm/marker", reliable(5))
        self.pub_state_text = self.create_publisher(String, "/wvm/state_text", reliable(5))
        qos = qos_from_name(image_qos)
        for cam in self.cameras:
            self.create_subscription(Image, cam.topic, self._image_cb(cam), qos)
        self.create_subscription(String, "/wvm/task", self._on_task, reliable())
        self.create_subscription(EpisodeEvent, "/wvm/episode_event", self._on_event, reliable(50))
        self.diag = DiagnosticsPublisher(self, self.stats, name="wvm_value: value model",
                                         hardware_id=device, period_s=diag_period)

        self._running = True
        self.worker = threading.Thread(target=self._work, name="wvm_value_inference", daemon=True)
        self.worker.start()
        self.get_logger().info(
            f"value model {self.model_name} ({'UNTRAINED random weights' if self.untrained else ckpt}, "
            f"checkpoint id {self.checkpoint_id}) on {device}, inference backend {self.backend_description} "
            f"(requested {opts.backend}{'; auto timings ' + timings if timings else ''}, ready in "
            f"{self.backend_start_s:.1f} s); cameras {topics}; "
            f"window h={getattr(cfg, 'h', '?')} at {getattr(cfg, 'sample_fps', '?')} fps, "
            f"{self.cameras[0].estimator.estimate_fps:g} estimates/s; value offset {self._offset_text()}; "
            f"task {self.task!r}")

    def _offset_text(self) -> str:
        off = float(getattr(self.model, "value_offset", 0.0) or 0.0)
        if not self.apply_value_calibration:
            return f"off (apply_value_calibration false; the checkpoint's is {off:+.4f})"
        if not off:
            return f"{off:+.4f} (the checkpoint has no calibration)"
        from wvm_ros.core.value_calibration import rate_mismatch

        note = rate_mismatch(getattr(self.model, "calibration", None), self.cameras[0].estimator.estimate_fps)
        return f"{off:+.4f}" + (f" ({note})" if note else "")

    # --- subscription callbacks (fast: validate, store, wake the worker) --------------------
    def _expected(self) -> str:
        size = f"{self.expected_w}x{self.expected_h}" if self.expected_w and self.expected_h else "any size"
        return f"one of {', '.join(sorted(ENCODINGS))}, {size}"

    def _image_cb(self, cam: Camera):
        expected_hw = (self.expected_h, self.expected_w) if self.expected_w and self.expected_h else None

        def cb(msg: Image) -> None:
            try:
                rgb = image_msg_to_rgb8(msg, expected_hw)
            except ImageError as e:
                self.stats.count("rejected frames")
                if self.errlog.should_log("reject:" + cam.topic):
                    self.get_logger().error(
                        f"rejected frame on {cam.topic}: {e} (encoding {msg.encoding!r}, {msg.width}x{msg.height}, "
                        f"{len(msg.data)} bytes; expected {self._expected()}). Further rejections on this topic "
                        f"are counted in /diagnostics and logged at most every 5 s.")
                return
            stamp = Time(sec=msg.header.stamp.sec, nanosec=msg.header.stamp.nanosec)
            t = stamp_to_sec(stamp)
            ahead, dropped, was_ahead = None, False, False
            with self.lock:
                if t < self.reset_after_s:
                    # from before the current attempt: frames in flight at a START, or (when it
                    # lasts) a START stamped ahead of the image clock
                    dropped = True
                    self.stats.count(PRE_START)
                    now = time.monotonic()
                    if cam.pre_start_since is None:
                        cam.pre_start_since, cam.pre_start_run = now, 0
                    cam.pre_start_run += 1
                    if now - cam.pre_start_since >= self.start_ahead_warn_s:
                        ahead = (f"frames older than the attempt's START on {cam.topic}: {cam.pre_start_run} frames "
                                 f"in {now - cam.pre_start_since:.1f} s dropped, the newest stamped {t:.3f} s, "
                                 f"{self.reset_after_s - t:.3f} s before the START's stamp {self.reset_after_s:.3f} s; "
                                 f"expected image stamps at or after it ("
                                 + ("stamp 0: does the image publisher set header.stamp?)" if t == 0.0 else
                                    "is the START stamped on another clock than the camera, e.g. wall time vs "
                                    "sim time?)"))
                else:
                    was_ahead, cam.pre_start_since, cam.pre_start_run = cam.pre_start_since is not None, None, 0
                    if cam.pending is not None:
                        self.stats.count("dropped frames")
                    cam.pending = (rgb, stamp, msg.header.frame_id, t)
            self.stats.tick("input")   # received, used or not
            if dropped:
                if ahead is not None:
                    self._set_condition("start:" + cam.topic, ahead)
                    if self.errlog.should_log("start:" + cam.topic):
                        self.get_logger().warning(ahead + ". Further such frames are counted in /diagnostics and "
                                                  "logged at most every 5 s.")
                return
            if was_ahead:
                self._clear_condition("start:" + cam.topic)
            self.wake.set()
        return cb

    # --- standing warnings (diagnostics WARN while a condition lasts) ---------------------
    def _set_condition(self, key: str, text: str) -> None:
        with self._cond_lock:
            self._conditions[key] = (time.monotonic(), text)
        self._refresh_warning()

    def _clear_condition(self, key: str) -> None:
        with self._cond_lock:
            had = self._conditions.pop(key, None) is not None
        if had:
            self._refresh_warning()

    def _refresh_warning(self) -> None:
        """Diagnostics WARN = the node's standing warnings plus the conditions seen within CONDITION_HOLD_S."""
        now = time.monotonic()
        with self._cond_lock:
            for k in [k for k, (seen, _) in self._conditions.items() if now - seen > CONDITION_HOLD_S]:
                del self._conditions[k]
            parts = [self._base_warning] if self._base_warning else []
            parts += [txt for _, txt in self._conditions.values()]
        self.stats.warn("; ".join(parts) or None)

    def _on_task(self, msg: String) -> None:
        with self.lock:
            if msg.data != self.task:
                self.task_pending = msg.data
        self.get_logger().info(f"task: {msg.data!r}")
        self.wake.set()

    def _on_event(self, msg: EpisodeEvent) -> None:
        kind = EVENT_NAMES.get(msg.kind, f"kind {msg.kind}")
        with self.lock:
            # an event of another attempt than the current one, other than END: its START was
            # missed (e.g. published before DDS discovery matched us); start the attempt here
            missed_start = (msg.kind not in (EpisodeEvent.START, EpisodeEvent.END) and bool(msg.episode_id)
                            and (msg.episode_id, int(msg.attempt)) != (self.episode_id, self.attempt))
            self.episode_id, self.attempt = msg.episode_id, int(msg.attempt)
            state = kind if not msg.outcome else f"{kind} ({msg.outcome})"
            self.episode_state = state
            if missed_start:
                self.stats.count("missed START events")
                self.get_logger().warning(f"no START seen for {msg.episode_id}#{msg.attempt}: resetting the "
                                          f"window at its {kind} event")
            if msg.kind == EpisodeEvent.START or missed_start:
                self.reset_pending = True
                self.reset_after_s = stamp_to_sec(msg.header.stamp)
                for cam in self.cameras:
                    if cam.pending is not None and cam.pending[3] < self.reset_after_s:
                        cam.pending = None
                if msg.task and msg.task != self.task:
                    self.task_pending = msg.task
        self.wake.set()

    # --- inference thread -----------------------------------------------------------------
    def _work(self) -> None:
        while self._running:
            if not self.wake.wait(timeout=0.2):
                self._refresh_warning()   # conditions no longer seen expire
                continue
            self.wake.clear()
            with self.lock:
                reset, self.reset_pending = self.reset_pending, False
                task, self.task_pending = self.task_pending, None
                jobs = []
                for cam in self.cameras:
                    if cam.pending is not None:
                        jobs.append((cam, cam.pending))
                        cam.pending = None
                episode = (self.episode_id, self.attempt, self.episode_state)
            with self.model_lock:
                if task is not None:
                    try:
                        for cam in self.cameras:
                            cam.estimator.set_task(task)
                        self.task = task
                    except Exception as e:
                        self._error(f"cannot set task {task!r}: {type(e).__name__}: {e}")
                if reset:
                    for cam in self.cameras:
                        cam.estimator.reset()
                        cam.last = None
                for cam, (rgb, stamp, frame_id, t) in jobs:
                    try:
                        self._infer(cam, rgb, stamp, frame_id, t, episode)
                    except RCLError:
                        if self._running and self.context.ok():
                            raise
                        return  # Ctrl-C shut the context down under a publish: stop quietly

    def _count_estimator(self, cam: Camera) -> None:
        """Add what the camera's estimator counted since last time (stamps, non-finite outputs) to the stats."""
        counts = getattr(cam.estimator, "counts", None)
        if not isinstance(counts, Mapping):
            return
        for k, v in counts.items():
            d = int(v) - cam.counted.get(k, 0)
            if d > 0:
                self.stats.count(k, d)
            cam.counted[k] = int(v)

    def _stamp_report(self, cam: Camera) -> str:
        """Say (log, diagnostics) why the frame just pushed was not used; the Progress status for it
        ("" when it was used and the stamps advance)."""
        problem = str(getattr(cam.estimator, "stamp_problem", "") or "")
        why = str(getattr(cam.estimator, "frame_status", "") or "")
        key = "stamps:" + cam.topic
        if problem:   # frames keep coming without an advancing stamp: no estimate can come from them
            self._set_condition(key, f"{cam.topic}: {problem}")
        elif why == self._zero_stamp_status:   # an image publisher that does not set header.stamp
            self._set_condition(key, f"{cam.topic}: {why}")
        elif not why:
            self._clear_condition(key)
        if (problem or why) and self.errlog.should_log(key):
            self.get_logger().warning(f"{cam.topic}: {problem or why}. Frames not used for their stamps are counted "
                                      f"in /diagnostics and logged at most every 5 s.")
        return problem or why

    def _infer(self, cam: Camera, rgb, stamp: Time, frame_id: str, t: float, episode) -> None:
        t0 = time.perf_counter()
        try:
            est = cam.estimator.push(rgb, t)
        except Exception as e:
            self._error(f"inference failed on {cam.topic}: {type(e).__name__}: {e}")
            self._publish(cam, None, stamp, frame_id, episode, status=f"inference error: {type(e).__name__}: {e}",
                          latency=time.perf_counter() - t0, frame=rgb)
            return
        self._count_estimator(cam)
        stamp_status = self._stamp_report(cam)
        if stamp_status and (est is None or getattr(cam.estimator, "stamp_problem", "")):
            # no estimate yet, or none can come while the stamps do not advance: say why
            cam.last_frame = rgb
            self._publish(cam, None, stamp, frame_id, episode, status=stamp_status,
                          latency=time.perf_counter() - t0, frame=rgb)
            return
        if est is not None and bool(getattr(est, "valid", True)) and not _finite(getattr(est, "progress", math.nan)):
            # an estimator that calls a non-finite value valid: never published as a number
            est = copy.copy(est)
            est.valid = False
            est.status = (f"{self._non_finite[1]}: progress {getattr(est, 'progress', None)!r} "
                          f"(expected a finite value in [0, 1]; estimate not used)")
        cam.last_frame = rgb
        cam.stamps[t] = (stamp, frame_id)
        while len(cam.stamps) > 256:
            cam.stamps.pop(next(iter(cam.stamps)))
        if est is not None:
            new = cam.last is None or est.stamp_s != cam.last.stamp_s
            cam.last = est
            if new:
                self.stats.add_latency(float(getattr(est, "latency_s", time.perf_counter() - t0)))
                self.stats.tick("estimate")
                status = str(getattr(est, "status", "") or "")
                if not bool(getattr(est, "valid", True)) and status.startswith(self._non_finite[1]):
                    if not isinstance(getattr(cam.estimator, "counts", None), Mapping):
                        self.stats.count(self._non_finite[0])   # the estimator does not count them itself
                    self._error(f"{cam.topic}: {status}")
                if str(getattr(est, "status", "")).startswith("attempt clock"):
                    # a model with the elapsed-time input and no attempt START for longer than it
                    # was trained on: counted, said in Progress.status and (rate-limited) the log
                    self.stats.count("estimates past the attempt clock")
                    if self.errlog.should_log("clock:" + cam.topic):
                        self.get_logger().warning(f"{cam.topic}: {est.status}; is the policy node (or whatever "
                                                  f"publishes EpisodeEvent START on /wvm/episode_event) running? "
                                                  f"A model without the clock: models/wvm-tiny-pusht-noclock")
            # header stamp = the newest image the estimate used (frames between samples
            # republish the latest estimate with its own stamp, so consumers see it is unchanged)
            stamp, frame_id = cam.stamps.get(est.stamp_s, (stamp, frame_id))
        self._publish(cam, est, stamp, frame_id, episode, latency=time.perf_counter() - t0, frame=rgb)

    def _error(self, text: str) -> None:
        self.stats.error(text)
        if self.errlog.should_log("error:" + text[:40]):
            self.get_logger().error(text)

    def _fused(self, cam: Camera, now_s: float) -> float | None:
        vals = [c.last.progress for c in self.cameras
                if c.last is not None and c.last.valid and _finite(c.last.progress)
                and (c is cam or now_s - c.last.stamp_s <= self.stale_after_s)]
        return float(np.mean(vals)) if vals else None

    def _fused_success(self, cam: Camera, now_s: float) -> float:
        vals = [c.last.success for c in self.cameras
                if c.last is not None and c.last.valid and math.isfinite(getattr(c.last, "success", math.nan))
                and (c is cam or now_s - c.last.stamp_s <= self.stale_after_s)]
        return float(np.mean(vals)) if vals else float("nan")

    def _publish(self, cam: Camera, est, stamp: Time, frame_id: str, episode, status: str = "",
                 latency: float = 0.0, frame=None) -> None:
        episode_id, attempt, state = episode
        msg = Progress()
        msg.header.stamp = stamp
        msg.header.frame_id = frame_id
        msg.task = self.task
        msg.episode_id, msg.attempt = episode_id, attempt
        msg.model_name, msg.checkpoint_id, msg.untrained = self.model_name, self.checkpoint_id, self.untrained
        valid = est is not None and bool(getattr(est, "valid", True)) and not status
        value = self._fused(cam, stamp_to_sec(stamp)) if valid else None
        if valid and value is not None:
            msg.progress = float(min(1.0, max(0.0, value)))
            msg.chunk = [float(v) for v in np.asarray(est.chunk, dtype=np.float32).reshape(-1)]
            msg.valid = True
            msg.inference_latency = float(getattr(est, "latency_s", latency))
            msg.success = self._fused_success(cam, stamp_to_sec(stamp))
        else:
            msg.progress = float("nan")
            msg.success = float("nan")
            msg.valid = False
            msg.inference_latency = float(latency)
            if not status:
                status = str(getattr(est, "status", "") or "warming up") if est is not None else "warming up"
        parts = [s for s in (status, str(getattr(est, "status", "") or "") if valid else "") if s]
        if self.untrained:
            parts.insert(0, "UNTRAINED")
        msg.status = "; ".join(dict.fromkeys(parts))
        self.pub_progress.publish(msg)
        self.stats.tick("output")
        if msg.valid:
            self.pub_value.publish(Float32(data=msg.progress))
        self.pub_state_text.publish(String(data=state_text(episode_id, attempt, state, msg, self.untrained)))
        self.estimates += 1
        if cam.index == 0:
            self._publish_marker(msg)
            if self.overlay_every > 0 and frame is not None and self.estimates % self.overlay_every == 0:
                self._publish_overlay(msg, frame, state)

    def _publish_overlay(self, msg: Progress, frame: np.ndarray, state: str) -> None:
        try:
            img = draw_overlay(frame, OverlayState(
                progress=msg.progress if msg.valid else None, valid=msg.valid, task=msg.task,
                episode=episode_label(msg.episode_id, msg.attempt, state), status=msg.status,
                untrained=self.untrained, model=f"{self.model_name}@{self.checkpoint_id}",
                success=msg.success if msg.valid else None))
            out = array_to_image_msg(img, "rgb8")
            out.header = msg.header
            self.pub_overlay.publish(out)
        except Exception as e:  # the overlay must never stop the estimates
            self._error(f"overlay failed: {type(e).__name__}: {e}")

    def _publish_marker(self, msg: Progress) -> None:
        m = Marker()
        m.header.stamp = msg.header.stamp
        m.header.frame_id = self.marker_frame_id or msg.header.frame_id
        m.ns, m.id = "wvm_progress", 0
        m.type, m.action = Marker.TEXT_VIEW_FACING, Marker.ADD
        m.pose.position.z = 0.3
        m.pose.orientation.w = 1.0
        m.scale.z = 0.08
        p = msg.progress if msg.valid else 0.0
        m.color.r, m.color.g, m.color.b, m.color.a = float(1.0 - p), float(p), 0.2, 1.0
        value = f"{msg.progress:.2f}" if msg.valid else "--"
        m.text = f"progress {value}" + (" (UNTRAINED)" if self.untrained else "")
        self.pub_marker.publish(m)

    def destroy_node(self):
        self._running = False
        self.wake.set()
        if self.worker.is_alive():
            self.worker.join(timeout=5)
        return super().destroy_node()


def main(args=None) -> int:
    rclpy.init(args=args)
    node = None
    rc = 0
    try:
        node = ValueNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as e:
        load_errors: tuple = (CheckpointMissing, BadBackendParameters, BadParameter)
        if "wvm_ros.core.baselines" in sys.modules:   # SuccessLoadError is one of these
            load_errors += (sys.modules["wvm_ros.core.baselines"].BaselineLoadError,)
        if "wvm_ros.core.model" in sys.modules:
            load_errors += (sys.modules["wvm_ros.core.model"].ModelLoadError,)
        if "wvm_ros.core.backends" in sys.modules:
            load_errors += (sys.modules["wvm_ros.core.backends"].BackendError,)
        if isinstance(e, load_errors):
            print(f"wvm_value: cannot start: {e}", file=sys.stderr, flush=True)
            rc = 2
        else:
            import traceback

            traceback.print_exc()
            print(f"wvm_value: cannot start: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            rc = 1
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    return rc


if __name__ == "__main__":
    sys.exit(main())
