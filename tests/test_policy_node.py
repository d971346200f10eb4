"""Policy node as its own process over DDS.

* the value node dies mid-attempt: the policy holds (HOLD event, diagnostics WARN,
  hold actions = current position), and resumes (RESUME) when values return; a human label
  on the topic then wins over the model and the sim's reset starts attempt 2;
* no reset service: the attempt's end is followed by ABORT with the reason, no crash;
  invalid Progress (not valid, NaN, out of range) is ignored and counted; the label service
  wins over the model.

The first test runs the real value node; the second feeds Progress from the test itself.
"""
from __future__ import annotations

import math
import sys
import time

import pytest

from conftest import node_cmd, requires_ros

pytestmark = [requires_ros, pytest.mark.ros]



def event_probe():
    """A probe for /wvm/episode_event that asks for transient local: it also gets the events
    published before discovery completed (the policy publishes them transient local)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from wvm_msgs.msg import EpisodeEvent

    from wvm_ros.ros.testing import TopicProbe

    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
    return TopicProbe({"/wvm/episode_event": EpisodeEvent}, qos=qos, name="wvm_event_probe")


def kinds_of(ev):
    from wvm_msgs.msg import EpisodeEvent

    names = {getattr(EpisodeEvent, k): k for k in ("START", "SUCCESS", "STALL", "REGRESSION", "TIMEOUT", "RETRY",
                                                     "ABORT", "HUMAN_LABEL", "END", "HOLD", "RESUME", "FAILURE")}
    return [(names[int(e.kind)], e) for e in ev.get("/wvm/episode_event")]


def has_event(ev, kind, n=1):
    return sum(1 for k, _ in kinds_of(ev) if k == kind) >= n


def policy_diag(probe):
    from wvm_ros.ros.diagnostics import status_level, status_values

    out = []
    for arr in probe.get("/diagnostics"):
        for st in arr.status:
            if st.name.startswith("wvm_policy"):
                out.append((status_level(st), st.message, status_values(st)))
    return out


VALUE_ARGS = ("-p", "image_topics:=['/camera/image_raw']", "-p", "diagnostics_period_s:=0.5")


def test_value_node_dies_policy_holds_then_resumes(ros_env, procs):
    """The real value node (shipped checkpoint when present, else UNTRAINED weights) is
    SIGKILLed mid-attempt and restarted. Success and regression are switched off here so that
    only the watchdog and the label decide, whatever the model says."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray, String
    from wvm_msgs.msg import Progress

    from wvm_ros.ros.testing import TopicProbe

    topics = {"/robot/action": Float64MultiArray, "/robot/joint_states": JointState,
              "/diagnostics": DiagnosticArray, "/wvm/progress": Progress}
    with TopicProbe(topics) as probe, event_probe() as ev:
        sim = procs.start("sim_robot", node_cmd("wvm_ros.nodes.sim_robot_node", "-p", "width:=64", "-p", "height:=64"),
                          env=ros_env)
        value = procs.start("wvm_value", node_cmd("wvm_ros.nodes.value_node", *VALUE_ARGS), env=ros_env)

        def valid_progress(after=0.0):
            return any(m.valid for m in probe.get("/wvm/progress")[int(after):])

        def alive_value():
            for c in (sim, value):
                if not c.alive():
                    raise AssertionError(f"{c.name} died:\n" + c.log_tail())
        probe.wait_for(valid_progress, timeout=120, what="valid Progress from the value node", alive=alive_value)
        policy = procs.start("policy", node_cmd(
            "wvm_ros.nodes.policy_node", "-p", "progress_max_age_s:=1.0", "-p", "stall_min_gain:=0.0",
            "-p", "success_threshold:=1.0", "-p", "success_dwell_s:=1000.0", "-p", "regression_drop:=2.0",
            "-p", "timeout_s:=300.0", "-p", "start_delay_s:=1.0", "-p", "max_attempts:=2",
            "-p", "diagnostics_period_s:=0.3"), env=ros_env)

        def alive():
            for c in (sim, policy):
                if not c.alive():
                    raise AssertionError(f"{c.name} died:\n" + c.log_tail())

        probe.wait_for(lambda: has_event(ev, "START"), timeout=90, what="START", alive=alive)
        n0 = len(probe.get("/robot/action"))
        probe.wait_for(lambda: len(probe.get("/robot/action")) > n0 + 5, timeout=60, what="actions", alive=alive)
        start = [e for k, e in kinds_of(ev) if k == "START"][0]
        probe.wait_for(lambda: any(m.valid and m.episode_id == start.episode_id and m.attempt == 1
                                   for m in probe.get("/wvm/progress")),
                       timeout=90, what="valid Progress for attempt 1", alive=alive)
        time.sleep(0.5)
        assert not has_event(ev, "HOLD"), [e.reason for k, e in kinds_of(ev)]

        # the value node dies mid-attempt (SIGKILL: no goodbye)
        procs.kill(value)
        t_kill = time.monotonic()
        probe.wait_for(lambda: has_event(ev, "HOLD"), timeout=15, what="HOLD after the value node died",
                       alive=alive)
        assert time.monotonic() - t_kill < 1.0 + 5.0            # watchdog age + slack for a loaded CI machine
        hold = [e for k, e in kinds_of(ev) if k == "HOLD"][0]
        assert "old" in hold.reason and hold.attempt == 1
        age = float(hold.reason.split(" is ")[1].split(" s old")[0])
        assert 1.0 <= age < 1.0 + 0.5, hold.reason           # decided within one control period of the age
        probe.wait_for(lambda: any(lv == 1 and "holding" in msg for lv, msg, _ in policy_diag(probe)),
                       timeout=20, what="diagnostics WARN 'holding'", alive=alive)
        # while holding, the commanded target is the agent's current position: the agent stays put
        time.sleep(1.0)
        na = len(probe.get("/robot/action"))
        probe.wait_for(lambda: len(probe.get("/robot/action")) > na + 5, timeout=20, what="hold actions")
        js = probe.get("/robot/joint_states")[-1]
        last = probe.get("/robot/action")[-1].data
        assert math.dist(last, js.position[:2]) < 3.0
        assert not has_event(ev, "RESUME")

        # the value node comes back: RESUME at its first valid Progress
        n_prog = len(probe.get("/wvm/progress"))
        value = procs.start("wvm_value_2", node_cmd("wvm_ros.nodes.value_node", *VALUE_ARGS), env=ros_env)
        probe.wait_for(lambda: has_event(ev, "RESUME"), timeout=120, what="RESUME after restart", alive=alive)
        assert valid_progress(n_prog)
        probe.wait_for(lambda: policy_diag(probe) and policy_diag(probe)[-1][0] == 0, timeout=30,
                       what="diagnostics back to OK", alive=alive)

        # a human label on the topic wins over the model; the sim's reset starts attempt 2
        label = probe.publisher(String, "/wvm/human_label")
        probe.wait_for(lambda: label.get_subscription_count() > 0, timeout=10, what="label subscriber")
        label.publish(String(data="failure: operator saw the block slip"))
        probe.wait_for(lambda: has_event(ev, "START", 2), timeout=20, what="second START", alive=alive)
        ks = [k for k, _ in kinds_of(ev)]
        assert ks[:7] == ["START", "HOLD", "RESUME", "HUMAN_LABEL", "END", "RETRY", "START"], ks
        hl = [e for k, e in kinds_of(ev) if k == "HUMAN_LABEL"][0]
        assert hl.outcome == "failure" and "slip" in hl.reason
        assert [e for k, e in kinds_of(ev) if k == "START"][1].attempt == 2


