"""core.camera: source parsing, replay of a synthetic video, pacing, looping, resizing, and
reconnection with backoff when the source disappears and comes back."""
from __future__ import annotations

import os
import time

import cv2
import numpy as np
import pytest

from wvm_ros.core.camera import (Backoff, CameraConfig, CameraError, CameraStream, parse_source,
                                 write_test_video)


@pytest.fixture
def video(tmp_path):
    path = tmp_path / "clip.avi"
    write_test_video(path, n_frames=10, size=(64, 48), fps=30)
    return path


def _read_n(cam: CameraStream, n: int, timeout_s: float = 10.0) -> list:
    out, deadline = [], time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        f = cam.read()
        if f is not None:
            out.append(f)
    return out


def test_parse_source_kinds(tmp_path):
    assert parse_source("0").kind == "v4l2" and parse_source("0").target == 0
    assert parse_source(2).target == 2
    assert parse_source("/dev/video4").kind == "v4l2"
    assert parse_source("/dev/v4l/by-id/usb-cam-video-index0").kind == "v4l2"
    for url in ("rtsp://10.0.0.5:554/stream", "http://cam.local/mjpg", "HTTPS://x/y"):
        assert parse_source(url).kind == "url"
    assert parse_source("file:///data/run.mp4") .target == "/data/run.mp4"
    assert parse_source(str(tmp_path / "x.mp4")).kind == "file"
    with pytest.raises(CameraError, match="empty"):
        parse_source("  ")
    with pytest.raises(CameraError, match=">= 0"):
        parse_source(-1)


def test_gstreamer_pipeline_needs_gstreamer():
    pipeline = "v4l2src device=/dev/video0 ! videoconvert"
    from wvm_ros.core.camera import gstreamer_available

    if gstreamer_available():
        spec = parse_source(pipeline)
        assert spec.kind == "gstreamer" and spec.target.endswith("appsink drop=true max-buffers=1")
    else:
        with pytest.raises(CameraError, match="without GStreamer"):
            parse_source(pipeline)


def test_config_validation():
    for bad, match in [(dict(width=-1), "width"), (dict(width=640), "both"), (dict(fps=-2), "fps"),
                       (dict(reconnect_initial_backoff_s=5, reconnect_max_backoff_s=1), "backoff")]:
        with pytest.raises(CameraError, match=match):
            CameraConfig(device="x.mp4", **bad).validate()


