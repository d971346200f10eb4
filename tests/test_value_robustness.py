"""Value node robustness, in process: a task change with the success classifier wrapper, a
non-finite model output, frames whose stamps do not advance (unset header.stamp, jitter, a
replay restarting) and a START stamped ahead of the image clock. Each is counted, said in
/diagnostics (and Progress.status where there is no estimate) and survived."""
import math
import time

import pytest
import torch

from conftest import requires_ros
from test_value_node import _ConstEstimator, _image

pytestmark = [requires_ros, pytest.mark.ros]


def _node(ctx, tmp_path, success=False, **params):
    """A value node on a tiny checkpoint (torch backend: no ONNX export), optionally with a
    success classifier that says P(done) = sigmoid(1) on every frame."""
    from rclpy.parameter import Parameter

    from wvm_ros.core.model import build_model, save_checkpoint
    from wvm_ros.nodes.value_node import ValueNode

    ck = tmp_path / "ck"
    if not ck.exists():
        save_checkpoint(build_model("tiny", "cpu", seed=0), ck)
    over = {"checkpoint": str(ck), "backend": "torch", "backend_fallback": ["torch"],
            "success_checkpoint": "none", **params}
    if success:
        from wvm_ros.core import success as S

        clf = S.SuccessClassifier(S.default_config((96, 96)))
        with torch.no_grad():
            clf.head[-1].weight.zero_()
            clf.head[-1].bias.fill_(1.0)
        S.save_success(clf, tmp_path / "succ")
        over["success_checkpoint"] = str(tmp_path / "succ")
    return ValueNode(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in over.items()])


def _feed(node, published, stamps, cam=0, timeout=20.0):
    """Push one frame per stamp, each after the previous one was published (none replaced in its slot)."""
    cb = node._image_cb(node.cameras[cam])
    for s in stamps:
        n = len(published)
        cb(_image(96, 96, stamp_s=s))
        deadline = time.time() + timeout
        while len(published) == n and time.time() < deadline:
            time.sleep(0.005)
        assert len(published) > n, f"no Progress for the frame stamped {s}"


def _wait(cond, timeout=10.0):
    deadline = time.time() + timeout
    while not cond() and time.time() < deadline:
        time.sleep(0.02)
    return cond()


def test_a_task_change_reaches_the_estimators_through_the_success_wrapper(rclpy_context, tmp_path):
    """With a success classifier every camera's estimator is a WithSuccess: /wvm/task and a START
    with another task must set the instruction of the estimator inside it, with no error."""
    from std_msgs.msg import String
    from wvm_msgs.msg import EpisodeEvent

    from wvm_ros.core.diagnostics import ERROR
    from wvm_ros.core.success import WithSuccess
    from wvm_ros.ros.stamps import sec_to_stamp

    node = _node(rclpy_context, tmp_path, success=True)
    try:
        assert isinstance(node.cameras[0].estimator, WithSuccess)
        inner = node.cameras[0].estimator.inner
        node._on_task(String(data="stack the cups"))
        assert _wait(lambda: node.task == "stack the cups")
        assert inner.task == "stack the cups"
        ev = EpisodeEvent(episode_id="ep-1", attempt=1, kind=EpisodeEvent.START, task="open the drawer")
        t = time.time()
        ev.header.stamp = sec_to_stamp(t)
        node._on_event(ev)
        published = []
        node.pub_progress.publish = published.append
        _feed(node, published, [t + 0.1 * i for i in range(8)])
        assert node.task == inner.task == "open the drawer"
        assert published[-1].task == "open the drawer" and published[-1].valid
        assert node.stats.counters["errors"] == 0 and node.stats.report().level != ERROR
    finally:
        node.destroy_node()


class _NanModel:
    """The node's model with a NaN chunk from predict_chunk for the calls in `bad` (all: None)."""

    def __init__(self, model, bad=None):
        self.m, self.config, self.bad, self.calls = model, model.config, bad, 0
        self.untrained = False

    def embed_text(self, text):
        return self.m.embed_text(text)

    def encode_frames(self, frames):
        return self.m.encode_frames(frames)

    def predict_chunk(self, *a, **kw):
        out = self.m.predict_chunk(*a, **kw)
        self.calls += 1
        return out * float("nan") if self.bad is None or self.calls - 1 in self.bad else out