def test_missing_reset_service_aborts_and_invalid_progress_is_counted(ros_env, procs):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState
    from wvm_msgs.msg import Progress
    from wvm_msgs.srv import LabelAttempt

    from wvm_ros.ros.testing import TopicProbe

    policy = procs.start("policy", node_cmd(
        "wvm_ros.nodes.policy_node", "-p", "reset_timeout_s:=1.5", "-p", "start_delay_s:=0.0",
        "-p", "stall_min_gain:=0.0", "-p", "timeout_s:=120.0", "-p", "progress_max_age_s:=30.0",
        "-p", "diagnostics_period_s:=0.3", "-p", "reset_service:=/no_such/reset"), env=ros_env)

    def alive():
        if not policy.alive():
            raise AssertionError("policy died:\n" + policy.log_tail())

    topics = {"/diagnostics": DiagnosticArray}
    with TopicProbe(topics) as probe, event_probe() as ev:
        js_pub = probe.publisher(JointState, "/robot/joint_states")
        prog_pub = probe.publisher(Progress, "/wvm/progress")

        def send_state():
            js_pub.publish(JointState(name=["agent_x", "agent_y", "block_x", "block_y", "block_theta"],
                                      position=[100.0, 100.0, 300.0, 300.0, 0.5]))

        def send(p, valid=True):
            m = Progress()
            m.progress, m.valid = p, valid
            prog_pub.publish(m)

        def started():
            send_state()
            return has_event(ev, "START")
        probe.wait_for(started, timeout=30, what="START", alive=alive)

        # invalid values that would all be "success" if believed: ignored and counted
        for _ in range(8):
            send(float("nan"))
            send(1.5)
            send(0.99, valid=False)
            send_state()
            time.sleep(0.1)

        def counted():
            d = policy_diag(probe)
            if not d:
                return False
            v = d[-1][2]
            return (int(v.get("progress ignored: NaN/inf", 0)) >= 8 and int(v.get("progress ignored: out of range", 0)) >= 8
                    and int(v.get("progress ignored: not valid", 0)) >= 8)
        probe.wait_for(counted, timeout=20, what="ignored Progress counted in diagnostics", alive=alive)
        assert [k for k, _ in kinds_of(ev)] == ["START"]     # none of them decided anything

        # a valid low value, then the human label service says success: it wins
        send(0.2)
        req = LabelAttempt.Request(label=LabelAttempt.Request.SUCCESS, reason="operator: done")
        res = probe.call(LabelAttempt, "/wvm/label_attempt", req, timeout=10)
        assert res.accepted, res.message
        probe.wait_for(lambda: has_event(ev, "ABORT"), timeout=20, what="ABORT (no reset service)", alive=alive)
        ks = kinds_of(ev)
        assert [k for k, _ in ks] == ["START", "HUMAN_LABEL", "END", "ABORT"]
        assert ks[1][1].outcome == "success" and ks[2][1].outcome == "success"
        assert "/no_such/reset" in ks[3][1].reason and "not available" in ks[3][1].reason
        # no crash; a label with nothing to label is refused, not fatal
        time.sleep(0.5)
        alive()
        res = probe.call(LabelAttempt, "/wvm/label_attempt",
                         LabelAttempt.Request(label=7, reason="bad"), timeout=10)
        assert not res.accepted and "expected" in res.message
        alive()


