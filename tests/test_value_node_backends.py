"""Value node: inference backend parameters (named backend, strict failure, fallback shown in
diagnostics) and /wvm/state_text (the attempt state for RViz's TextOverlay)."""
import time

import pytest

from conftest import node_cmd, requires_ros
from test_value_node import _diag_values, _image

pytestmark = [requires_ros, pytest.mark.ros]


def test_node_runs_on_onnxruntime_and_publishes_state_text(ros_env, procs):
    """A real node process with backend:=onnxruntime: diagnostics name the backend, every
    Progress comes with a /wvm/state_text naming episode, attempt, state and the value."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    from std_msgs.msg import String
    from wvm_msgs.msg import EpisodeEvent, Progress

    from wvm_ros.ros.stamps import sec_to_stamp
    from wvm_ros.ros.testing import TopicProbe

    child = procs.start("wvm_value", node_cmd(
        "wvm_ros.nodes.value_node", "-p", "checkpoint:=none", "-r", "__node:=wvm_value", "-p", "backend:=onnxruntime",
        "-p", "backend_strict:=true", "-p", "image_width:=96", "-p", "image_height:=96",
        "-p", "diagnostics_period_s:=0.5"), env=ros_env)

    def alive():
        if not child.alive():
            raise AssertionError("wvm_value died:\n" + child.log_tail())

    topics = {"/wvm/progress": Progress, "/wvm/state_text": String, "/diagnostics": DiagnosticArray}
    with TopicProbe(topics) as probe:
        img_pub = probe.publisher(Image, "/camera/image_raw")
        ev_pub = probe.publisher(EpisodeEvent, "/wvm/episode_event")
        probe.wait_for(lambda: img_pub.get_subscription_count() > 0 and ev_pub.get_subscription_count() > 0,
                       timeout=90, what="value node subscriptions", alive=alive)
        t0 = time.time()
        ev = EpisodeEvent(episode_id="ep-txt", attempt=3, kind=EpisodeEvent.START)
        ev.header.stamp = sec_to_stamp(t0 - 0.01)
        ev_pub.publish(ev)
        time.sleep(0.3)
        for i in range(15):
            img_pub.publish(_image(96, 96, stamp_s=t0 + 0.1 * i))
            time.sleep(0.1)
            alive()
        probe.wait_for(lambda: any(m.valid for m in probe.get("/wvm/progress")), timeout=30,
                       what="a valid Progress", alive=alive)
        probe.wait_for(lambda: len(probe.get("/wvm/state_text")) >= len(probe.get("/wvm/progress")) > 0
                       and _diag_values(probe), timeout=10, what="state text and diagnostics", alive=alive)
        texts = [m.data for m in probe.get("/wvm/state_text")]
        progress = probe.get("/wvm/progress")
        assert len(texts) == len(progress)  # one state text with each Progress
        assert all(t.startswith("ep-txt attempt 3: START\nprogress ") and t.endswith(" UNTRAINED") for t in texts)
        assert any("-- (warming up)" in t for t in texts)  # before the first estimate
        last_valid = [m for m in progress if m.valid][-1]
        assert f"progress {last_valid.progress:.2f}" in "\n".join(texts)
        _, _, values = _diag_values(probe)[-1]
        assert values["backend"].startswith("onnxruntime[encode_frames") and "onnxruntime[predict_chunk" in values["backend"]
        assert values["backend requested"] == "onnxruntime" and "backend fallback" not in values
    assert "inference backend onnxruntime" in child.log_tail(200)


def test_unavailable_backend_with_strict_exits_2_naming_it(ros_env, procs):
    """tensorrt needs a GPU (none here): strict -> exit 2 with the backend and the reason."""
    child = procs.start("wvm_value", node_cmd("wvm_ros.nodes.value_node", "-p", "checkpoint:=none", "-p", "backend:=tensorrt",
                                              "-p", "backend_strict:=true"), env=ros_env)
    rc = child.popen.wait(timeout=120)
    log = child.log_tail(50)
    assert rc == 2, log
    assert "wvm_value: cannot start" in log and "'tensorrt' was required (strict)" in log and "cuda" in log, log


def test_unavailable_backend_falls_back_and_diagnostics_say_which(rclpy_context):
    from rclpy.parameter import Parameter

    from wvm_ros.core.diagnostics import WARN
    from wvm_ros.nodes.value_node import ValueNode

    node = ValueNode(context=rclpy_context, parameter_overrides=[
        Parameter("checkpoint", value="none"), Parameter("backend", value="tensorrt"),
        Parameter("backend_fallback", value=["torch"])])
    try:
        rep = node.stats.report()
        values = rep.values
        assert values["backend"] == "torch[encode_frames, cpu, fp32] + torch[predict_chunk, cpu, fp32]"
        assert values["backend requested"] == "tensorrt"
        assert "backend tensorrt unavailable" in values["backend fallback"] and "cuda" in values["backend fallback"]
        assert rep.level == WARN and "using fallback torch[" in rep.message and "UNTRAINED" in rep.message
        # the cameras' estimators run on the backend model
        assert node.cameras[0].estimator.model is node.infer_model
    finally:
        node.destroy_node()


def test_bad_backend_parameters_are_a_start_error(rclpy_context):
    from rclpy.parameter import Parameter

    from wvm_ros.nodes.value_node import BadBackendParameters, ValueNode

    with pytest.raises(BadBackendParameters, match="backend 'fastest': expected one of auto, torch"):
        ValueNode(context=rclpy_context, parameter_overrides=[Parameter("backend", value="fastest")])
    with pytest.raises(BadBackendParameters, match=r"backend fallback \['trt'\]"):
        ValueNode(context=rclpy_context, parameter_overrides=[Parameter("backend_fallback", value=["trt"])])


def test_state_text_format():
    from wvm_msgs.msg import Progress

    from wvm_ros.nodes.value_node import state_text

    ok = Progress(valid=True, progress=0.4267, status="", success=float("nan"))
    assert state_text("ep-1", 2, "START", ok, False) == "ep-1 attempt 2: START\nprogress 0.43"
    done = Progress(valid=True, progress=0.95, status="", success=0.987)
    assert state_text("ep-1", 2, "START", done, False) == "ep-1 attempt 2: START\nprogress 0.95 | done 0.99"
    warm = Progress(valid=False, progress=float("nan"), status="UNTRAINED; warming up")
    assert state_text("ep-1", 2, "END (failure)", warm, True) == \
        "ep-1 attempt 2: END (failure)\nprogress -- (warming up) UNTRAINED"
    assert state_text("", 0, "", Progress(valid=False, status=""), False) == "episode: -\nprogress -- (no estimate)"
