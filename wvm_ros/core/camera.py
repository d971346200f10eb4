"""ROS-free camera capture with OpenCV, with reconnection.

Sources (the ``device`` string, as the camera node's ``device`` parameter takes it):

* ``"0"``, ``"2"``: a V4L2 device index; ``"/dev/video0"``: a V4L2 device path;
* a GStreamer pipeline (contains ``!``; needs an OpenCV built with GStreamer, which the
  pip wheels are not: the error says so). ``appsink`` is appended when missing;
* ``rtsp://``, ``rtsps://``, ``http(s)://``, ``rtmp://``, ``udp://``, ``tcp://`` URLs (FFmpeg);
* anything else is a video file for replay (``file://`` prefix allowed), optionally looped.

`CameraStream` owns one source. ``read()`` returns the next frame as RGB uint8
(``Frame``), or None while the source is unavailable: a source that fails to open or
stops delivering frames is closed and re-opened with exponential backoff
(``reconnect_initial_backoff_s`` doubling up to ``reconnect_max_backoff_s``), so a
camera unplugged and plugged back in, a network stream that drops, or a replay file that
is removed and restored all come back without restarting the node. A file that is
looped is re-opened at its end (not rewound), so its disappearance is noticed.

Files are paced at ``fps`` (or the file's own rate when ``fps`` is 0); live sources
are paced by the device. ``width``/``height`` are requested from live devices; when the
source delivers another size the frame is resized to the requested size (a warning is
logged once), so the published size is always what the parameters say and can be
checked against a calibration.
"""
from __future__ import annotations

import logging
import math
import numbers
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

log = logging.getLogger(__name__)

URL_RE = re.compile(r"^(rtsps?|https?|rtmp|udp|tcp|srt)://", re.IGNORECASE)
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".gif")


class CameraError(RuntimeError):
    """A camera configuration that can never work (not a transient disconnection)."""


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # "v4l2" | "gstreamer" | "url" | "file"
    target: str | int  # what cv2.VideoCapture gets
    api: int  # cv2.CAP_*

    @property
    def live(self) -> bool:
        return self.kind != "file"

    def describe(self) -> str:
        if self.kind == "v4l2" and isinstance(self.target, int):
            return f"V4L2 device /dev/video{self.target}"
        names = {"v4l2": "V4L2 device", "gstreamer": "GStreamer pipeline", "url": "stream", "file": "video file"}
        return f"{names[self.kind]} {self.target}"


def parse_source(device: str | int) -> SourceSpec:
    """Classify a ``device`` string (see the module docstring)."""
    if isinstance(device, int):
        if device < 0:
            raise CameraError(f"camera device index must be >= 0, got {device}")
        return SourceSpec("v4l2", device, cv2.CAP_V4L2)
    text = str(device).strip()
    if not text:
        raise CameraError("camera device is empty; expected an index (0), /dev/videoN, a GStreamer "
                          "pipeline, an rtsp/http URL or a video file")
    if text.isdigit():
        return SourceSpec("v4l2", int(text), cv2.CAP_V4L2)
    if re.match(r"^/dev/video\d+$", text) or text.startswith("/dev/v4l/"):
        return SourceSpec("v4l2", text, cv2.CAP_V4L2)
    if "!" in text:
        if not gstreamer_available():
            raise CameraError(
                f"camera device {text!r} is a GStreamer pipeline, but this OpenCV "
                f"({cv2.__version__}) was built without GStreamer (the PyPI wheels are); use the "
                "system OpenCV (apt python3-opencv, or the Jetson image), a V4L2 device or a URL")
        if "appsink" not in text:
            text = text + " ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1"
        return SourceSpec("gstreamer", text, cv2.CAP_GSTREAMER)
    if URL_RE.match(text):
        return SourceSpec("url", text, cv2.CAP_FFMPEG)
    if text.startswith("file://"):
        text = text[len("file://"):]
    return SourceSpec("file", os.path.expanduser(text), cv2.CAP_FFMPEG)


def gstreamer_available() -> bool:
    info = cv2.getBuildInformation()
    m = re.search(r"GStreamer:\s*(\S+)", info)
    return bool(m) and m.group(1).upper() != "NO"


