"""wvm_msgs messages between two rclpy processes (a publisher process, the test as subscriber)."""
import math
import sys
import textwrap

import pytest

from conftest import requires_ros

pytestmark = [requires_ros, pytest.mark.ros]

PUBLISHER = textwrap.dedent("""
    import time, rclpy
    from wvm_msgs.msg import EpisodeEvent, Progress
    from wvm_ros.ros.qos import reliable
    rclpy.init()
    node = rclpy.create_node("msg_sender")
    pp = node.create_publisher(Progress, "/t/progress", reliable())
    pe = node.create_publisher(EpisodeEvent, "/t/event", reliable())
    t0 = time.monotonic()
    while (pp.get_subscription_count() == 0 or pe.get_subscription_count() == 0) and time.monotonic() - t0 < 30:
        rclpy.spin_once(node, timeout_sec=0.05)
    p = Progress(progress=0.625, chunk=[0.5, 0.55, 0.6, 0.625], success=0.25, valid=True, status="UNTRAINED",
                 task="push the T",
                 episode_id="ep-7", attempt=3, model_name="tiny", checkpoint_id="abc123", untrained=True,
                 inference_latency=0.012)
    p.header.stamp.sec, p.header.stamp.nanosec, p.header.frame_id = 12, 345, "camera"
    e = EpisodeEvent(episode_id="ep-7", attempt=3, kind=EpisodeEvent.END, progress=float("nan"),
                     reason="stall: no gain", outcome="failure", task="push the T")
    for _ in range(3):
        pp.publish(p); pe.publish(e)
        rclpy.spin_once(node, timeout_sec=0.1)
    time.sleep(1.0)
    node.destroy_node(); rclpy.shutdown()
""")


def test_progress_and_episode_event_cross_processes(ros_env, procs):
    from wvm_msgs.msg import EpisodeEvent, Progress

    from wvm_ros.ros.testing import TopicProbe

    with TopicProbe({"/t/progress": Progress, "/t/event": EpisodeEvent}) as probe:
        child = procs.start("msg_sender", [sys.executable, "-c", PUBLISHER], env=ros_env)
        probe.wait_for(lambda: probe.get("/t/progress") and probe.get("/t/event"), timeout=60,
                       what="messages from the other process")
        p = probe.get("/t/progress")[0]
        e = probe.get("/t/event")[0]
    assert (p.header.stamp.sec, p.header.stamp.nanosec, p.header.frame_id) == (12, 345, "camera")
    assert p.progress == pytest.approx(0.625) and list(p.chunk) == pytest.approx([0.5, 0.55, 0.6, 0.625])
    assert p.success == pytest.approx(0.25)
    assert (p.valid, p.status, p.task, p.episode_id, p.attempt) == (True, "UNTRAINED", "push the T", "ep-7", 3)
    assert (p.model_name, p.checkpoint_id, p.untrained) == ("tiny", "abc123", True)
    assert p.inference_latency == pytest.approx(0.012)
    assert (e.episode_id, e.attempt, e.kind, e.reason, e.outcome) == ("ep-7", 3, EpisodeEvent.END, "stall: no gain",
                                                                       "failure")
    assert math.isnan(e.progress)
    child.popen.wait(timeout=30)
    assert child.popen.returncode == 0, child.log_tail()
