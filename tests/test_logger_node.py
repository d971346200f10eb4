"""wvm_logger over real DDS: per-attempt bags, custom_data, kill -9 + restart, unwritable
folder, size cap. The logger runs as its own process; the test process publishes."""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import node_cmd, requires_ros

pytestmark = [requires_ros, pytest.mark.timeout(120)]

LOGGER = "wvm_ros.nodes.data_logger_node"


def log_text(child) -> str:
    """The whole log of a child (lerobot's import prints long torchcodec warnings)."""
    return child.log_path.read_text(errors="replace") if child.log_path and child.log_path.exists() else ""


def wait_for(cond, timeout, what, child=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if child is not None and not child.alive():
            raise AssertionError(f"{child.name} died while waiting for {what}:\n{child.log_tail()}")
        time.sleep(0.05)
    tail = child.log_tail() if child is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tail}")


class Pub:
    """Publishers of the test process (camera, progress, events) on the test's DDS domain."""

    def __init__(self, ctx, size=(48, 64)):
        import rclpy
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray
        from wvm_msgs.msg import EpisodeEvent, Progress

        self.rclpy = rclpy
        self.node = Node("test_pub", context=ctx)
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.img_pub = self.node.create_publisher(Image, "/camera/image_raw", qos)
        self.prog_pub = self.node.create_publisher(Progress, "/wvm/progress", qos)
        self.ev_pub = self.node.create_publisher(EpisodeEvent, "/wvm/episode_event", qos)
        self.act_pub = self.node.create_publisher(Float64MultiArray, "/robot/action", qos)
        self.js_pub = self.node.create_publisher(JointState, "/robot/joint_states", qos)
        self.JointState = JointState
        self.Image, self.Progress, self.EpisodeEvent, self.F64 = Image, Progress, EpisodeEvent, Float64MultiArray
        self.h, self.w = size
        self.n = 0

    TOPICS = ("/camera/image_raw", "/wvm/progress", "/wvm/episode_event", "/robot/action")

    def sub_gids(self) -> set:
        return {(t, bytes(i.endpoint_gid)) for t in self.TOPICS
                for i in self.node.get_subscriptions_info_by_topic(t)}

    def wait_matched(self, timeout=20.0, child=None, old_gids=frozenset()):
        """Until a (new) subscriber is matched on every topic; `old_gids` are those of a
        killed logger, which DDS keeps listing until their lease runs out."""
        pubs = [self.img_pub, self.prog_pub, self.ev_pub, self.act_pub]

        def ok():
            fresh = {t for t, g in self.sub_gids() - set(old_gids)}
            return fresh == set(self.TOPICS) and all(p.get_subscription_count() > 0 for p in pubs)
        wait_for(ok, timeout, "the logger to subscribe to every topic", child)
        # the publisher sees the reader before the reader has matched the writer: give the
        # other side of discovery a moment, or the first messages go to nobody
        time.sleep(1.0)

    def image(self):
        m = self.Image()
        m.header.stamp = self.node.get_clock().now().to_msg()
        m.header.frame_id = "camera"
        m.height, m.width, m.encoding, m.step = self.h, self.w, "rgb8", self.w * 3
        m.data = np.full(self.h * self.w * 3, self.n % 256, np.uint8).tobytes()
        self.n += 1
        self.img_pub.publish(m)

    def progress(self, v, ep="ep1", attempt=1):
        m = self.Progress()
        m.header.stamp = self.node.get_clock().now().to_msg()
        m.progress = float(v)
        m.chunk = [float(v)] * 4
        m.valid = True
        m.task, m.episode_id, m.attempt = "push the T", ep, attempt
        m.model_name, m.checkpoint_id = "tiny", "abc123"
        self.prog_pub.publish(m)

    def joints(self, x, y):
        m = self.JointState()
        m.header.stamp = self.node.get_clock().now().to_msg()
        m.name = ["agent_x", "agent_y"]
        m.position = [float(x), float(y)]
        self.js_pub.publish(m)

    def action(self, x, y):
        m = self.F64()
        m.data = [float(x), float(y)]
        self.act_pub.publish(m)

    def event(self, kind, ep="ep1", attempt=1, outcome="", progress=math.nan):
        m = self.EpisodeEvent()
        m.header.stamp = self.node.get_clock().now().to_msg()
        m.episode_id, m.attempt, m.kind = ep, attempt, kind
        m.outcome, m.progress, m.task = outcome, float(progress), "push the T"
        self.ev_pub.publish(m)

    def attempt(self, ep, attempt, n_frames, outcome="success", rate_hz=50.0, end=True):
        E = self.EpisodeEvent
        self.event(E.START, ep, attempt)
        time.sleep(0.1)
        for i in range(n_frames):
            self.joints(i, -i)
            self.image()
            self.progress((i + 1) / n_frames, ep, attempt)
            self.action(i, i)
            time.sleep(1.0 / rate_hz)
        if end:
            time.sleep(0.1)
            self.event(E.SUCCESS if outcome == "success" else E.STALL, ep, attempt)
            self.event(E.END, ep, attempt, outcome=outcome, progress=1.0 if outcome == "success" else 0.3)


