"""Sim robot node: the PushT simulator (`wvm_ros.core.sim.PushTSim`) as robot + camera.

Publishes (defaults; remappable):
  /camera/image_raw           sensor_msgs/Image rgb8, `width` x `height`, stamped at render
  /camera/camera_info         sensor_msgs/CameraInfo (pinhole, same stamp)
  /robot/joint_states         sensor_msgs/JointState agent_x, agent_y, block_x, block_y, block_theta
                              (velocity: agent x, y velocity, 0 for the block)
  /sim/ground_truth_progress  std_msgs/Float32 coverage-based progress (EVALUATION ONLY)
  /sim/success                std_msgs/Bool coverage >= success threshold (EVALUATION ONLY)
  /diagnostics
Subscribes /robot/action (std_msgs/Float64MultiArray [x, y] target in sim pixels 0..512)
and /robot/joint_trajectory (trajectory_msgs/JointTrajectory: the first point's agent_x, agent_y).
Serves /robot/reset (std_srvs/Trigger): a new scene (seed + number of resets).

Every `1 / rate_hz` s the simulation advances one control step towards the latest action
(the agent holds its position until the first action after a reset) and a frame is
published. Parameters: see config/wvm.yaml (sim_robot).
"""
from __future__ import annotations

import sys
import time

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float32, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from wvm_ros.core.diagnostics import NodeStats, RateLimitedLog
from wvm_ros.ros.diagnostics import DiagnosticsPublisher
from wvm_ros.ros.images import array_to_image_msg, pinhole_camera_info
from wvm_ros.ros.qos import qos_from_name, reliable


class SimRobotNode(Node):
    def __init__(self, **kwargs):
        super().__init__("sim_robot", **kwargs)
        p = self.declare_parameter
        self.width = int(p("width", 96).value)
        self.height = int(p("height", 96).value)
        self.rate_hz = float(p("rate_hz", 10.0).value)
        self.frame_id = str(p("frame_id", "camera").value)
        image_qos = str(p("image_qos", "reliable").value)
        self.seed = int(p("seed", 0).value)
        difficulty = float(p("difficulty", 0.5).value)
        self.publish_joint_states = bool(p("publish_joint_states", True).value)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"width/height: expected positive pixel counts, got {self.width}x{self.height}")
        if self.rate_hz <= 0:
            raise ValueError(f"rate_hz: expected > 0, got {self.rate_hz}")

        from wvm_ros.core.sim import STATE_NAMES, PushTSim

        self.state_names = list(STATE_NAMES)
        self.sim = PushTSim(image_size=(self.height, self.width), difficulty=difficulty)
        self.resets = 0
        self.sim.reset(seed=self.seed)
        self.target: np.ndarray | None = None

        qos = qos_from_name(image_qos)
        self.pub_image = self.create_publisher(Image, "/camera/image_raw", qos)
        self.pub_info = self.create_publisher(CameraInfo, "/camera/camera_info", qos)
        self.pub_joints = self.create_publisher(JointState, "/robot/joint_states", reliable())
        self.pub_gt = self.create_publisher(Float32, "/sim/ground_truth_progress", reliable())
        self.pub_success = self.create_publisher(Bool, "/sim/success", reliable())
        self.create_subscription(Float64MultiArray, "/robot/action", self._on_action, reliable())
        self.create_subscription(JointTrajectory, "/robot/joint_trajectory", self._on_trajectory, reliable())
        self.create_service(Trigger, "/robot/reset", self._on_reset)

        self.stats = NodeStats(rates=("output", "action"), expect_input_within_s=None)
        self.stats.extra["image size"] = f"{self.width}x{self.height}"
        self.diag = DiagnosticsPublisher(self, self.stats, name="sim_robot: PushT simulator", hardware_id="gym-pusht")
        self.log_limit = RateLimitedLog(5.0)
        self.timer = self.create_timer(1.0 / self.rate_hz, self._tick)
        self._publish()
        self.get_logger().info(
            f"PushT simulator: {self.width}x{self.height} rgb8 at {self.rate_hz:g} Hz, seed {self.seed}")

    # --- callbacks ---------------------------------------------------------------------------
    def _on_action(self, msg: Float64MultiArray) -> None:
        a = np.asarray(msg.data, dtype=np.float64)
        if a.shape != (2,) or not np.all(np.isfinite(a)):
            self.stats.count("rejected actions")
            if self.log_limit.should_log("action"):
                self.get_logger().error(
                    f"/robot/action: expected 2 finite numbers (target x, y in sim pixels 0..512), "
                    f"got {list(msg.data)!r}; ignored")
            return
        self.target = np.clip(a, 0.0, 512.0)
        self.stats.tick("action")

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        """The ros2_control trajectory form: the first point's agent_x, agent_y positions."""
        names = list(msg.joint_names)
        try:
            if not msg.points:
                raise ValueError("no points")
            pos = dict(zip(names, msg.points[0].positions, strict=True))
            target = [pos["agent_x"], pos["agent_y"]]
        except (KeyError, ValueError) as e:
            self.stats.count("rejected actions")
            if self.log_limit.should_log("trajectory"):
                self.get_logger().error(
                    f"/robot/joint_trajectory: expected joint_names with agent_x, agent_y and one point with a "
                    f"position per name, got names {names} ({type(e).__name__}: {e}); ignored")
            return
        self._on_action(Float64MultiArray(data=[float(v) for v in target]))

    def _on_reset(self, request, response):
        self.resets += 1
        seed = self.seed + self.resets
        self.sim.reset(seed=seed)
        self.target = None
        self._publish()
        response.success = True
        response.message = f"PushT scene reset (seed {seed})"
        self.get_logger().info(response.message)
        return response

    def _tick(self) -> None:
        t0 = time.perf_counter()
        target = self.target if self.target is not None else self.sim.state[:2]
        try:
            self.sim.step(target)
        except Exception as e:  # a physics error must not end the node
            self.stats.error(f"simulation step failed: {e}")
            if self.log_limit.should_log("step"):
                self.get_logger().error(f"simulation step failed: {e}")
            return
        self._publish()
        self.stats.add_latency(time.perf_counter() - t0)

    def _publish(self) -> None:
        stamp = self.get_clock().now().to_msg()
        frame = self.sim.render()
        img = array_to_image_msg(frame, "rgb8")
        img.header.stamp = stamp
        img.header.frame_id = self.frame_id
        info = pinhole_camera_info(self.width, self.height)
        info.header = img.header
        self.pub_image.publish(img)
        self.pub_info.publish(info)
        if self.publish_joint_states:
            js = JointState()
            js.header.stamp = stamp
            js.name = self.state_names
            js.position = [float(v) for v in self.sim.state]
            vel = self.sim.agent_velocity
            js.velocity = [float(vel[0]), float(vel[1])] + [0.0] * (len(self.state_names) - 2)
            self.pub_joints.publish(js)
        self.pub_gt.publish(Float32(data=float(self.sim.progress)))
        self.pub_success.publish(Bool(data=bool(self.sim.success)))
        self.stats.tick("output")


def main(args=None) -> int:
    rclpy.init(args=args)
    node = None
    rc = 0
    try:
        node = SimRobotNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as e:  # a bad parameter: say what and exit non-zero
        print(f"sim_robot: {type(e).__name__}: {e}", file=sys.stderr)
        rc = 1
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    return rc


if __name__ == "__main__":
    sys.exit(main())