@dataclass
class CameraConfig:
    device: str = "0"
    width: int = 0  # 0 = whatever the source gives
    height: int = 0
    fps: float = 0.0  # 0 = source rate (files: the file's own rate)
    exposure: float = -1.0  # -1 = auto; otherwise the driver's manual exposure value
    loop_file: bool = True
    reconnect_initial_backoff_s: float = 0.5
    reconnect_max_backoff_s: float = 10.0
    open_timeout_s: float = 5.0  # network streams
    read_timeout_s: float = 5.0

    def validate(self) -> None:
        """Raise CameraError naming the first bad field and what it expects. Every number must
        be finite: a NaN would otherwise pass the range checks (NaN < 0 is False), switch file
        pacing off (fps) or make a missing source be retried in a busy loop (backoff)."""
        for name in ("width", "height"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) \
                    or not math.isfinite(v) or v != int(v) or v < 0:
                raise CameraError(f"camera {name} must be a whole number >= 0 (0 = source size), got {v!r}")
        if (self.width == 0) != (self.height == 0):
            raise CameraError(f"camera width and height must be both set or both 0, got {self.width}x{self.height}")
        _check_number("fps", self.fps, "a finite number >= 0 (0 = source rate)", lambda v: v >= 0)
        _check_number("exposure", self.exposure, "a finite number (< 0 = auto, else the driver's manual value)",
                      lambda v: True)
        for name in ("reconnect_initial_backoff_s", "reconnect_max_backoff_s", "open_timeout_s", "read_timeout_s"):
            _check_number(name, getattr(self, name), "a finite number of seconds > 0", lambda v: v > 0)
        if self.reconnect_max_backoff_s < self.reconnect_initial_backoff_s:
            raise CameraError("reconnect backoff must satisfy 0 < initial <= max, got "
                              f"{self.reconnect_initial_backoff_s} / {self.reconnect_max_backoff_s}")


def _check_number(name: str, value, expected: str, ok: Callable[[float], bool]) -> None:
    """CameraError "camera NAME must be EXPECTED, got VALUE" unless VALUE is a finite real number
    for which ok(VALUE) holds."""
    good = not isinstance(value, bool) and isinstance(value, numbers.Real)
    if good:
        v = float(value)
        good = math.isfinite(v) and ok(v)
    if not good:
        raise CameraError(f"camera {name} must be {expected}, got {value!r}")


@dataclass
class Backoff:
    """Exponential backoff: initial, 2x initial, ... capped at maximum; reset() on success."""

    initial_s: float = 0.5
    maximum_s: float = 10.0
    _next: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        for name, v in (("initial_s", self.initial_s), ("maximum_s", self.maximum_s)):
            if not (isinstance(v, numbers.Real) and math.isfinite(v) and v > 0):
                raise CameraError(f"backoff {name} must be a finite number of seconds > 0, got {v!r}")
        if self.maximum_s < self.initial_s:
            raise CameraError(f"backoff must satisfy initial_s <= maximum_s, got {self.initial_s} / {self.maximum_s}")
        self._next = self.initial_s

    def next_delay(self) -> float:
        d = self._next
        self._next = min(self.maximum_s, self._next * 2.0)
        return d

    def reset(self) -> None:
        self._next = self.initial_s


@dataclass
class Frame:
    image: np.ndarray  # H x W x 3 uint8 RGB
    stamp_s: float  # wall-clock time (time.time()) at capture
    index: int  # frames delivered since the stream was created


@dataclass
class CameraStats:
    state: str = "closed"  # "open" | "looping" | "reconnecting" | "ended" | "closed"
    frames: int = 0
    opens: int = 0
    reconnects: int = 0  # successful opens after a failure
    loops: int = 0  # replay file restarts
    last_error: str = ""
    source_size: tuple[int, int] | None = None  # (w, h) the source delivers