def start_logger(procs, ros_env, out, name="logger", *extra):
    return procs.start(name, node_cmd(LOGGER, "-p", f"output_dir:={out}",
                                      "-p", "flush_period_s:=0.2", "-p", "min_free_mb:=1.0", *extra),
                       env=ros_env)


def bag_dirs(out: Path):
    return sorted(p for p in out.iterdir() if p.is_dir())


def test_logger_bags_per_attempt_read_back(ros_env, procs, rclpy_context, tmp_path):
    from wvm_ros.core.bag import bag_custom_data, count_messages_mcap, count_messages_rosbags

    out = tmp_path / "bags"
    child = start_logger(procs, ros_env, out)
    pub = Pub(rclpy_context)
    pub.wait_matched(child=child)
    pub.attempt("ep1", 1, 20, outcome="failure")
    pub.attempt("ep1", 2, 15, outcome="success")
    wait_for(lambda: len(list(out.glob("*/metadata.yaml"))) == 2, 20, "two closed bags", child)

    dirs = bag_dirs(out)
    assert [d.name for d in dirs] == ["ep1_att001", "ep1_att002"]
    for d, n, outcome in ((dirs[0], 20, "failure"), (dirs[1], 15, "success")):
        a, b = count_messages_rosbags(d), count_messages_mcap(d)
        assert a == b, (a, b)
        assert a["/camera/image_raw"] == n
        assert a["/wvm/progress"] == n
        assert a["/robot/action"] == n
        assert a["/wvm/episode_event"] == 3  # START, outcome event, END
        cd = bag_custom_data(d)
        assert cd["outcome"] == outcome
        assert cd["episode_id"] == "ep1"
        assert cd["task"] == "push the T"
        assert cd["model_name"] == "tiny" and cd["checkpoint_id"] == "abc123"
        assert float(cd["final_progress"]) == pytest.approx(1.0 if outcome == "success" else 0.3)
        assert cd["events"].startswith("START@") and "END@" in cd["events"]
    assert bag_custom_data(dirs[1])["attempt"] == "2"


def test_logger_kill9_then_restart_keeps_bags(ros_env, procs, rclpy_context, tmp_path):
    from wvm_ros.core.bag import bag_custom_data, count_messages_mcap, count_messages_rosbags

    out = tmp_path / "bags"
    child = start_logger(procs, ros_env, out)
    pub = Pub(rclpy_context)
    pub.wait_matched(child=child)
    pub.attempt("epk", 1, 10, outcome="success")
    wait_for(lambda: (out / "epk_att001" / "metadata.yaml").exists(), 20, "the first bag", child)
    # second attempt: frames at 20 Hz, kill -9 while they are still being published
    E = pub.EpisodeEvent
    pub.event(E.START, "epk", 2)
    time.sleep(0.1)
    old = pub.sub_gids()
    sent = []
    for i in range(40):
        pub.joints(i, -i)
        pub.image()
        pub.progress((i + 1) / 40, "epk", 2)
        sent.append(time.monotonic())
        time.sleep(0.05)
    t_kill = time.monotonic()
    procs.kill(child)
    open_bag = out / "epk_att002"
    assert open_bag.exists() and not (open_bag / "metadata.yaml").exists()

    # the closed bag is untouched and valid
    assert count_messages_rosbags(out / "epk_att001") == count_messages_mcap(out / "epk_att001")
    # restart: the open bag is recovered at start
    child2 = start_logger(procs, ros_env, out, "logger2")
    wait_for(lambda: (open_bag / "metadata.yaml").exists(), 30, "recovery of the killed bag", child2)
    a, b = count_messages_rosbags(open_bag), count_messages_mcap(open_bag)
    assert a == b
    # at most the last ~second is lost (flush period 0.2 s here): every frame published
    # more than 0.5 s before the kill is in the bag
    must = sum(1 for t in sent if t < t_kill - 0.5)
    assert a["/camera/image_raw"] >= must, (a, must)
    assert a["/camera/image_raw"] <= 40
    print(f"kill -9 during an attempt: {a['/camera/image_raw']} of 40 frames kept (>= {must} required)")
    cd = bag_custom_data(open_bag)
    assert cd["outcome"] == "interrupted" and cd["recovered"] == "true" and cd["episode_id"] == "epk"
    # and the restarted logger records new attempts
    pub.wait_matched(child=child2, old_gids=old)
    pub.attempt("epk", 3, 5)
    wait_for(lambda: (out / "epk_att003" / "metadata.yaml").exists(), 20, "a bag after restart", child2)


