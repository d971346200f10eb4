"""Policy node robustness, in process (no other nodes): a joint state with NaN / inf is
rejected, counted and reported, and no action with NaN / inf ever reaches the action topic
(the robot is held on the last good state instead)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import requires_ros

pytestmark = [requires_ros, pytest.mark.ros]

NAMES = ["agent_x", "agent_y", "block_x", "block_y", "block_theta"]
GOOD = [100.0, 110.0, 200.0, 210.0, 0.5]


@pytest.fixture
def make_node(rclpy_context):
    """PolicyNode(**parameters) in this test's rclpy context; every publish on the action
    topic is recorded in node.sent instead of going out. All nodes are destroyed at teardown."""
    from rclpy.parameter import Parameter

    from wvm_ros.nodes.policy_node import PolicyNode

    nodes = []

    def make(**params):
        node = PolicyNode(context=rclpy_context,
                          parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        nodes.append(node)
        node.sent = []
        node.action_pub.publish = node.sent.append
        return node

    yield make
    for n in nodes:
        n.destroy_node()


def js(positions, names=NAMES):
    from sensor_msgs.msg import JointState

    return JointState(name=list(names), position=[float(v) for v in positions])


def data_of(node):
    out = []
    for m in node.sent:
        out.append(list(m.data) if hasattr(m, "data") else list(m.points[0].positions))
    return out


def start_and_hold(node):
    t = node.now()
    node.sm.start_episode(t, "ep-test")
    node.sm.hold(t, "test: stale progress")


def test_non_finite_joint_state_is_rejected_counted_and_reported(make_node):
    from wvm_ros.core.diagnostics import ERROR

    node = make_node()
    node.on_state(js(GOOD))
    node.on_state(js([math.nan, math.inf, 200.0, 200.0, 0.0]))
    np.testing.assert_array_equal(node.state, GOOD)           # the last good state stays
    assert node.state_positions["agent_x"] == 100.0
    assert node.stats.counters["state rejected (NaN/inf)"] == 1
    r = node.stats.report()
    assert r.level == ERROR
    assert "/robot/joint_states" in r.message and "agent_x=nan" in r.message and "agent_y=inf" in r.message
    assert "block_x" not in r.message.split("(expected")[0]   # only the bad fields are named
    assert r.values["state rejected (NaN/inf)"] == "1"
    # the error log is rate-limited: a second bad state is counted, not said again
    node.on_state(js([100.0, 100.0, 200.0, -math.inf, 0.0]))
    assert node.stats.counters["state rejected (NaN/inf)"] == 2
    assert node.ratelog.suppressed["state not finite"] == 1
    # holding commands the last good position, never NaN
    start_and_hold(node)
    node.hold()
    assert data_of(node) == [[100.0, 110.0]]


def test_first_state_non_finite_never_starts_or_acts(make_node):
    node = make_node()
    node.on_state(js([math.nan] * 5))
    assert node.state is None and node.first_state_at is None and node.state_positions == {}
    start_and_hold(node)
    node.hold()
    node.act()
    assert node.sent == []


def test_non_finite_hold_joint_outside_state_names_is_rejected(make_node):
    """joint_names (what hold commands) may name joints that state_names does not: they are
    checked too."""
    node = make_node(joint_names=["gripper"])
    node.on_state(js(GOOD + [0.02], NAMES + ["gripper"]))
    node.on_state(js(GOOD + [math.nan], NAMES + ["gripper"]))
    assert node.stats.counters["state rejected (NaN/inf)"] == 1
    assert "gripper=nan" in node.stats.report().message
    start_and_hold(node)
    node.hold()
    assert data_of(node) == [[0.02]]


class _FakePolicy:
    kind = "fake"
    needs_images = ()

    def __init__(self, result):
        self.result = result

    def reset(self, seed=None, attempt=1):
        pass

    def act(self, state, images=None):
        if isinstance(self.result, Exception):
            raise self.result
        return np.asarray(self.result, dtype=np.float64)


@pytest.mark.parametrize("mode", ["float64_array", "joint_trajectory"])
def test_non_finite_policy_action_is_refused_and_the_robot_held(make_node, mode):
    from wvm_ros.core.diagnostics import ERROR

    node = make_node(action_mode=mode)
    node.on_state(js(GOOD))
    node.sm.start_episode(node.now(), "ep-test")
    node.policy = _FakePolicy([math.nan, 5.0])
    node.act()
    assert data_of(node) == [[100.0, 110.0]]                 # held on the last good state instead
    assert node.stats.counters["actions refused (NaN/inf)"] == 1
    r = node.stats.report()
    assert r.level == ERROR and "agent_x=nan" in r.message and "not published" in r.message
    assert r.values["action total"] == "1"                    # only the hold went out
    # a finite action goes out as before
    node.policy = _FakePolicy([1.0, 2.0])
    node.act()
    assert data_of(node)[-1] == [1.0, 2.0]


def test_policy_output_error_is_refused_and_held(make_node):
    from wvm_ros.core.policies import PolicyOutputError

    node = make_node()
    node.on_state(js(GOOD))
    node.sm.start_episode(node.now(), "ep-test")
    node.policy = _FakePolicy(PolicyOutputError("fake policy returned a non-finite action"))
    node.act()                                                # no exception out of the timer
    assert data_of(node) == [[100.0, 110.0]]
    assert node.stats.counters["actions refused (NaN/inf)"] == 1
    assert "fake policy returned a non-finite action" in node.stats.report().message


def test_publish_action_never_sends_non_finite_values(make_node):
    node = make_node(hold_mode="none")
    assert node.publish_action(np.array([math.inf, 0.0]), "test") is False
    assert node.publish_action(np.array([1.0, 2.0]), "test") is True
    assert data_of(node) == [[1.0, 2.0]]
    assert node.stats.counters["actions refused (NaN/inf)"] == 1
    # hold_mode none: a refused policy action is followed by nothing at all
    node.on_state(js(GOOD))
    node.sm.start_episode(node.now(), "ep-test")
    node.policy = _FakePolicy([0.0, math.nan])
    node.act()
    assert data_of(node) == [[1.0, 2.0]]
    assert node.stats.counters["actions refused (NaN/inf)"] == 2