def test_success_probability_decides_with_classifier_source(ros_env, procs):
    """success_source classifier: Progress without a probability is counted (no decision), a
    probability outside [0, 1] is ignored and counted, P(done) >= threshold for the dwell ends
    the attempt as SUCCESS with the classifier's reason, whatever the progress."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState
    from wvm_msgs.msg import Progress

    from wvm_ros.ros.testing import TopicProbe

    policy = procs.start("policy", node_cmd(
        "wvm_ros.nodes.policy_node", "-p", "start_delay_s:=0.0", "-p", "stall_min_gain:=0.0",
        "-p", "timeout_s:=120.0", "-p", "progress_max_age_s:=30.0", "-p", "diagnostics_period_s:=0.3",
        "-p", "reset_service:=/no_such/reset", "-p", "reset_timeout_s:=1.0", "-p", "success_source:=classifier",
        "-p", "regression_drop:=2.0",
        "-p", "success_prob_threshold:=0.9", "-p", "success_prob_dwell_s:=0.3"), env=ros_env)

    def alive():
        if not policy.alive():
            raise AssertionError("policy died:\n" + policy.log_tail())

    with TopicProbe({"/diagnostics": DiagnosticArray}) as probe, event_probe() as ev:
        js_pub = probe.publisher(JointState, "/robot/joint_states")
        prog_pub = probe.publisher(Progress, "/wvm/progress")

        def send_state():
            js_pub.publish(JointState(name=["agent_x", "agent_y", "block_x", "block_y", "block_theta"],
                                      position=[100.0, 100.0, 300.0, 300.0, 0.5]))

        def send(p, s):
            m = Progress()
            m.progress, m.valid, m.success = p, True, s
            prog_pub.publish(m)

        def started():
            send_state()
            return has_event(ev, "START")
        probe.wait_for(started, timeout=30, what="START", alive=alive)
        for _ in range(6):       # progress 1.0 but no probability, then a bad probability: no decision
            send(1.0, float("nan"))
            send(1.0, 1.7)
            send_state()
            time.sleep(0.1)

        def counted():
            d = policy_diag(probe)
            return bool(d) and int(d[-1][2].get("success probability missing", 0)) >= 6 and \
                int(d[-1][2].get("success probability ignored: out of range", 0)) >= 6
        probe.wait_for(counted, timeout=20, what="missing / bad probabilities counted", alive=alive)
        assert [k for k, _ in kinds_of(ev)] == ["START"]
        assert "carries no success probability" in policy.log_tail(100)

        def succeeded():
            send(0.3, 0.97)
            send_state()
            time.sleep(0.05)
            return has_event(ev, "SUCCESS")
        probe.wait_for(succeeded, timeout=20, what="SUCCESS from the probability", alive=alive)
        sev = [e for k, e in kinds_of(ev) if k == "SUCCESS"][0]
        assert "success probability >= 0.9" in sev.reason and "progress 0.300" in sev.reason
        alive()


@pytest.mark.parametrize("param,needle", [("action_mode:=teleport", "action_mode"),
                                          ("success_source:=vlm", "success_source"),
                                          ("inject_failure:=nap", "inject_failure"),
                                          ("success_threshold:=1.5", "success_threshold")])
def test_bad_parameters_exit_with_a_clear_message(ros_env, param, needle):
    import subprocess

    r = subprocess.run(node_cmd("wvm_ros.nodes.policy_node", "-p", param), env=ros_env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1
    assert needle in r.stderr and "expected" in r.stderr, r.stderr