def test_logger_unwritable_folder_fails_naming_it(ros_env, procs, tmp_path):
    # a path below a regular file cannot be created, even by root (tests may run as root,
    # where chmod does not stop writes)
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    target = blocker / "bags"
    child = start_logger(procs, ros_env, target)
    child.popen.wait(timeout=30)
    assert child.popen.returncode != 0
    log = log_text(child)
    assert str(target) in log and "not writable" in log, log


def test_logger_size_cap_stops_recording_with_valid_bag(ros_env, procs, rclpy_context, tmp_path):
    from wvm_ros.core.bag import bag_custom_data, count_messages_mcap, count_messages_rosbags

    out = tmp_path / "bags"
    # 48x64 rgb8 images are ~9.2 kB: a 0.1 MiB cap is hit after ~10 images
    child = start_logger(procs, ros_env, out, "logger", "-p", "max_total_mb:=0.1")
    pub = Pub(rclpy_context)
    pub.wait_matched(child=child)
    pub.attempt("epd", 1, 30)
    wait_for(lambda: (out / "epd_att001" / "metadata.yaml").exists(), 20, "the capped bag", child)
    d = out / "epd_att001"
    cd = bag_custom_data(d)
    assert cd["outcome"] == "stopped" and "size cap" in cd["stop_reason"]
    a = count_messages_rosbags(d)
    assert a == count_messages_mcap(d)
    assert 0 < a["/camera/image_raw"] < 30
    wait_for(lambda: "size cap reached" in log_text(child), 5, "the error in the log", child)
    # /diagnostics says so (ERROR with the reason)
    from diagnostic_msgs.msg import DiagnosticArray

    seen = []
    sub = pub.node.create_subscription(DiagnosticArray, "/diagnostics",
                                       lambda m: seen.extend(st for st in m.status if "wvm_logger" in st.name), 10)
    from rclpy.executors import SingleThreadedExecutor

    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(pub.node)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not seen:
        ex.spin_once(timeout_sec=0.2)
    ex.remove_node(pub.node)
    pub.node.destroy_subscription(sub)
    assert seen, "no diagnostics from wvm_logger"
    lv = seen[-1].level
    assert (lv[0] if isinstance(lv, (bytes, bytearray)) else int(lv)) == 2
    assert "size cap reached" in seen[-1].message
    # later attempts are refused, not half-written
    pub.attempt("epd", 2, 3)
    time.sleep(0.5)
    assert not (out / "epd_att002").exists()
    assert child.alive()


