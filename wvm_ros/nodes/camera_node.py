"""Camera node (name `camera`): an OpenCV source (`wvm_ros.core.camera.CameraStream`) to
`sensor_msgs/Image` (rgb8) and `sensor_msgs/CameraInfo`.

Publishes (private topics, so `/camera/...` for the default node name `camera`):
  ~/image_raw     sensor_msgs/Image rgb8, stamped at capture
  ~/camera_info   sensor_msgs/CameraInfo (same header); from `camera_info_url`, or
                  uncalibrated (size only, zero intrinsics) when there is none
  /diagnostics    state (open / reconnecting / ended), rate, reconnects
Several cameras: one instance each, with its own node name (`-r __node:=wrist` ->
`/wrist/image_raw`) or namespace (`-r __ns:=/arm` -> `/arm/camera/image_raw`).

Parameters (config/wvm.yaml, `camera:`): device, camera_name, frame_id, width, height, fps,
exposure (-1 auto), camera_info_url (file:// or package://, ${NAME}, ${ROS_HOME}),
loop_file, reconnect_initial_backoff_s, reconnect_max_backoff_s, image_qos
(reliable | sensor_data | best_effort), diagnostics_period_s.

A source that disappears is re-opened with exponential backoff; the node keeps running.
A calibration whose image size differs from the stream ends the node with an error.
"""
from __future__ import annotations

import logging
import sys
import threading

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from wvm_ros.core.calibration import CalibrationError, CameraCalibration, check_size, load_camera_info
from wvm_ros.core.camera import CameraConfig, CameraError, CameraStream
from wvm_ros.core.diagnostics import NodeStats
from wvm_ros.ros.diagnostics import DiagnosticsPublisher
from wvm_ros.ros.images import array_to_image_msg
from wvm_ros.ros.qos import qos_from_name
from wvm_ros.ros.stamps import sec_to_stamp


def camera_info_msg(calib: CameraCalibration | None, width: int, height: int) -> CameraInfo:
    info = CameraInfo()
    info.width, info.height = int(width), int(height)
    if calib is None:  # uncalibrated, as camera_info_manager publishes it
        info.distortion_model = "plumb_bob"
        info.d = [0.0] * 5
        return info
    info.distortion_model = calib.distortion_model
    info.d = [float(v) for v in calib.D]
    info.k = [float(v) for v in calib.K.reshape(-1)]
    info.r = [float(v) for v in calib.R.reshape(-1)]
    info.p = [float(v) for v in calib.P.reshape(-1)]
    return info


class _RosLogHandler(logging.Handler):
    """core.camera logs through `logging`; forward it to the node's logger."""

    def __init__(self, node: Node):
        super().__init__()
        self.logger = node.get_logger()

    def emit(self, record: logging.LogRecord) -> None:
        msg = self.format(record)
        if record.levelno >= logging.ERROR:
            self.logger.error(msg)
        elif record.levelno >= logging.WARNING:
            self.logger.warning(msg)
        else:
            self.logger.info(msg)


