"""Value node: real processes over DDS for bad input (rejected frames counted, node survives;
missing checkpoint exits with the path and preset), Progress / Float32 / overlay / marker
output with the UNTRAINED flag, episode ids, inference errors, latest-frame semantics."""
import threading
import time

import numpy as np
import pytest

from conftest import node_cmd, requires_ros

pytestmark = [requires_ros, pytest.mark.ros]


def _image(w, h, enc="rgb8", data=None, stamp_s=None, channels=3):
    from sensor_msgs.msg import Image

    from wvm_ros.ros.stamps import sec_to_stamp

    m = Image()
    m.width, m.height, m.encoding = w, h, enc
    m.step = w * channels
    m.data = bytes(data if data is not None else np.random.randint(0, 255, h * w * channels, dtype=np.uint8).tobytes())
    m.header.stamp = sec_to_stamp(stamp_s if stamp_s is not None else time.time())
    m.header.frame_id = "camera"
    return m


def _diag_values(probe):
    from wvm_ros.ros.diagnostics import status_level, status_values

    out = []
    for arr in probe.get("/diagnostics"):
        for st in arr.status:
            if st.name.startswith("wvm_value"):
                out.append((status_level(st), st.message, status_values(st)))
    return out


def test_missing_checkpoint_exits_with_path_and_preset(ros_env, procs):
    child = procs.start("wvm_value", node_cmd("wvm_ros.nodes.value_node", "-p", "checkpoint:=/no/such/ckpt",
                                              "-p", "preset:=tiny"), env=ros_env)
    rc = child.popen.wait(timeout=60)
    log = child.log_tail(50)
    assert rc == 2, log
    assert "/no/such/ckpt" in log and "'tiny'" in log


def test_unreadable_checkpoint_exits(ros_env, procs, tmp_path):
    bad = tmp_path / "ck"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    (bad / "config.json").write_text("{not json")
    child = procs.start("wvm_value", node_cmd("wvm_ros.nodes.value_node", "-p", f"checkpoint:={bad}"), env=ros_env)
    rc = child.popen.wait(timeout=60)
    assert rc == 2 and str(bad) in child.log_tail(50)


def test_bad_success_checkpoint_exits_naming_it(ros_env, procs, tmp_path):
    from wvm_ros.core.baselines import SingleFrameConfig, SingleFrameRegressor, save_single_frame

    child = procs.start("wvm_value", node_cmd("wvm_ros.nodes.value_node", "-p", "checkpoint:=none",
                                              "-p", "success_checkpoint:=/no/such/succ"), env=ros_env)
    rc = child.popen.wait(timeout=60)
    assert rc == 2 and "success_checkpoint /no/such/succ does not exist" in child.log_tail(50)
    other = tmp_path / "sf"   # a checkpoint of another kind
    save_single_frame(SingleFrameRegressor(SingleFrameConfig(image_size=(32, 32), channels=(8,), hidden=8)), other)
    child = procs.start("wvm_value2", node_cmd("wvm_ros.nodes.value_node", "-p", "checkpoint:=none",
                                               "-p", f"success_checkpoint:={other}"), env=ros_env)
    rc = child.popen.wait(timeout=60)
    assert rc == 2 and "expected 'success_classifier'" in child.log_tail(50)


def test_estimate_fps_not_a_multiple_of_the_sampling_rate_exits_naming_it(ros_env, procs):
    child = procs.start("wvm_value", node_cmd("wvm_ros.nodes.value_node", "-p", "checkpoint:=none",
                                              "-p", "estimate_fps:=3.0"), env=ros_env)
    rc = child.popen.wait(timeout=60)
    log = child.log_tail(50)
    assert rc == 2, log
    assert "estimate_fps=3" in log and "whole multiple" in log and "sample_fps 2" in log, log