def test_a_non_finite_model_output_is_invalid_counted_and_an_error(rclpy_context, tmp_path):
    from wvm_ros.core.diagnostics import ERROR
    from wvm_ros.core.streaming import NON_FINITE, StreamingValueEstimator

    node = _node(rclpy_context, tmp_path)
    try:
        published = []
        node.pub_progress.publish = published.append
        node.cameras[0].estimator = StreamingValueEstimator(_NanModel(node.infer_model), "t", estimate_fps=10.0)
        t = time.time()
        _feed(node, published, [t + 0.1 * i for i in range(10)])
        assert not any(m.valid for m in published)                # never a progress of 0.0
        bad = [m for m in published if m.status.startswith("non-finite model output")]
        assert len(bad) == 5 and all(math.isnan(m.progress) for m in bad)   # one per estimate from 0.5 s on
        assert node.stats.counters[NON_FINITE] == 5
        r = node.stats.report()
        assert r.level == ERROR and "non-finite model output" in r.message and r.values[NON_FINITE] == "5"
        assert node.worker.is_alive()
        # an estimator that calls a NaN progress valid: not published as a number either
        node.cameras[0].estimator = _ConstEstimator(float("nan"))
        node.cameras[0].last = None
        _feed(node, published, [t + 2.0])
        assert not published[-1].valid and published[-1].status.startswith("non-finite model output: progress nan")
        assert node.stats.counters[NON_FINITE] == 6
        # the model recovers: estimates are valid again
        node.cameras[0].estimator = StreamingValueEstimator(_NanModel(node.infer_model, bad=()), "t")
        _feed(node, published, [t + 3.0 + 0.5 * i for i in range(3)])
        assert published[-1].valid and 0.0 <= published[-1].progress <= 1.0
    finally:
        node.destroy_node()


def test_frames_without_stamps_are_said_in_progress_and_diagnostics(rclpy_context, tmp_path):
    """An image publisher that never sets header.stamp (all 0): no estimate can come, and the
    node says why (Progress.status, a WARN, counters, one log line), then recovers."""
    from wvm_ros.core.diagnostics import OK, WARN
    from wvm_ros.core.streaming import STALLED_FRAMES, ZERO_STAMPS

    node = _node(rclpy_context, tmp_path)
    try:
        published = []
        node.pub_progress.publish = published.append
        n = STALLED_FRAMES + 3
        _feed(node, published, [0.0] * n)
        assert not any(m.valid for m in published)
        assert all(m.status.startswith("frame stamp is 0") for m in published[:STALLED_FRAMES - 1])
        stalled = published[STALLED_FRAMES - 1:]
        assert all(m.status.startswith("frames have no increasing header.stamp") for m in stalled)
        r = node.stats.report()
        assert r.level == WARN and "no increasing header.stamp" in r.message and "/camera/image_raw" in r.message
        assert node.stats.counters[ZERO_STAMPS] == n and r.values[ZERO_STAMPS] == str(n)
        # stamps set again: estimates, and the warning is gone
        t = time.time()
        _feed(node, published, [t + 0.1 * i for i in range(8)])
        assert published[-1].valid
        assert node.stats.report().level == OK
    finally:
        node.destroy_node()


def test_jitter_is_dropped_and_a_replay_restart_is_counted(rclpy_context, tmp_path):
    from wvm_ros.core.streaming import RESTARTS, STALE_FRAMES

    node = _node(rclpy_context, tmp_path)
    try:
        published = []
        node.pub_progress.publish = published.append
        t = time.time()
        _feed(node, published, [t + 0.1 * i for i in range(10)])
        est = node.cameras[0].estimator
        n = est.num_sampled
        _feed(node, published, [t + 0.7])                        # 0.2 s older than the newest: stale
        assert node.stats.counters[STALE_FRAMES] == 1 and node.stats.counters[RESTARTS] == 0
        assert published[-1].valid and est.num_sampled == n       # the latest estimate, the attempt kept
        _feed(node, published, [t + 1.0])
        assert published[-1].valid and est.num_sampled == n + 1
        _feed(node, published, [t - 60.0])                       # a replayed bag restarting: start over
        assert node.stats.counters[RESTARTS] == 1 and est.num_sampled == 1
        assert not published[-1].valid and "started over" in published[-1].status
    finally:
        node.destroy_node()


