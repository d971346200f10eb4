"""Sim robot node as its own process over DDS: images, camera info, state, ground truth,
actions move the agent, reset service, bad actions are rejected and the node survives."""
import numpy as np
import pytest

from conftest import node_cmd, requires_ros

pytestmark = [requires_ros, pytest.mark.ros]


def test_sim_robot_publishes_and_obeys(ros_env, procs):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, Image, JointState
    from std_msgs.msg import Bool, Float32, Float64MultiArray
    from std_srvs.srv import Trigger

    from wvm_ros.ros.diagnostics import status_values
    from wvm_ros.ros.images import image_msg_to_rgb8
    from wvm_ros.ros.testing import TopicProbe

    child = procs.start("sim_robot", node_cmd("wvm_ros.nodes.sim_robot_node", "-r", "__node:=sim_robot",
                                              "-p", "width:=64", "-p", "height:=48", "-p", "rate_hz:=20.0"),
                        env=ros_env)

    def alive():
        if not child.alive():
            raise AssertionError("sim_robot died:\n" + child.log_tail())

    topics = {"/camera/image_raw": Image, "/camera/camera_info": CameraInfo, "/robot/joint_states": JointState,
              "/sim/ground_truth_progress": Float32, "/sim/success": Bool, "/diagnostics": DiagnosticArray}
    with TopicProbe(topics) as probe:
        probe.wait_for(lambda: len(probe.get("/robot/joint_states")) >= 5 and len(probe.get("/camera/image_raw")) >= 5,
                       timeout=30, what="images and joint states", alive=alive)
        img = probe.get("/camera/image_raw")[-1]
        assert (img.encoding, img.width, img.height, img.header.frame_id) == ("rgb8", 64, 48, "camera")
        assert image_msg_to_rgb8(img).shape == (48, 64, 3)
        info = probe.get("/camera/camera_info")[-1]
        assert (info.width, info.height) == (64, 48) and info.k[0] > 0
        stamps = [m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for m in probe.get("/camera/image_raw")]
        assert all(b > a for a, b in zip(stamps, stamps[1:]))
        js = probe.get("/robot/joint_states")[-1]
        assert list(js.name) == ["agent_x", "agent_y", "block_x", "block_y", "block_theta"]
        gt = probe.get("/sim/ground_truth_progress")[-1].data
        assert 0.0 <= gt <= 1.0

        # an action moves the agent towards the target
        act = probe.publisher(Float64MultiArray, "/robot/action")
        start = np.array(js.position[:2])
        target = np.array([256.0, 256.0]) if np.linalg.norm(start - 256) > 60 else np.array([60.0, 60.0])
        probe.wait_for(lambda: act.get_subscription_count() > 0, timeout=10, what="action subscriber")
        n0 = len(probe.get("/robot/joint_states"))
        for _ in range(30):
            act.publish(Float64MultiArray(data=[float(target[0]), float(target[1])]))
            probe.wait_for(lambda: True, timeout=0.06)
        probe.wait_for(lambda: len(probe.get("/robot/joint_states")) > n0 + 15, timeout=20, what="steps", alive=alive)
        now = np.array(probe.get("/robot/joint_states")[-1].position[:2])
        assert np.linalg.norm(now - target) < np.linalg.norm(start - target) - 20

        # the JointTrajectory form moves it too
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
        traj = probe.publisher(JointTrajectory, "/robot/joint_trajectory")
        probe.wait_for(lambda: traj.get_subscription_count() > 0, timeout=10, what="trajectory subscriber")
        start = np.array(probe.get("/robot/joint_states")[-1].position[:2])
        target = np.array([450.0, 60.0]) if np.linalg.norm(start - [450, 60]) > 100 else np.array([60.0, 450.0])
        n0 = len(probe.get("/robot/joint_states"))
        for _ in range(30):
            traj.publish(JointTrajectory(joint_names=["agent_y", "agent_x"], points=[
                JointTrajectoryPoint(positions=[float(target[1]), float(target[0])])]))
            probe.wait_for(lambda: True, timeout=0.06)
        probe.wait_for(lambda: len(probe.get("/robot/joint_states")) > n0 + 15, timeout=20, what="steps", alive=alive)
        now = np.array(probe.get("/robot/joint_states")[-1].position[:2])
        assert np.linalg.norm(now - target) < np.linalg.norm(start - target) - 20

        # bad actions: rejected, counted, node keeps running
        act.publish(Float64MultiArray(data=[1.0, 2.0, 3.0]))
        act.publish(Float64MultiArray(data=[float("nan"), 2.0]))

        def rejected():
            for arr in probe.get("/diagnostics"):
                for st in arr.status:
                    if st.name.startswith("sim_robot") and int(status_values(st).get("rejected actions", 0)) >= 2:
                        return True
            return False
        probe.wait_for(rejected, timeout=15, what="rejected actions in diagnostics", alive=alive)

        # reset service: a new scene
        res = probe.call(Trigger, "/robot/reset", timeout=15)
        assert res.success and "seed 1" in res.message
        alive()
        # one clear, rate-limited error for the two bad actions
        assert child.log_tail(500).count("/robot/action: expected 2 finite numbers") == 1