def test_value_node_rejects_bad_frames_and_estimates_good_ones(ros_env, procs):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    from std_msgs.msg import Float32
    from visualization_msgs.msg import Marker
    from wvm_msgs.msg import EpisodeEvent, Progress

    from wvm_ros.ros.testing import TopicProbe

    child = procs.start("wvm_value", node_cmd(
        "wvm_ros.nodes.value_node", "-p", "checkpoint:=none", "-r", "__node:=wvm_value", "-p", "image_width:=96", "-p", "image_height:=96",
        "-p", "task:=push the T", "-p", "diagnostics_period_s:=0.5"), env=ros_env)

    def alive():
        if not child.alive():
            raise AssertionError("wvm_value died:\n" + child.log_tail())

    topics = {"/wvm/progress": Progress, "/wvm/progress_value": Float32, "/wvm/overlay": Image,
              "/wvm/marker": Marker, "/diagnostics": DiagnosticArray}
    with TopicProbe(topics) as probe:
        img_pub = probe.publisher(Image, "/camera/image_raw")
        ev_pub = probe.publisher(EpisodeEvent, "/wvm/episode_event")
        probe.wait_for(lambda: img_pub.get_subscription_count() > 0 and ev_pub.get_subscription_count() > 0,
                       timeout=60, what="value node subscriptions", alive=alive)
        # three kinds of bad frames
        img_pub.publish(_image(96, 96, enc="yuv422", channels=2))
        img_pub.publish(_image(64, 64))
        bad = _image(96, 96)
        bad.data = b""
        img_pub.publish(bad)
        probe.wait_for(lambda: any(int(v.get("rejected frames", 0)) >= 3 for _, _, v in _diag_values(probe)),
                       timeout=20, what="3 rejected frames in diagnostics", alive=alive)
        log = child.log_tail(200)
        assert log.count("rejected frame on /camera/image_raw") == 1, log  # one rate-limited error
        assert "yuv422" in log and "96x96" in log

        # an attempt starts; good frames give UNTRAINED Progress stamped with the image
        ev = EpisodeEvent(episode_id="ep-test", attempt=2, kind=EpisodeEvent.START, task="push the T")
        t0 = time.time()
        from wvm_ros.ros.stamps import sec_to_stamp
        ev.header.stamp = sec_to_stamp(t0 - 0.01)
        ev_pub.publish(ev)
        time.sleep(0.3)
        sent = []
        for i in range(25):
            s = t0 + 0.1 * i
            sent.append(s)
            img_pub.publish(_image(96, 96, stamp_s=s))
            time.sleep(0.1)
            alive()
        probe.wait_for(lambda: any(m.valid for m in probe.get("/wvm/progress")), timeout=30,
                       what="a valid Progress", alive=alive)
        msgs = probe.get("/wvm/progress")
        valid = [m for m in msgs if m.valid]
        for m in msgs:
            assert m.untrained and "UNTRAINED" in m.status and m.checkpoint_id == "UNTRAINED"
            assert np.isnan(m.success)   # checkpoint none: no success classifier either
            assert m.model_name == "tiny" and m.task == "push the T"
        for m in valid:
            assert 0.0 <= m.progress <= 1.0 and len(m.chunk) == 4
            assert (m.episode_id, m.attempt) == ("ep-test", 2)
            st = m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec
            assert min(abs(st - s) for s in sent) < 1e-6  # header stamp = an image's stamp
            assert m.header.frame_id == "camera"
        probe.wait_for(lambda: probe.get("/wvm/overlay") and probe.get("/wvm/marker") and probe.get("/wvm/progress_value"),
                       timeout=10, what="overlay, marker and Float32", alive=alive)
        ov = probe.get("/wvm/overlay")[-1]
        assert ov.encoding == "rgb8" and ov.width >= 96
        assert "UNTRAINED" in probe.get("/wvm/marker")[-1].text
        _, _, values = _diag_values(probe)[-1]
        assert float(values["output rate (Hz)"]) >= 0 and int(values["rejected frames"]) >= 3
        assert values["untrained"] == "True"
        alive()


class _SlowEstimator:
    def __init__(self, delay=0.0, fail=False):
        self.delay, self.fail, self.pushed = delay, fail, 0

    def push(self, frame, stamp_s):
        from wvm_ros.core.streaming import ValueEstimate

        self.pushed += 1
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("CUDA out of memory (simulated)")
        return ValueEstimate(progress=0.5, chunk=np.full(4, 0.5, np.float32), stamp_s=stamp_s, latency_s=self.delay,
                             valid=True, status="")

    def reset(self):
        pass

    def set_task(self, text):
        pass


