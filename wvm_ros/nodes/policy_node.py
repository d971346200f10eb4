"""Policy node `wvm_policy`: acts, decides success / failure from live progress, retries.

    python -m wvm_ros.nodes.policy_node --ros-args --params-file config/wvm.yaml

Subscribes `/robot/joint_states` (state), `/wvm/progress` (wvm_msgs/Progress), optional
camera images (for LeRobot policies) and `/wvm/human_label` (std_msgs/String); publishes
actions on `/robot/action` (std_msgs/Float64MultiArray, ros2_control forward-controller
form) or `/robot/joint_trajectory` (trajectory_msgs/JointTrajectory), episode events on
`/wvm/episode_event` and diagnostics on `/diagnostics`; serves `/wvm/label_attempt`
(wvm_msgs/LabelAttempt); calls the reset service (`/robot/reset`, std_srvs/Trigger)
after every attempt.

Decisions are made by `wvm_ros.core.episode.EpisodeStateMachine`; policies come from
`wvm_ros.core.policies`. This file only converts messages and owns timing:

* watchdog: while an attempt runs, the newest valid Progress must be younger than
  `progress_max_age_s` (from the attempt's start, `progress_startup_grace_s` is allowed
  for the value node to warm up). Otherwise the robot is held (the current position is
  commanded, `hold_mode: current_position`, or nothing is sent, `hold_mode: none`), a HOLD
  event is published and diagnostics go to WARN; the first valid Progress after that
  resumes (RESUME event).
* Progress that is not valid, NaN / inf, outside [0, 1], or stamped with another attempt
  is ignored and counted (diagnostics).
* a joint state with NaN / inf in a joint the node uses (`state_names`, `joint_names`) is
  rejected and counted (`state rejected (NaN/inf)`), logged (rate-limited, naming the topic
  and the fields) and reported (diagnostics ERROR); the last good state stays in use.
* no action with NaN / inf is ever published: a policy that computes one
  (PolicyOutputError) or an action that is not finite is refused and counted
  (`actions refused (NaN/inf)`, diagnostics ERROR), and the robot is held on the last good
  state instead (`hold_mode`).
* reset: a missing service (not there within `reset_timeout_s`), a failed call or a
  timeout ends the episode with ABORT and the reason; the node keeps running.
"""
from __future__ import annotations

import json
import math
import sys
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from wvm_msgs.msg import EpisodeEvent, Progress
from wvm_msgs.srv import LabelAttempt

from wvm_ros.core.diagnostics import NodeStats, RateLimitedLog
from wvm_ros.core.episode import (FAILED, IDLE, RESETTING, RUNNING, SUCCEEDED, EpisodeConfig, EpisodeError,
                                  EpisodeStateMachine, Event)
from wvm_ros.core.policies import Policy, PolicyInputError, PolicyOutputError, load_policy
from wvm_ros.ros.diagnostics import report_to_status
from wvm_ros.ros.qos import qos_from_name
from wvm_ros.ros.stamps import sec_to_stamp

LABELS = {LabelAttempt.Request.SUCCESS: "success", LabelAttempt.Request.FAILURE: "failure",
          LabelAttempt.Request.ABORT: "abort"}
ACTION_MODES = ("float64_array", "joint_trajectory")


def parse_image_map(entries) -> dict[str, str]:
    """["/camera/image_raw=observation.image", ...] -> {topic: feature key}."""
    out = {}
    for e in entries or []:
        e = str(e).strip()
        if not e:
            continue
        if "=" not in e:
            raise ValueError(f"image_map entry {e!r}: expected 'TOPIC=FEATURE_KEY'")
        topic, key = (s.strip() for s in e.split("=", 1))
        out[topic] = key
    return out