def test_backoff_doubles_up_to_the_maximum_and_resets():
    b = Backoff(0.5, 3.0)
    assert [b.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next_delay() == 0.5


def test_replay_frames_rgb_pacing_and_loop(video):
    cam = CameraStream(CameraConfig(device=str(video), fps=50.0, loop_file=True))
    t0 = time.monotonic()
    frames = _read_n(cam, 25)
    dt = time.monotonic() - t0
    cam.close()
    assert len(frames) == 25
    img = frames[0].image
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    # the square is red (BGR (0,0,255) in the file): RGB order means channel 0 is high there
    sq = img[20:28, 2:8]
    assert sq[..., 0].mean() > 150 and sq[..., 2].mean() < 100
    # frame i carries i*8 in its top-left block: the sequence restarts after 10 frames (loop)
    marks = [int(round(f.image[:4, :4].mean() / 8)) for f in frames]
    assert marks[:10] == list(range(10)) and marks[10:20] == list(range(10))
    assert cam.stats.loops == 2 and cam.stats.reconnects == 0
    # paced at 50 fps: 25 frames take about 0.5 s (not as fast as decoding allows)
    assert 0.4 < dt < 3.0, dt
    assert [f.index for f in frames] == list(range(25))


def test_replay_without_loop_ends(video):
    cam = CameraStream(CameraConfig(device=str(video), fps=500.0, loop_file=False))
    frames = _read_n(cam, 15, timeout_s=3)
    assert len(frames) == 10 and cam.stats.state == "ended"
    assert cam.read() is None


def test_resize_to_requested_size(video):
    cam = CameraStream(CameraConfig(device=str(video), width=32, height=24, fps=500.0))
    f = _read_n(cam, 1)[0]
    assert f.image.shape == (24, 32, 3) and cam.stats.source_size == (64, 48)


def test_file_disappears_and_comes_back(video, tmp_path):
    cam = CameraStream(CameraConfig(device=str(video), fps=200.0, loop_file=True,
                                    reconnect_initial_backoff_s=0.05, reconnect_max_backoff_s=0.2))
    assert len(_read_n(cam, 5)) == 5
    hidden = tmp_path / "hidden.avi"
    os.rename(video, hidden)
    # the open file plays to its end, then the re-open fails: no frames while it is gone
    t_end = time.monotonic() + 1.0
    while time.monotonic() < t_end:
        cam.read()
    assert cam.stats.state == "reconnecting" and "does not exist" in cam.stats.last_error
    assert all(cam.read() is None for _ in range(5))
    os.rename(hidden, video)
    t0 = time.monotonic()
    got = _read_n(cam, 3, timeout_s=5)
    assert len(got) == 3, cam.stats
    assert time.monotonic() - t0 < 2.0  # backoff capped at 0.2 s (slack for a loaded CI machine)
    assert cam.stats.reconnects == 1 and cam.stats.state == "open"
    cam.close()


def test_missing_file_at_start_then_created(tmp_path):
    path = tmp_path / "later.avi"
    cam = CameraStream(CameraConfig(device=str(path), fps=200.0, reconnect_initial_backoff_s=0.05,
                                    reconnect_max_backoff_s=0.1))
    assert cam.read() is None and cam.stats.state == "reconnecting"
    write_test_video(path, n_frames=4, size=(32, 24))
    assert len(_read_n(cam, 2, timeout_s=5)) == 2


class _FakeDevice:
    """A V4L2 camera cannot exist on these machines: a stand-in with the cv2.VideoCapture API
    that can be unplugged (reads fail, opens fail) and plugged back in."""

    def __init__(self):
        self.plugged = True
        self.props: dict[int, float] = {}
        self.opened = 0

    def factory(self, spec):
        dev = self

        class Cap:
            def __init__(self):
                self.ok = dev.plugged
                dev.opened += 1

            def isOpened(self):
                return self.ok

            def set(self, prop, value):
                dev.props[prop] = value
                return True

            def get(self, prop):
                return dev.props.get(prop, 0.0)

            def read(self):
                if not dev.plugged:
                    return False, None
                return True, np.full((48, 64, 3), 200, np.uint8)

            def release(self):
                self.ok = False

        return Cap()


def test_live_device_unplugged_and_plugged_back_with_backoff():
    dev = _FakeDevice()
    clock = [0.0]
    cam = CameraStream(CameraConfig(device="/dev/video0", width=64, height=48, fps=30, exposure=120,
                                    reconnect_initial_backoff_s=0.01, reconnect_max_backoff_s=0.04),
                       clock=lambda: clock[0], capture_factory=dev.factory)
    assert cam.read() is not None
    assert dev.props[cv2.CAP_PROP_FRAME_WIDTH] == 64 and dev.props[cv2.CAP_PROP_EXPOSURE] == 120
    assert dev.props[cv2.CAP_PROP_AUTO_EXPOSURE] == 1  # manual exposure
    dev.plugged = False
    delays = []
    for _ in range(6):
        assert cam.read() is None
        delays.append(round(cam._retry_at - clock[0], 3))
        clock[0] = cam._retry_at  # time passes until the next attempt
    assert delays[:4] == [0.01, 0.02, 0.04, 0.04]  # exponential, capped
    assert cam.stats.state == "reconnecting"
    dev.plugged = True
    assert cam.read() is not None
    assert cam.stats.reconnects == 1 and cam.stats.state == "open"
    # backoff reset after a good frame
    dev.plugged = False
    cam.read()
    assert round(cam._retry_at - clock[0], 3) == 0.01


def test_network_stream_drops_and_comes_back(tmp_path):
    """An http:// source (FFmpeg) served from this process: the server goes away and comes
    back on the same port; the stream reconnects by itself."""
    import functools
    import http.server
    import threading

    write_test_video(tmp_path / "clip.avi", n_frames=10, size=(64, 48))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))

    def serve(port=0):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        return srv

    srv = serve()
    port = srv.server_address[1]
    cam = CameraStream(CameraConfig(device=f"http://127.0.0.1:{port}/clip.avi", reconnect_initial_backoff_s=0.05,
                                    reconnect_max_backoff_s=0.2, open_timeout_s=2, read_timeout_s=2))
    assert cam.spec.kind == "url"
    try:
        assert len(_read_n(cam, 5)) == 5
        srv.shutdown()
        srv.server_close()
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            cam.read()
        assert cam.stats.state == "reconnecting" and "could not open stream http" in cam.stats.last_error
        srv = serve(port)
        assert len(_read_n(cam, 3, timeout_s=10)) == 3
        assert cam.stats.state == "open" and cam.stats.reconnects >= 1
    finally:
        cam.close()
        srv.shutdown()
        srv.server_close()


SECONDS = "must be a finite number of seconds > 0"


@pytest.mark.parametrize("field,value,needle", [
    ("fps", float("nan"), "camera fps must be a finite number >= 0"),
    ("fps", float("inf"), "camera fps must be a finite number >= 0"),
    ("exposure", float("nan"), "camera exposure must be a finite number"),
    ("reconnect_initial_backoff_s", float("nan"), "camera reconnect_initial_backoff_s " + SECONDS),
    ("reconnect_initial_backoff_s", 0.0, "camera reconnect_initial_backoff_s " + SECONDS),
    ("reconnect_max_backoff_s", float("nan"), "camera reconnect_max_backoff_s " + SECONDS),
    ("reconnect_max_backoff_s", float("inf"), "camera reconnect_max_backoff_s " + SECONDS),
    ("open_timeout_s", float("nan"), "camera open_timeout_s " + SECONDS),
    ("read_timeout_s", -1.0, "camera read_timeout_s " + SECONDS),
    ("width", float("nan"), "camera width must be a whole number >= 0"),
    ("height", 24.5, "camera height must be a whole number >= 0"),
])
def test_config_rejects_non_finite_and_out_of_range_numbers(field, value, needle):
    with pytest.raises(CameraError, match=needle) as ei:
        CameraConfig(device="/nonexistent.mp4", **{field: value}).validate()
    assert "got" in str(ei.value)
    with pytest.raises(CameraError, match=field):
        CameraStream(CameraConfig(device="/nonexistent.mp4", **{field: value}))


def test_backoff_rejects_non_finite_delays():
    for args in ((float("nan"), 1.0), (0.5, float("nan")), (0.0, 1.0), (2.0, 1.0)):
        with pytest.raises(CameraError, match="backoff"):
            Backoff(*args)


def test_missing_source_read_does_not_busy_loop():
    """read() on a missing source waits for the backoff: a handful of open attempts in 0.3 s."""
    cam = CameraStream(CameraConfig(device="/nonexistent/clip.mp4", reconnect_initial_backoff_s=0.1,
                                    reconnect_max_backoff_s=0.1))
    calls, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 0.3:
        assert cam.read() is None
        calls += 1
    cam.close()
    assert calls < 20 and cam.stats.state == "closed"