def _in_process_node(rclpy_context):
    from wvm_ros.nodes.value_node import ValueNode

    return ValueNode(context=rclpy_context)


def test_inference_error_keeps_node_running_and_reports(rclpy_context):
    """The estimator is replaced by one that raises (a GPU error cannot be caused here)."""
    from wvm_ros.core.diagnostics import ERROR

    node = _in_process_node(rclpy_context)
    try:
        published = []
        node.pub_progress.publish = published.append
        node.cameras[0].estimator = _SlowEstimator(fail=True)
        cb = node._image_cb(node.cameras[0])
        cb(_image(96, 96))
        deadline = time.time() + 10
        while not published and time.time() < deadline:
            time.sleep(0.02)
        assert published and not published[0].valid and "inference error" in published[0].status
        assert node.stats.report().level == ERROR and node.worker.is_alive()
        node.cameras[0].estimator = _SlowEstimator()
        cb(_image(96, 96))
        while len(published) < 2 and time.time() < deadline:
            time.sleep(0.02)
        assert published[-1].valid and published[-1].progress == pytest.approx(0.5)
    finally:
        node.destroy_node()


def test_frames_arriving_during_inference_are_dropped_not_queued(rclpy_context):
    node = _in_process_node(rclpy_context)
    try:
        slow = _SlowEstimator(delay=0.3)
        node.cameras[0].estimator = slow
        cb = node._image_cb(node.cameras[0])
        t = time.time()
        for i in range(20):
            cb(_image(96, 96, stamp_s=t + 0.01 * i))
            time.sleep(0.01)
        time.sleep(0.8)
        dropped = node.stats.counters["dropped frames"]
        assert slow.pushed <= 4 and dropped >= 15 and slow.pushed + dropped == 20
    finally:
        node.destroy_node()


class _ConstEstimator(_SlowEstimator):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def push(self, frame, stamp_s):
        from wvm_ros.core.streaming import ValueEstimate

        return ValueEstimate(progress=self.value, chunk=np.full(4, self.value, np.float32), stamp_s=stamp_s,
                             latency_s=0.001, valid=True, status="")


def test_two_cameras_have_their_own_windows_and_progress_is_their_mean(rclpy_context):
    from rclpy.parameter import Parameter

    from wvm_ros.nodes.value_node import ValueNode

    node = ValueNode(context=rclpy_context, parameter_overrides=[
        Parameter("image_topics", value=["/cam0/image", "/cam1/image"]),
        Parameter("image_width", value=96), Parameter("image_height", value=96)])
    try:
        assert [c.topic for c in node.cameras] == ["/cam0/image", "/cam1/image"]
        assert node.cameras[0].estimator is not node.cameras[1].estimator
        published = []
        node.pub_progress.publish = published.append
        node.cameras[0].estimator = _ConstEstimator(0.2)
        node.cameras[1].estimator = _ConstEstimator(0.6)
        t = time.time()
        node._image_cb(node.cameras[0])(_image(96, 96, stamp_s=t))
        deadline = time.time() + 10
        while len(published) < 1 and time.time() < deadline:
            time.sleep(0.02)
        node._image_cb(node.cameras[1])(_image(96, 96, stamp_s=t + 0.05))
        while len(published) < 2 and time.time() < deadline:
            time.sleep(0.02)
        assert published[0].progress == pytest.approx(0.2)
        assert published[1].progress == pytest.approx(0.4)  # mean of both cameras' latest
        # a START resets both windows and tags later Progress
        from wvm_msgs.msg import EpisodeEvent

        from wvm_ros.ros.stamps import sec_to_stamp
        ev = EpisodeEvent(episode_id="ep-9", attempt=1, kind=EpisodeEvent.START)
        ev.header.stamp = sec_to_stamp(t + 0.5)
        node._on_event(ev)
        node._image_cb(node.cameras[0])(_image(96, 96, stamp_s=t + 0.2))  # from before START: dropped
        node._image_cb(node.cameras[0])(_image(96, 96, stamp_s=t + 0.6))
        while len(published) < 3 and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        assert len(published) == 3
        assert (published[2].episode_id, published[2].attempt) == ("ep-9", 1)
        assert published[2].progress == pytest.approx(0.2)  # camera 1 was reset: no estimate since START
    finally:
        node.destroy_node()