class PolicyNode(Node):
    def __init__(self, **kwargs):
        super().__init__("wvm_policy", **kwargs)
        P = self.declare_parameter
        # what runs
        self.policy_kind = P("policy", "scripted").value
        self.checkpoint = P("policy_checkpoint", "").value
        self.device = P("policy_device", "cpu").value
        self.task = P("task", "Push the T-shaped block onto the T-shaped target.").value
        self.seed = int(P("seed", 0).value)
        # scripted PushT policy: injected behaviour (steps at rate_hz, from the attempt's start)
        self.scripted_options = P("scripted_options", "{}").value   # JSON object of ScriptedPushTPolicy kwargs
        hesitation_s = float(P("inject_hesitation_s", 0.0).value)   # > 0: hesitate this long ...
        hesitation_at_s = float(P("inject_hesitation_at_s", 3.0).value)  # ... from this time on
        failure = P("inject_failure", "").value                      # "", stuck, random or retry
        failure_at_s = float(P("inject_failure_at_s", 2.0).value)
        failure_s = float(P("inject_failure_duration_s", 4.0).value)  # random / retry only
        inject_attempts = [int(a) for a in P("inject_on_attempts", [1]).value if int(a) > 0]
        inject_probability = float(P("inject_probability", 1.0).value)
        # topics
        self.state_topic = P("state_topic", "/robot/joint_states").value
        self.state_names = list(P("state_names", ["agent_x", "agent_y", "block_x", "block_y", "block_theta"]).value)
        self.image_topics = [t for t in P("image_topics", [""]).value if t]
        image_map = parse_image_map([t for t in P("image_map", [""]).value if t])
        self.progress_topic = P("progress_topic", "/wvm/progress").value
        self.action_mode = P("action_mode", "float64_array").value
        self.action_topic = P("action_topic", "/robot/action").value
        self.trajectory_topic = P("trajectory_topic", "/robot/joint_trajectory").value
        self.joint_names = list(P("joint_names", ["agent_x", "agent_y"]).value)
        self.trajectory_time_s = float(P("trajectory_time_from_start_s", 0.1).value)
        self.event_topic = P("event_topic", "/wvm/episode_event").value
        self.reset_service = P("reset_service", "/robot/reset").value
        image_qos = P("image_qos", "reliable").value
        # timing
        self.rate_hz = float(P("rate_hz", 10.0).value)
        self.max_age_s = float(P("progress_max_age_s", 2.0).value)
        self.startup_grace_s = float(P("progress_startup_grace_s", 5.0).value)
        self.hold_mode = P("hold_mode", "current_position").value
        self.reset_timeout_s = float(P("reset_timeout_s", 10.0).value)
        self.start_delay_s = float(P("start_delay_s", 1.0).value)
        self.episodes = int(P("episodes", 1).value)
        self.on_done = P("on_done", "idle").value
        self.diag_period_s = float(P("diagnostics_period_s", 1.0).value)
        # state machine
        defaults = EpisodeConfig()
        cfg = {}
        for name, default in defaults.to_dict().items():
            cfg[name] = P(name, default).value
        self.sm_config = EpisodeConfig.from_mapping(cfg)

        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"parameter action_mode={self.action_mode!r}; expected one of {', '.join(ACTION_MODES)}")
        if self.hold_mode not in ("current_position", "none"):
            raise ValueError(f"parameter hold_mode={self.hold_mode!r}; expected 'current_position' or 'none'")
        if self.on_done not in ("idle", "exit"):
            raise ValueError(f"parameter on_done={self.on_done!r}; expected 'idle' or 'exit'")
        if self.rate_hz <= 0 or self.max_age_s <= 0 or self.reset_timeout_s <= 0:
            raise ValueError("parameters rate_hz, progress_max_age_s and reset_timeout_s must be > 0")

        # the policy
        if self.policy_kind == "scripted":
            opts = json.loads(self.scripted_options or "{}")
            if not isinstance(opts, dict):
                raise ValueError(f"parameter scripted_options must be a JSON object, got {self.scripted_options!r}")
            steps = lambda s: max(0, int(round(s * self.rate_hz)))  # noqa: E731
            injections = []
            if hesitation_s > 0:
                injections.append({"kind": "hesitation", "start": steps(hesitation_at_s),
                                   "duration": max(1, steps(hesitation_s))})
            if failure:
                if failure not in ("stuck", "random", "retry"):
                    raise ValueError(f"parameter inject_failure={failure!r}; expected '', 'stuck', 'random' or 'retry'")
                injections.append({"kind": failure, "start": steps(failure_at_s),
                                   "duration": max(1, steps(failure_s)) if failure != "stuck" else 0})
            self.policy: Policy = load_policy("scripted", seed=self.seed, injections=injections,
                                              inject_on_attempts=inject_attempts,
                                              inject_probability=inject_probability, **opts)
        else:
            self.policy = load_policy(self.policy_kind, checkpoint=self.checkpoint, device=self.device,
                                      image_map=image_map, task=self.task)
            if self.policy.needs_images and not self.image_topics:
                raise ValueError(f"policy needs images {list(self.policy.needs_images)}: set parameter image_topics")
        self.get_logger().info(f"policy: {self.policy.description}")

        self.sm = EpisodeStateMachine(self.sm_config)
        self.stats = NodeStats(rates=("input", "progress", "action"), expect_input_within_s=None)
        self.ratelog = RateLimitedLog(5.0)
        self.episode_index = 0
        self.state: np.ndarray | None = None
        self.state_positions: dict[str, float] = {}
        self.images: dict[str, np.ndarray] = {}
        self.last_valid_rx: float | None = None     # monotonic time of the newest valid Progress
        self.attempt_started_at: float | None = None
        self.first_state_at: float | None = None
        self.reset_future = None
        self.reset_deadline = 0.0
        self.reset_requested_at = 0.0
        self.done = False
        self.events_out: list[Event] = []

        rel = qos_from_name("reliable", 10)
        # reliable + transient local: a subscriber that asks for transient local also gets the
        # recent events it missed (a logger started late); volatile subscribers work as usual
        self.event_pub = self.create_publisher(EpisodeEvent, self.event_topic, QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL))
        if self.action_mode == "float64_array":
            self.action_pub = self.create_publisher(Float64MultiArray, self.action_topic, rel)
        else:
            self.action_pub = self.create_publisher(JointTrajectory, self.trajectory_topic, rel)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(JointState, self.state_topic, self.on_state, rel)
        self.create_subscription(Progress, self.progress_topic, self.on_progress, qos_from_name("reliable", 20))
        self.create_subscription(String, "/wvm/human_label", self.on_label_topic, rel)
        for topic in self.image_topics:
            self.create_subscription(Image, topic, lambda m, t=topic: self.on_image(t, m), qos_from_name(image_qos, 2))
        self.create_service(LabelAttempt, "/wvm/label_attempt", self.on_label_service)
        self.reset_client = self.create_client(Trigger, self.reset_service)
        self.create_timer(1.0 / self.rate_hz, self.on_timer)
        self.create_timer(self.diag_period_s, self.publish_diagnostics)
        self.t0 = time.monotonic()

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def now() -> float:
        return time.monotonic()

    def publish_events(self, events: list[Event]) -> None:
        for ev in events:
            msg = EpisodeEvent()
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.episode_id = ev.episode_id
            msg.attempt = int(ev.attempt)
            msg.kind = int(getattr(EpisodeEvent, ev.kind))
            msg.progress = float(ev.progress)
            msg.reason = ev.reason
            msg.outcome = ev.outcome
            msg.task = self.task
            self.event_pub.publish(msg)
            self.events_out.append(ev)
            self.stats.count(f"events {ev.kind}")
            text = f"{ev.kind} {ev.episode_id}#{ev.attempt}{' outcome=' + ev.outcome if ev.outcome else ''}: {ev.reason}"
            if ev.kind in ("HOLD", "ABORT", "STALL", "REGRESSION", "TIMEOUT"):
                self.get_logger().warning(text)
            else:
                self.get_logger().info(text)
            if ev.kind == "START":
                self.attempt_started_at = self.now()
                self.last_valid_rx = None
                self.policy.reset(seed=self.seed + 1000 * self.episode_index + ev.attempt - 1, attempt=ev.attempt)
            if ev.kind == "HOLD":
                self.stats.warn(f"holding: {ev.reason}")
            if ev.kind in ("RESUME", "END"):
                self.stats.warn(None)

    def after_events(self) -> None:
        """After an outcome (state SUCCEEDED / FAILED) start the reset."""
        if self.sm.state in (SUCCEEDED, FAILED) and self.reset_future is None:
            self.publish_events(self.sm.begin_reset(self.now()))
            self.reset_requested_at = self.now()
            self.reset_deadline = self.reset_requested_at + self.reset_timeout_s
            self.reset_future = "waiting for service"

    # --------------------------------------------------------------- callbacks
    def on_state(self, msg: JointState) -> None:
        self.stats.tick("input")
        pos = dict(zip(msg.name, msg.position))
        missing = [n for n in self.state_names if n not in pos]
        if missing:
            self.stats.count("state rejected (missing joints)")
            if self.ratelog.should_log("state"):
                self.get_logger().error(f"{self.state_topic}: joint names {list(msg.name)} lack {missing} "
                                        f"(parameter state_names expects {self.state_names})")
            return
        used = list(self.state_names) + [n for n in self.joint_names if n in pos and n not in self.state_names]
        bad = [(n, pos[n]) for n in used if not math.isfinite(pos[n])]
        if bad:
            self.stats.count("state rejected (NaN/inf)")
            fields = ", ".join(f"{n}={v}" for n, v in bad)
            text = (f"{self.state_topic}: joint state rejected, non-finite positions {fields} "
                    f"(expected finite numbers for {used}); keeping the last good state")
            self.stats.error(text)
            if self.ratelog.should_log("state not finite"):
                self.get_logger().error(text)
            return
        self.state_positions = pos
        self.state = np.array([pos[n] for n in self.state_names], dtype=np.float64)
        if self.first_state_at is None:
            self.first_state_at = self.now()

    def on_image(self, topic: str, msg: Image) -> None:
        from wvm_ros.ros.images import ImageError, image_msg_to_rgb8

        try:
            self.images[topic] = image_msg_to_rgb8(msg)
        except ImageError as e:
            self.stats.count("images rejected")
            if self.ratelog.should_log(f"image {topic}"):
                self.get_logger().error(f"{topic}: {e}")

    def on_progress(self, msg: Progress) -> None:
        p = float(msg.progress)
        if not msg.valid:
            self.stats.count("progress ignored: not valid")
            return
        if not math.isfinite(p):
            self.stats.count("progress ignored: NaN/inf")
            return
        if p < -1e-6 or p > 1.0 + 1e-6:
            self.stats.count("progress ignored: out of range")
            if self.ratelog.should_log("range"):
                self.get_logger().warning(f"{self.progress_topic}: progress {p} outside [0, 1] ignored")
            return
        if msg.episode_id and self.sm.state == RUNNING and (
                msg.episode_id != self.sm.episode_id or int(msg.attempt) != self.sm.attempt):
            self.stats.count("progress ignored: other attempt")
            return
        self.stats.tick("progress")
        self.last_valid_rx = self.now()
        t = self.now()
        events = []
        if self.sm.holding:
            events += self.sm.resume(t, f"valid Progress again ({p:.3f})")
        events += self.sm.update(t, min(1.0, max(0.0, p)), self._success_of(msg))
        self.publish_events(events)
        self.after_events()

    def _success_of(self, msg: Progress) -> float:
        """The success classifier's probability carried by a valid Progress (NaN: none). A value
        that is not NaN and not in [0, 1] is ignored and counted; with success_source classifier,
        Progress without any probability is counted and said once (no success decision can come)."""
        s = float(getattr(msg, "success", math.nan))
        if math.isnan(s):
            if self.sm_config.success_source == "classifier":
                self.stats.count("success probability missing")
                if self.ratelog.should_log("no success probability"):
                    self.get_logger().warning(
                        f"success_source is 'classifier' but {self.progress_topic} carries no success probability "
                        "(NaN): no success decision can be taken; give the value node a success_checkpoint, or "
                        "set success_source to 'progress' or 'either'")
            return math.nan
        if not (-1e-6 <= s <= 1.0 + 1e-6):
            self.stats.count("success probability ignored: out of range")
            if self.ratelog.should_log("success range"):
                self.get_logger().warning(f"{self.progress_topic}: success probability {s} outside [0, 1] ignored")
            return math.nan
        return min(1.0, max(0.0, s))

    def _label(self, label: str, reason: str) -> tuple[bool, str]:
        try:
            events = self.sm.human_label(self.now(), label, reason)
        except EpisodeError as e:
            self.stats.count("labels rejected")
            return False, str(e)
        self.publish_events(events)
        self.after_events()
        return True, f"attempt {self.sm.episode_id}#{self.sm.attempt} labelled {label}"

    def on_label_service(self, req, resp):
        label = LABELS.get(int(req.label))
        if label is None:
            resp.accepted, resp.message = False, f"label {req.label}; expected 0 (SUCCESS), 1 (FAILURE) or 2 (ABORT)"
            return resp
        resp.accepted, resp.message = self._label(label, req.reason or "human label (service)")
        return resp

    def on_label_topic(self, msg: String) -> None:
        text = msg.data.strip()
        label, _, reason = text.partition(":")
        ok, why = self._label(label.strip().lower(), reason.strip() or "human label (topic)")
        if not ok:
            self.get_logger().warning(f"/wvm/human_label {text!r} rejected: {why}")

    # ------------------------------------------------------------------- timer
    def on_timer(self) -> None:
        t = self.now()
        sm = self.sm
        if sm.state == IDLE and not self.done:
            self.maybe_start(t)
        elif sm.state == RUNNING:
            self.watchdog(t)
            self.publish_events(sm.tick(t))
            self.after_events()
            if sm.state == RUNNING:
                self.act()
        if sm.state == RESETTING:
            self.poll_reset(t)

    def maybe_start(self, t: float) -> None:
        if self.episodes > 0 and self.episode_index >= self.episodes:
            self.finish("all episodes done")
            return
        if self.first_state_at is None or t - self.first_state_at < self.start_delay_s:
            return
        self.episode_index += 1
        self.publish_events(self.sm.start_episode(t, f"ep{self.episode_index:04d}-{int(time.time())}"))

    def finish(self, why: str) -> None:
        if not self.done:
            self.done = True
            self.get_logger().info(f"{why}; {'exiting' if self.on_done == 'exit' else 'idle'}")

    def watchdog(self, t: float) -> None:
        sm = self.sm
        if sm.holding:
            return
        if self.last_valid_rx is None:
            waited = t - (self.attempt_started_at or t)
            if waited > self.startup_grace_s:
                self.publish_events(sm.hold(t, f"no valid Progress on {self.progress_topic} for {waited:.1f} s "
                                               f"since the attempt started (grace {self.startup_grace_s:g} s)"))
        else:
            age = t - self.last_valid_rx
            if age > self.max_age_s:
                self.publish_events(sm.hold(t, f"newest valid Progress is {age:.2f} s old "
                                               f"(progress_max_age_s {self.max_age_s:g})"))
        if sm.holding:
            self.stats.count("holds")
            self.hold()

    def hold(self) -> None:
        if self.hold_mode == "none":
            return
        missing = [n for n in self.joint_names if n not in self.state_positions]
        if missing:
            return
        self.publish_action(np.array([self.state_positions[n] for n in self.joint_names]), "hold")

    def act(self) -> None:
        if self.sm.holding:
            self.hold()
            return
        if self.state is None:
            return
        if self.policy.needs_images and len(self.images) < len(self.image_topics):
            return
        try:
            action = self.policy.act(self.state, self.images)
        except PolicyInputError as e:
            self.stats.error(str(e))
            if self.ratelog.should_log("act"):
                self.get_logger().error(f"policy: {e}")
            return
        except PolicyOutputError as e:
            self._refuse_action(f"policy: {e}; holding on the last good state")
            self.hold()
            return
        if not self.publish_action(action, "policy"):
            self.hold()

    def _refuse_action(self, text: str) -> None:
        self.stats.count("actions refused (NaN/inf)")
        self.stats.error(text)
        if self.ratelog.should_log("action not finite"):
            self.get_logger().error(text)

    def publish_action(self, action: np.ndarray, source: str) -> bool:
        """Publish `action` (from `source`: "policy" or "hold") on the action topic; an action
        that is not all finite numbers is refused (counted, reported, not sent): False."""
        try:
            arr = np.asarray(action, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as e:
            self._refuse_action(f"{source} action {action!r} is not a vector of numbers ({e}); not sent")
            return False
        if not np.all(np.isfinite(arr)):
            topic = self.action_topic if self.action_mode == "float64_array" else self.trajectory_topic
            where = self.joint_names if len(self.joint_names) == len(arr) else list(range(len(arr)))
            bad = ", ".join(f"{n}={v}" for n, v in zip(where, arr.tolist()) if not math.isfinite(v))
            self._refuse_action(f"{source} action {arr.tolist()} has non-finite values ({bad}); expected finite "
                                f"numbers: not published on {topic}")
            return False
        a = arr.tolist()
        if self.action_mode == "float64_array":
            msg = Float64MultiArray()
            msg.layout.dim = [MultiArrayDimension(label="action", size=len(a), stride=len(a))]
            msg.data = a
        else:
            msg = JointTrajectory()
            msg.header.stamp = self.get_clock().now().to_msg()
            names = self.joint_names if len(self.joint_names) == len(a) else [f"joint_{i}" for i in range(len(a))]
            msg.joint_names = names
            pt = JointTrajectoryPoint()
            pt.positions = a
            pt.time_from_start = sec_to_stamp(self.trajectory_time_s)  # Duration has the same fields
            msg.points = [pt]
        self.action_pub.publish(msg)
        self.stats.tick("action")
        return True

    def poll_reset(self, t: float) -> None:
        fut = self.reset_future
        if fut == "waiting for service":
            if self.reset_client.service_is_ready():
                self.reset_future = self.reset_client.call_async(Trigger.Request())
            elif t > self.reset_deadline:
                self.reset_finished(t, False, f"reset service {self.reset_service} not available within "
                                              f"{self.reset_timeout_s:g} s")
            return
        if fut is None:
            return
        if fut.done():
            try:
                res = fut.result()
            except Exception as e:  # noqa: BLE001
                self.reset_finished(t, False, f"reset service {self.reset_service} call raised {e}")
                return
            if res is not None and res.success:
                self.reset_finished(t, True, res.message)
            else:
                msg = res.message if res is not None else "no response"
                self.reset_finished(t, False, f"reset service {self.reset_service} failed: {msg}")
        elif t > self.reset_deadline:
            fut.cancel()
            self.reset_finished(t, False, f"reset service {self.reset_service} did not answer within "
                                          f"{self.reset_timeout_s:g} s")

    def reset_finished(self, t: float, ok: bool, reason: str) -> None:
        self.reset_future = None
        self.stats.count("resets ok" if ok else "resets failed")
        if not ok:
            self.stats.error(reason)
        self.publish_events(self.sm.reset_done(t, ok, reason))
        if self.sm.state == IDLE and not ok:
            # the scene is in an unknown state: no further attempts
            self.finish(f"episode aborted: {reason}")

    # ------------------------------------------------------------- diagnostics
    def publish_diagnostics(self) -> None:
        sm = self.sm
        age = (self.now() - self.last_valid_rx) if self.last_valid_rx is not None else float("nan")
        self.stats.extra = {
            "state": sm.state, "holding": str(sm.holding), "episode": sm.episode_id,
            "attempt": str(sm.attempt), "progress": f"{sm.last_progress:.3f}",
            "progress age (s)": f"{age:.2f}", "policy": self.policy.kind,
        }
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [report_to_status(self.stats.report(), "wvm_policy: episode", self.policy.kind)]
        self.diag_pub.publish(arr)


def main(argv: list[str] | None = None) -> int:
    rclpy.init(args=argv if argv is not None else sys.argv)
    node = None
    try:
        node = PolicyNode()
        while rclpy.ok():
            rclpy.spin_once(node, timeout_sec=0.1)
            if node.done and node.on_done == "exit":
                break
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as e:  # clear message at start-up (bad parameters, unloadable policy)
        print(f"wvm_policy: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