class CameraStream:
    """One OpenCV capture source with pacing and reconnection (see the module docstring).

    ``read()`` blocks at most about one frame period or one backoff delay; it can be
    interrupted from another thread with ``stop()``.
    """

    def __init__(self, config: CameraConfig, *, clock: Callable[[], float] = time.monotonic,
                 capture_factory: Callable[[SourceSpec], "cv2.VideoCapture"] | None = None):
        config.validate()
        self.config = config
        self.spec = parse_source(config.device)
        self.stats = CameraStats()
        self._clock = clock
        self._factory = capture_factory or self._open_capture
        self._cap: cv2.VideoCapture | None = None
        self._backoff = Backoff(config.reconnect_initial_backoff_s, config.reconnect_max_backoff_s)
        self._retry_at = 0.0
        self._next_due = 0.0
        self._period = 0.0
        self._stop = threading.Event()
        self._warned_resize = False
        self._frames_since_open = 0

    # -- public -------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._cap is not None

    def stop(self) -> None:
        """Make a blocked read() return None soon (from another thread)."""
        self._stop.set()

    def read(self) -> Frame | None:
        """The next frame, or None while the source is unavailable / ended / stopped."""
        if self._stop.is_set() or self.stats.state == "ended":
            return None
        if self._cap is None:
            wait = self._retry_at - self._clock()
            if wait > 0:
                self._stop.wait(min(wait, 0.5))
                return None
            if not self._try_open():
                return None
        if not self.spec.live:
            self._pace()
            if self._stop.is_set():
                return None
        ok, bgr = self._cap.read()
        stamp = time.time()
        if not ok or bgr is None:
            if not self.spec.live and self._frames_since_open > 0:
                # end of file: re-open (loop) so that a removed file is noticed, or stop
                self._close()
                if self.config.loop_file:
                    self._retry_at = 0.0
                    self.stats.state = "looping"
                    self.stats.loops += 1
                    return self.read()
                self.stats.state = "ended"
                log.info("camera %s: end of file", self.spec.target)
                return None
            self._lost("no frame from the source")
            return None
        self._backoff.reset()
        self._frames_since_open += 1
        image = self._to_rgb(bgr)
        self.stats.frames += 1
        return Frame(image, stamp, self.stats.frames - 1)

    def close(self) -> None:
        self._close()
        self.stats.state = "closed"

    def __enter__(self) -> "CameraStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------
    def _open_capture(self, spec: SourceSpec) -> cv2.VideoCapture:
        params: list[int] = []
        if spec.kind == "url":
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.config.open_timeout_s * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.config.read_timeout_s * 1000)]
        cap = cv2.VideoCapture(spec.target, spec.api, params)
        return cap

    def _try_open(self) -> bool:
        spec = self.spec
        if spec.kind == "file" and not os.path.isfile(spec.target):
            return self._failed_open(f"{spec.describe()} does not exist")
        try:
            cap = self._factory(spec)
        except cv2.error as e:  # noqa: PERF203
            return self._failed_open(f"OpenCV could not open {spec.target}: {e}")
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            return self._failed_open(f"could not open {spec.describe()}")
        self._configure(cap)
        self._cap = cap
        self._frames_since_open = 0
        if self.stats.state == "reconnecting" and self.stats.opens > 0:
            self.stats.reconnects += 1
        self.stats.opens += 1
        if self.stats.state not in ("open", "looping"):
            log.info("camera: opened %s", spec.describe())
        self.stats.state = "open"
        self.stats.last_error = ""
        if not spec.live:
            fps = self.config.fps or float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            self._period = 1.0 / fps if fps > 0 else 1.0 / 30.0
        return True

    def _configure(self, cap: cv2.VideoCapture) -> None:
        c = self.config
        if not self.spec.live:
            return
        if c.width and c.height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, c.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, c.height)
        if c.fps:
            cap.set(cv2.CAP_PROP_FPS, c.fps)
        if self.spec.kind == "v4l2":
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of old ones
            if c.exposure >= 0:
                cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, 1)  # V4L2: 1 = manual, 3 = aperture priority (auto)
                cap.set(cv2.CAP_PROP_EXPOSURE, c.exposure)
            else:
                cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, 3)

    def _failed_open(self, why: str) -> bool:
        delay = self._backoff.next_delay()
        self._retry_at = self._clock() + delay
        if self.stats.state != "reconnecting" or why != self.stats.last_error:
            log.warning("camera: %s; retrying in %.1f s (backoff up to %.1f s)", why, delay,
                        self.config.reconnect_max_backoff_s)
        self.stats.state = "reconnecting"
        self.stats.last_error = why
        return False

    def _lost(self, why: str) -> None:
        self._close()
        self._failed_open(f"{self.spec.describe()}: {why}")

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _pace(self) -> None:
        now = self._clock()
        if self._next_due <= 0 or now - self._next_due > 1.0:  # first frame, or far behind
            self._next_due = now
        wait = self._next_due - now
        if wait > 0:
            self._stop.wait(wait)
        self._next_due += self._period

    def _to_rgb(self, bgr: np.ndarray) -> np.ndarray:
        if bgr.ndim == 2:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
        elif bgr.shape[2] == 4:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGRA2RGB)
        else:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        self.stats.source_size = (w, h)
        c = self.config
        if c.width and c.height and (w, h) != (c.width, c.height):
            if not self._warned_resize:
                log.warning("camera %s delivers %dx%d, not the requested %dx%d: resizing every frame",
                            self.spec.target, w, h, c.width, c.height)
                self._warned_resize = True
            rgb = cv2.resize(rgb, (c.width, c.height), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(rgb)


def write_test_video(path: str | os.PathLike, n_frames: int = 30, size: tuple[int, int] = (64, 48),
                     fps: float = 30.0) -> None:
    """Write a short synthetic video (a moving square on a gradient; frame i has the value i
    in its top-left pixel block) with OpenCV; used by tests and the replay example."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise CameraError(f"OpenCV cannot write a video to {path} (MJPG/AVI)")
    try:
        for i in range(n_frames):
            img = np.zeros((h, w, 3), np.uint8)
            img[:, :, 1] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
            x = int((w - 10) * i / max(1, n_frames - 1))
            cv2.rectangle(img, (x, h // 2 - 5), (x + 10, h // 2 + 5), (0, 0, 255), -1)  # red in BGR
            img[:8, :8] = (i * 8) % 256
            writer.write(img)
    finally:
        writer.release()