def test_default_checkpoint_is_the_shipped_model_when_present(monkeypatch, tmp_path):
    import wvm_ros.graph as graph
    from wvm_ros.nodes.value_node import SHIPPED_CHECKPOINT, resolve_checkpoint

    assert resolve_checkpoint("/x/ck") == "/x/ck"
    assert resolve_checkpoint("none") is None and resolve_checkpoint("UNTRAINED") is None
    monkeypatch.setattr(graph, "find_data", lambda rel: tmp_path if rel == SHIPPED_CHECKPOINT else None)
    assert resolve_checkpoint("") == str(tmp_path)
    monkeypatch.setattr(graph, "find_data", lambda rel: None)
    assert resolve_checkpoint("") is None


def test_default_success_checkpoint_follows_the_value_model(monkeypatch, tmp_path):
    import wvm_ros.graph as graph
    from wvm_ros.nodes.value_node import SHIPPED_SUCCESS, resolve_success_checkpoint

    succ, value, noclock, v480 = tmp_path / "succ", tmp_path / "wvm", tmp_path / "noclock", tmp_path / "w480"
    for d in (succ, value, noclock, v480):
        d.mkdir()
    found = {SHIPPED_SUCCESS: succ, "models/wvm-tiny-pusht": value, "models/wvm-tiny-pusht-noclock": noclock,
             "models/wvm-tiny-pusht-480": v480}
    monkeypatch.setattr(graph, "find_data", lambda rel: found.get(rel))
    assert resolve_success_checkpoint("", "") == str(succ)            # shipped value model: shipped classifier
    # the shipped PushT value models named by path (absolute or as models/...): the same
    assert resolve_success_checkpoint("", str(value)) == str(succ)
    assert resolve_success_checkpoint("", "models/wvm-tiny-pusht-noclock") == str(succ)
    assert resolve_success_checkpoint("", str(noclock) + "/") == str(succ)
    assert resolve_success_checkpoint("", "models/wvm-tiny-pusht-480") == str(succ)
    assert resolve_success_checkpoint("", str(v480)) == str(succ)
    assert resolve_success_checkpoint("", "/my/wvm") is None          # another value model: none by default
    assert resolve_success_checkpoint("", str(tmp_path)) is None
    assert resolve_success_checkpoint("/my/succ", "/my/wvm") == "/my/succ"
    assert resolve_success_checkpoint("none", "") is None
    assert resolve_success_checkpoint("none", str(value)) is None
    monkeypatch.setattr(graph, "find_data", lambda rel: None)
    assert resolve_success_checkpoint("", "") is None


def test_success_probability_rides_on_progress(rclpy_context, tmp_path):
    """A success classifier's P(done) of the same frame is published in Progress.success (valid
    estimates only), and named in the diagnostics."""
    import torch
    from rclpy.parameter import Parameter

    from wvm_ros.core import success as S
    from wvm_ros.core.model import build_model, save_checkpoint
    from wvm_ros.nodes.value_node import ValueNode

    ck = tmp_path / "ck"
    save_checkpoint(build_model("tiny", "cpu", seed=0), ck)
    clf = S.SuccessClassifier(S.default_config((96, 96)))
    with torch.no_grad():   # P(done) = sigmoid(1.0) on every frame
        clf.head[-1].weight.zero_()
        clf.head[-1].bias.fill_(1.0)
    S.save_success(clf, tmp_path / "succ")
    node = ValueNode(context=rclpy_context, parameter_overrides=[
        Parameter("checkpoint", value=str(ck)), Parameter("success_checkpoint", value=str(tmp_path / "succ"))])
    try:
        assert node.success_id == S.load_success(tmp_path / "succ").checkpoint_id
        assert node.stats.extra["success classifier"] == node.success_id
        published = []
        node.pub_progress.publish = published.append
        t = time.time()
        for i in range(4):
            node._image_cb(node.cameras[0])(_image(96, 96, stamp_s=t + 0.5 * i))
            time.sleep(0.3)
        deadline = time.time() + 20
        while not any(m.valid for m in published) and time.time() < deadline:
            time.sleep(0.05)
        assert any(m.valid for m in published)
        for m in published:
            if m.valid:
                assert m.success == pytest.approx(1 / (1 + np.exp(-1.0)), abs=1e-5)
            else:
                assert np.isnan(m.success)
    finally:
        node.destroy_node()