@pytest.mark.timeout(180)
def test_logger_live_lerobot_dataset(ros_env, procs, rclpy_context, tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    out = tmp_path / "bags"
    root = tmp_path / "live_ds"
    child = start_logger(procs, ros_env, out, "logger", "-p", "dataset.enable:=true",
                         "-p", f"dataset.root:={root}", "-p", "dataset.keep_failed:=false",
                         "-p", "dataset.use_videos:=false", "-p", "dataset.fps:=20")
    pub = Pub(rclpy_context)
    wait_for(lambda: "live LeRobot dataset" in log_text(child), 90, "the logger with lerobot loaded", child)
    pub.wait_matched(child=child)
    wait_for(lambda: pub.js_pub.get_subscription_count() > 0, 20, "joint_states subscription", child)
    pub.attempt("eplive", 1, 12, outcome="failure", rate_hz=20)
    pub.attempt("eplive", 2, 10, outcome="success", rate_hz=20)
    wait_for(lambda: (out / "eplive_att002" / "metadata.yaml").exists(), 30, "both bags", child)
    wait_for(lambda: "eplive_att002 -> episode 0" in log_text(child), 60, "the episode written", child)
    procs.stop(child)                     # SIGINT: the dataset is finalised
    errors = [ln for ln in log_text(child).splitlines() if "live dataset" in ln and "failed" in ln]
    assert not errors, errors
    ds = LeRobotDataset("local/wvm_live", root=root)
    assert ds.num_episodes == 1           # the failed attempt was dropped
    n = len(ds)
    assert 7 <= n <= 10, n                # the first frames may precede the first action
    items = [ds[i] for i in range(n)]     # iterates
    assert all(tuple(it["observation.image"].shape) == (3, 48, 64) for it in items)
    assert bool(items[-1]["next.done"]) and bool(items[-1]["next.success"])
    prog = [float(it["progress"]) for it in items]
    assert prog == sorted(prog) and prog[-1] > 0.5
    assert (root / "sarm_progress.parquet").exists()

    # the same bags converted offline give the same dataset (one alignment code path)
    import pandas as pd

    from wvm_ros.core.bag2lerobot import convert_bags

    convert_bags([out], tmp_path / "conv", keep_failed=False, fps=20, repo_id="local/wvm_live",
                 progress_bar=False)

    def load(r):
        return pd.concat([pd.read_parquet(p) for p in sorted((r / "data").rglob("*.parquet"))], ignore_index=True)

    live, conv = load(root), load(tmp_path / "conv")
    assert len(live) == len(conv) == n
    for col in ("observation.state", "action", "progress", "value_chunk", "value_valid", "next.done",
                "next.success", "timestamp", "frame_index"):
        a = np.stack(live[col].map(np.asarray).to_numpy()).astype(float)
        b = np.stack(conv[col].map(np.asarray).to_numpy()).astype(float)
        np.testing.assert_array_equal(a, b, err_msg=col)
    assert [r["bytes"] for r in live["observation.image"]] == [r["bytes"] for r in conv["observation.image"]]


def test_second_logger_leaves_the_open_bag_of_a_running_one_alone(ros_env, procs, rclpy_context, tmp_path):
    """A logger started while another still writes into the same folder (a respawn before the
    old process exited, or two loggers on one folder) must not recover the open bag: the
    running logger keeps every message."""
    from wvm_ros.core.bag import MARKER_NAME, bag_custom_data, count_messages_mcap, count_messages_rosbags

    out = tmp_path / "bags"
    child = start_logger(procs, ros_env, out)
    pub = Pub(rclpy_context)
    pub.wait_matched(child=child)
    E = pub.EpisodeEvent
    pub.event(E.START, "epr", 1)
    time.sleep(0.1)
    for i in range(10):
        pub.image()
        time.sleep(0.02)
    bag = out / "epr_att001"
    wait_for(lambda: (bag / MARKER_NAME).exists(), 10, "the open bag", child)
    time.sleep(0.5)                                   # flushed (flush period 0.2 s)
    second = start_logger(procs, ros_env, out, "logger2")
    wait_for(lambda: "recording" in log_text(second) and "topics into" in log_text(second), 30,
             "the second logger's start", second)
    log2 = log_text(second)
    assert f"not recovering bag {bag}: still being written" in log2, log2
    assert "recovered bag" not in log2, log2
    procs.stop(second)
    assert (bag / MARKER_NAME).exists() and not (bag / "metadata.yaml").exists()
    for i in range(10):
        pub.image()
        time.sleep(0.02)
    time.sleep(0.3)
    pub.event(E.END, "epr", 1, outcome="success", progress=1.0)
    wait_for(lambda: (bag / "metadata.yaml").exists(), 20, "the bag closed by the first logger", child)
    a = count_messages_rosbags(bag)
    assert a == count_messages_mcap(bag)
    assert a["/camera/image_raw"] == 20, a
    cd = bag_custom_data(bag)
    assert cd["outcome"] == "success" and "recovered" not in cd
