"""The camera node over DDS: replay of a synthetic video file as rgb8 Image + CameraInfo (with a
calibration loaded by file://), the file disappearing and coming back, a second instance by
node name, and the refusal of a calibration of another size."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from conftest import node_cmd, requires_ros
from wvm_ros.core.calibration import CameraCalibration
from wvm_ros.core.camera import write_test_video

pytestmark = [requires_ros, pytest.mark.ros, pytest.mark.timeout(120)]


class _Listener:
    def __init__(self, ctx, topics: list[str]):
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from sensor_msgs.msg import CameraInfo, Image

        from wvm_ros.ros.qos import reliable

        self.node = Node("camera_test_listener", context=ctx)
        self.msgs: dict[str, list] = {t: [] for t in topics}
        from diagnostic_msgs.msg import DiagnosticArray

        for t in topics:
            typ = CameraInfo if t.endswith("camera_info") else DiagnosticArray if t == "/diagnostics" else Image
            self.node.create_subscription(typ, t, lambda m, t=t: self.msgs[t].append((time.monotonic(), m)),
                                          reliable(5))
        self.ex = SingleThreadedExecutor(context=ctx)
        self.ex.add_node(self.node)

    def spin_until(self, cond, timeout_s: float, what: str, procs=None):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.ex.spin_once(timeout_sec=0.05)
            if cond():
                return
        logs = "\n".join(c.log_tail() for c in procs.children) if procs else ""
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{logs}")

    def spin_for(self, seconds: float):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ex.spin_once(timeout_sec=0.05)

    def close(self):
        self.ex.shutdown()
        self.node.destroy_node()


def test_camera_node_replays_and_reconnects(tmp_path, ros_env, procs, rclpy_context):
    video = tmp_path / "clip.avi"
    write_test_video(video, n_frames=8, size=(64, 48), fps=30)
    calib = CameraCalibration("front", 64, 48, [[60, 0, 32], [0, 60, 24], [0, 0, 1]], [0.01, 0, 0, 0, 0])
    calib.save(tmp_path / "front.yaml")
    procs.start("camera", node_cmd(
        "wvm_ros.nodes.camera_node", "-p", f"device:={video}", "-p", "fps:=20.0", "-p", "camera_name:=front",
        "-p", "frame_id:=front_optical", "-p", f"camera_info_url:=file://{tmp_path}/${{NAME}}.yaml",
        "-p", "reconnect_initial_backoff_s:=0.1", "-p", "reconnect_max_backoff_s:=0.4"), env=ros_env)
    procs.start("wrist", node_cmd("wvm_ros.nodes.camera_node", "-r", "__node:=wrist", "-p", f"device:={video}",
                                  "-p", "fps:=5", "-p", "width:=32", "-p", "height:=24"), env=ros_env)
    lis = _Listener(rclpy_context, ["/camera/image_raw", "/camera/camera_info", "/wrist/image_raw", "/diagnostics"])

    def camera_status(name="camera: camera front"):
        for _, arr in reversed(lis.msgs["/diagnostics"]):
            for st in arr.status:
                if st.name == name:
                    return st
        return None

    try:
        lis.spin_until(lambda: len(lis.msgs["/camera/image_raw"]) >= 10 and lis.msgs["/camera/camera_info"]
                       and lis.msgs["/wrist/image_raw"], 45, "images from both cameras", procs)
        _, img = lis.msgs["/camera/image_raw"][-1]
        assert (img.encoding, img.width, img.height, img.step) == ("rgb8", 64, 48, 192)
        assert img.header.frame_id == "front_optical"
        px = np.frombuffer(bytes(img.data), np.uint8).reshape(48, 64, 3)
        assert px[20:28, :, 0].max() > 150  # the red square, in RGB order
        _, info = lis.msgs["/camera/camera_info"][-1]
        assert (info.width, info.height) == (64, 48) and list(info.k)[0] == 60.0 and list(info.d)[0] == 0.01
        # stamped at capture: close to now, and increasing
        stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for _, m in lis.msgs["/camera/image_raw"]]
        assert all(b > a for a, b in zip(stamps, stamps[1:]))
        assert abs(stamps[-1] - time.time()) < 5.0
        _, wimg = lis.msgs["/wrist/image_raw"][-1]
        assert (wimg.width, wimg.height) == (32, 24)

        # the file disappears: after the open copy ends, images stop
        hidden = tmp_path / "hidden.avi"
        os.rename(video, hidden)
        cam = procs.children[0]
        lis.spin_until(lambda: "does not exist" in cam.log_tail(50), 20,
                       "the node noticing the file is gone (after the open copy played out)", procs)
        lis.spin_for(0.5)  # drain what was in flight
        n_gone = len(lis.msgs["/camera/image_raw"])
        lis.spin_for(1.5)
        assert len(lis.msgs["/camera/image_raw"]) == n_gone, "images kept coming while the file was gone"
        st = camera_status()
        assert st is not None and st.level == bytes([1]) and "reconnecting" in st.message, st  # WARN
        # ... and comes back: the node reconnects by itself
        os.rename(hidden, video)
        lis.spin_until(lambda: len(lis.msgs["/camera/image_raw"]) >= n_gone + 5, 15, "images after the file came back",
                       procs)
        assert all(c.alive() for c in procs.children), [c.log_tail() for c in procs.children]
        lis.spin_until(lambda: camera_status() is not None and camera_status().level == bytes([0]), 10,
                       "diagnostics back to OK", procs)
        values = {kv.key: kv.value for kv in camera_status().values}
        assert values["state"] == "open" and int(values["reconnects"]) >= 1 and values["image size"] == "64x48"
        assert values["calibration id"] == calib.calibration_id()
    finally:
        lis.close()
    logs = procs.children[0].log_tail(200)
    assert "does not exist" in logs and "retrying" in logs


def test_camera_node_refuses_a_calibration_of_another_size(tmp_path, ros_env, procs):
    video = tmp_path / "clip.avi"
    write_test_video(video, n_frames=4, size=(64, 48))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child = procs.start("camera", node_cmd(
        "wvm_ros.nodes.camera_node", "-p", f"device:={video}",
        "-p", "camera_info_url:=package://wvm_ros/calibration/example_640x480.yaml"), env=ros_env, cwd=repo)
    try:
        rc = child.popen.wait(timeout=60)
    except Exception:
        pytest.fail("the camera node kept running with a calibration of another size:\n" + child.log_tail())
    assert rc == 2
    log = child.log_tail()
    assert "640x480 images but the stream is 64x48" in log, log