def test_task_topic_and_start_event_task_reach_the_estimators(rclpy_context):
    from std_msgs.msg import String

    class Recorder(_ConstEstimator):
        def __init__(self):
            super().__init__(0.3)
            self.tasks = []

        def set_task(self, text):
            self.tasks.append(text)

    node = _in_process_node(rclpy_context)
    try:
        rec = Recorder()
        node.cameras[0].estimator = rec
        published = []
        node.pub_progress.publish = published.append
        node._on_task(String(data="stack the cups"))
        node._image_cb(node.cameras[0])(_image(96, 96))
        deadline = time.time() + 10
        while not published and time.time() < deadline:
            time.sleep(0.02)
        assert rec.tasks == ["stack the cups"] and published[0].task == "stack the cups"
    finally:
        node.destroy_node()


def test_a_missed_start_is_caught_up_at_the_next_event_of_the_new_attempt(rclpy_context):
    from wvm_msgs.msg import EpisodeEvent

    class Resets(_ConstEstimator):
        def __init__(self):
            super().__init__(0.5)
            self.resets = 0

        def reset(self):
            self.resets += 1

    node = _in_process_node(rclpy_context)
    try:
        est = Resets()
        node.cameras[0].estimator = est
        published = []
        node.pub_progress.publish = published.append
        node._on_event(EpisodeEvent(episode_id="ep-1", attempt=1, kind=EpisodeEvent.START))
        node._image_cb(node.cameras[0])(_image(96, 96))
        deadline = time.time() + 10
        while not published and time.time() < deadline:
            time.sleep(0.02)
        assert est.resets == 1 and published[0].attempt == 1
        node._on_event(EpisodeEvent(episode_id="ep-1", attempt=1, kind=EpisodeEvent.STALL))
        node._on_event(EpisodeEvent(episode_id="ep-1", attempt=1, kind=EpisodeEvent.END, outcome="failure"))
        node._on_event(EpisodeEvent(episode_id="ep-1", attempt=1, kind=EpisodeEvent.RETRY))
        # START of attempt 2 lost; its HOLD arrives
        node._on_event(EpisodeEvent(episode_id="ep-1", attempt=2, kind=EpisodeEvent.HOLD))
        node._image_cb(node.cameras[0])(_image(96, 96))
        while len(published) < 2 and time.time() < deadline:
            time.sleep(0.02)
        assert est.resets == 2  # STALL, END and RETRY of attempt 1 reset nothing; HOLD of attempt 2 does
        assert (published[1].episode_id, published[1].attempt) == ("ep-1", 2)
        assert node.stats.counters["missed START events"] == 1
    finally:
        node.destroy_node()


def test_a_checkpoint_loads_and_progress_is_not_flagged_untrained(rclpy_context, tmp_path):
    from rclpy.parameter import Parameter

    from wvm_ros.core.model import build_model, save_checkpoint
    from wvm_ros.nodes.value_node import ValueNode

    ck = tmp_path / "ck"
    ck_id = save_checkpoint(build_model("tiny", "cpu", seed=0), ck)
    node = ValueNode(context=rclpy_context, parameter_overrides=[Parameter("checkpoint", value=str(ck))])
    try:
        assert not node.untrained and node.checkpoint_id == ck_id
        published = []
        node.pub_progress.publish = published.append
        t = time.time()
        for i in range(4):  # real estimator: 2 samples at 2 fps are needed
            node._image_cb(node.cameras[0])(_image(96, 96, stamp_s=t + 0.5 * i))
            time.sleep(0.3)
        deadline = time.time() + 20
        while not any(m.valid for m in published) and time.time() < deadline:
            time.sleep(0.05)
        valid = [m for m in published if m.valid]
        assert valid and all(not m.untrained and "UNTRAINED" not in m.status for m in published)
        assert valid[-1].checkpoint_id == ck_id and 0.0 <= valid[-1].progress <= 1.0
    finally:
        node.destroy_node()