class CameraNode(Node):
    def __init__(self, **kwargs):
        super().__init__("camera", **kwargs)
        def p(name, default):
            # numbers accept both 30 and 30.0 on the command line (no int/float type error), and
            # device both "0" and 0 (`-p device:=0` arrives as an integer)
            dyn = name == "device" or (isinstance(default, (int, float)) and not isinstance(default, bool))
            return self.declare_parameter(name, default, ParameterDescriptor(dynamic_typing=dyn))

        self.config = CameraConfig(
            device=str(p("device", "0").value),
            width=int(p("width", 0).value),
            height=int(p("height", 0).value),
            fps=float(p("fps", 0.0).value),
            exposure=float(p("exposure", -1.0).value),
            loop_file=bool(p("loop_file", True).value),
            reconnect_initial_backoff_s=float(p("reconnect_initial_backoff_s", 0.5).value),
            reconnect_max_backoff_s=float(p("reconnect_max_backoff_s", 10.0).value),
        )
        self.camera_name = str(p("camera_name", "camera").value)
        self.frame_id = str(p("frame_id", "camera").value)
        url = str(p("camera_info_url", "").value)
        image_qos = str(p("image_qos", "reliable").value)
        diag_period = float(p("diagnostics_period_s", 1.0).value)
        self.use_sim_time = bool(self.get_parameter("use_sim_time").value)

        handler = _RosLogHandler(self)
        handler.setFormatter(logging.Formatter("%(message)s"))
        core_log = logging.getLogger("wvm_ros.core.camera")
        core_log.addHandler(handler)
        core_log.setLevel(logging.INFO)
        core_log.propagate = False

        self.calibration = load_camera_info(url, self.camera_name)  # CalibrationError -> exit
        if self.calibration is not None and self.config.width and self.config.height:
            check_size(self.calibration, self.config.width, self.config.height, url or "default URL")
        self.stream = CameraStream(self.config)  # CameraError -> exit
        self._size_checked = False
        self.fatal: str | None = None

        qos = qos_from_name(image_qos, depth=5)
        self.pub_image = self.create_publisher(Image, "~/image_raw", qos)
        self.pub_info = self.create_publisher(CameraInfo, "~/camera_info", qos)
        self.stats = NodeStats(rates=("input", "output"), expect_input_within_s=5.0)
        self.stats.extra["device"] = self.config.device
        self.stats.extra["calibration"] = url or ("default URL" if self.calibration else "none (uncalibrated)")
        if self.calibration is not None:
            self.stats.extra["calibration id"] = self.calibration.calibration_id()
        self.diag = DiagnosticsPublisher(self, self.stats, name=f"{self.get_name()}: camera {self.camera_name}",
                                         hardware_id=self.config.device, period_s=diag_period)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._capture_loop, name="camera-capture", daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"camera {self.camera_name!r}: {self.stream.spec.kind} source {self.config.device!r} -> "
            f"{self.pub_image.topic_name}, {self.pub_info.topic_name}; calibration: "
            f"{self.stats.extra['calibration']}"
            + (f" (id {self.stats.extra['calibration id']})" if self.calibration is not None else ""))

    # --- capture thread --------------------------------------------------------------------
    def _capture_loop(self) -> None:
        while not self._stop.is_set() and rclpy.ok(context=self.context):
            try:
                frame = self.stream.read()
            except Exception as e:  # an OpenCV error must not end the thread silently
                self.stats.error(f"capture failed: {e}")
                self.get_logger().error(f"capture failed: {e}")
                self._stop.wait(0.5)
                continue
            self._update_state()
            if frame is None:
                if self.stream.stats.state == "ended":
                    self._stop.wait(0.2)
                continue
            h, w = frame.image.shape[:2]
            if not self._size_checked:
                if self.calibration is not None:
                    try:
                        check_size(self.calibration, w, h, self.get_parameter("camera_info_url").value
                                   or "default URL")
                    except CalibrationError as e:
                        self.fatal = str(e)
                        self.get_logger().fatal(str(e))
                        self._stop.set()
                        return
                self._size_checked = True
                self.stats.extra["image size"] = f"{w}x{h}"
            self.stats.tick("input")
            stamp = self.get_clock().now().to_msg() if self.use_sim_time else sec_to_stamp(frame.stamp_s)
            msg = array_to_image_msg(frame.image, "rgb8")
            msg.header.stamp = stamp
            msg.header.frame_id = self.frame_id
            info = camera_info_msg(self.calibration, w, h)
            info.header = msg.header
            try:
                self.pub_image.publish(msg)
                self.pub_info.publish(info)
            except Exception:  # context shut down while publishing
                if not rclpy.ok(context=self.context):
                    return
                raise
            self.stats.tick("output")

    def _update_state(self) -> None:
        s = self.stream.stats
        self.stats.extra.update({"state": s.state, "reconnects": str(s.reconnects), "loops": str(s.loops)})
        if s.state == "reconnecting":
            self.stats.warn(f"camera unavailable, reconnecting: {s.last_error}")
        elif s.state == "ended":
            self.stats.warn("replay file ended (loop_file is false)")
        else:
            self.stats.warn(None)

    def close(self) -> None:
        self._stop.set()
        self.stream.stop()
        self._thread.join(timeout=5.0)
        self.stream.close()


def main(args=None) -> int:
    try:  # OpenCV's own warnings repeat at every reconnection attempt; the node logs its own
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:
        pass
    rclpy.init(args=args)
    node = None
    rc = 0
    try:
        node = CameraNode()
        while rclpy.ok() and node.fatal is None and node._thread.is_alive():
            rclpy.spin_once(node, timeout_sec=0.2)
        if node.fatal is not None:
            rc = 2
    except KeyboardInterrupt:
        pass
    except (CalibrationError, CameraError, ValueError) as e:
        print(f"camera: {type(e).__name__}: {e}", file=sys.stderr)
        rc = 2
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return rc


if __name__ == "__main__":
    sys.exit(main())