def test_a_start_stamped_ahead_of_the_images_is_counted_and_warned(rclpy_context, tmp_path):
    from wvm_msgs.msg import EpisodeEvent

    from wvm_ros.core.diagnostics import OK, WARN
    from wvm_ros.nodes.value_node import PRE_START
    from wvm_ros.ros.stamps import sec_to_stamp

    node = _node(rclpy_context, tmp_path)
    try:
        node.start_ahead_warn_s = 0.3
        node.cameras[0].estimator = _ConstEstimator(0.4)
        published = []
        node.pub_progress.publish = published.append
        t = time.time()
        ev = EpisodeEvent(episode_id="ep-2", attempt=1, kind=EpisodeEvent.START)
        ev.header.stamp = sec_to_stamp(t + 100.0)                 # e.g. a START on another clock
        node._on_event(ev)
        cb = node._image_cb(node.cameras[0])
        cb(_image(96, 96, stamp_s=t))
        assert node.stats.report().level == OK                    # frames in flight at a START: no alarm
        for i in range(1, 10):
            time.sleep(0.05)
            cb(_image(96, 96, stamp_s=t + 0.05 * i))
        time.sleep(0.2)
        assert not published
        assert node.stats.counters[PRE_START] == 10 and node.stats.counters["dropped frames"] == 0
        r = node.stats.report()
        assert r.level == WARN and "frames older than the attempt's START on /camera/image_raw" in r.message
        assert "before the START's stamp" in r.message and r.values[PRE_START] == "10"
        # frames at or after the START's stamp: used, and the warning is gone
        _feed(node, published, [t + 100.1])
        assert published[-1].valid and node.stats.report().level == OK
    finally:
        node.destroy_node()


def test_a_bad_stamp_tolerance_parameter_is_refused_naming_it(rclpy_context, tmp_path):
    from wvm_ros.nodes.value_node import BadParameter

    with pytest.raises(BadParameter, match="stamp_backward_tolerance_s=-1: expected seconds >= 0"):
        _node(rclpy_context, tmp_path, stamp_backward_tolerance_s=-1.0)


def test_the_stamp_tolerance_parameter_reaches_the_estimators(rclpy_context, tmp_path):
    node = _node(rclpy_context, tmp_path, stamp_backward_tolerance_s=0.25)
    try:
        est = node.cameras[0].estimator
        assert est.backward_tolerance_s == 0.25 and est.reject_zero_stamps
    finally:
        node.destroy_node()


def test_the_checkpoint_value_offset_reaches_the_estimators_unless_turned_off(rclpy_context, tmp_path):
    """A calibrated checkpoint (`wvm calibrate-value`): the node's estimators add its offset to
    what they publish, diagnostics say so; `apply_value_calibration false` publishes raw values."""
    from wvm_ros.core.model import build_model, file_hash, save_checkpoint
    from wvm_ros.core.model.checkpoint import write_calibration

    ck = tmp_path / "ck"
    save_checkpoint(build_model("tiny", "cpu", seed=0), ck)
    write_calibration(ck, {"value_offset": 0.0321, "checkpoint_id": file_hash(ck / "model.safetensors"),
                           "estimate_fps": 10.0})
    for apply, offset, said in ((True, 0.0321, "+0.0321"), (False, 0.0, "off (apply_value_calibration false")):
        node = _node(rclpy_context, tmp_path, apply_value_calibration=apply)
        try:
            assert node.cameras[0].estimator.value_offset == pytest.approx(offset)
            assert node.stats.extra["value offset"].startswith(said)
            assert "fitted at" not in node.stats.extra["value offset"]
        finally:
            node.destroy_node()
    # an offset fitted at another estimate rate than the node runs is said in diagnostics
    node = _node(rclpy_context, tmp_path, estimate_fps=2.0)
    try:
        assert "fitted at 10 estimates/s, used at 2" in node.stats.extra["value offset"]
    finally:
        node.destroy_node()
