"""Camera mode end to end without a robot: the camera node replays a video file, the value node
(untrained tiny model, CPU) estimates progress from its images. Checks the contract between
the two: rgb8 images on /camera/image_raw with reliable QoS, Progress stamped with the stamp of
a camera image, the overlay made from the camera's frames."""
from __future__ import annotations

import time

import pytest
from conftest import node_cmd, requires_ros

from wvm_ros.core.camera import write_test_video

pytestmark = [requires_ros, pytest.mark.ros, pytest.mark.slow, pytest.mark.timeout(180)]


def test_camera_node_feeds_the_value_node(tmp_path, ros_env, procs):
    from sensor_msgs.msg import Image
    from wvm_msgs.msg import EpisodeEvent, Progress

    from wvm_ros.ros.stamps import sec_to_stamp, stamp_to_sec
    from wvm_ros.ros.testing import TopicProbe

    video = tmp_path / "scene.avi"
    write_test_video(video, n_frames=30, size=(96, 96), fps=10)
    cam = procs.start("camera", node_cmd("wvm_ros.nodes.camera_node", "-r", "__node:=camera", "-p", f"device:={video}",
                                         "-p", "fps:=10"), env=ros_env)
    val = procs.start("wvm_value", node_cmd("wvm_ros.nodes.value_node", "-r", "__node:=wvm_value",
                                            "-p", "image_width:=96", "-p", "image_height:=96",
                                            "-p", "task:=push the T"), env=ros_env)

    def alive():
        for c in (cam, val):
            if not c.alive():
                raise AssertionError(f"{c.name} died:\n{c.log_tail()}")

    with TopicProbe({"/camera/image_raw": Image, "/wvm/progress": Progress, "/wvm/overlay": Image}) as probe:
        ev_pub = probe.publisher(EpisodeEvent, "/wvm/episode_event")
        probe.wait_for(lambda: ev_pub.get_subscription_count() > 0 and probe.get("/camera/image_raw"),
                       timeout=90, what="value node up and camera images", alive=alive)
        ev = EpisodeEvent(episode_id="ep-cam", attempt=1, kind=EpisodeEvent.START, task="push the T")
        ev.header.stamp = sec_to_stamp(time.time())
        ev_pub.publish(ev)
        probe.wait_for(lambda: sum(m.valid for m in probe.get("/wvm/progress")) >= 2, timeout=90,
                       what="valid Progress from camera frames", alive=alive)
        image_stamps = {round(stamp_to_sec(m.header.stamp), 6) for m in probe.get("/camera/image_raw")}
        valid = [m for m in probe.get("/wvm/progress") if m.valid]
        for m in valid:
            assert round(stamp_to_sec(m.header.stamp), 6) in image_stamps  # stamped with a camera image
            assert m.header.frame_id == "camera" and (m.episode_id, m.attempt) == ("ep-cam", 1)
            assert 0.0 <= m.progress <= 1.0
        probe.wait_for(lambda: probe.get("/wvm/overlay"), timeout=30, what="an overlay image", alive=alive)
        assert probe.get("/wvm/overlay")[-1].encoding == "rgb8"
    alive()
