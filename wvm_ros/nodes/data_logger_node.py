"""wvm_logger: records every attempt into its own rosbag2/MCAP bag (and, optionally, a live
LeRobot dataset episode).

A bag is opened at `START` and closed at `END` of `/wvm/episode_event`; its metadata.yaml
`custom_data` holds task, episode_id, attempt, outcome, final_progress, model_name,
checkpoint_id, calibration_id and the attempt's events. Writing (chunked MCAP flushed every
`flush_period_s`, crash markers, recovery of bags a crash left open, the disk guard) lives in
`wvm_ros.core.bag`; this node only subscribes (raw CDR bytes), routes and keeps parameters.

Messages are handled in the order DDS received them, not in the order the executor happens to
serve its subscriptions: when the node falls behind (a busy CPU, a slow disk), rclpy's executor
serves the waiting subscriptions in turn, one message each, so an END and the next START would
overtake the camera frames queued before them and those frames would land in the next attempt's
bag (or in none). Each callback only queues the message with its DDS reception time
(MessageInfo.received_timestamp); `spin_once_in_arrival_order` drains every ready subscription
and then handles the queue sorted by that time. That reception time is also the message's log
time in the bag, as rosbag2 records it (the node's clock when `use_sim_time` is on).

Parameters (see config/wvm.yaml, section wvm_logger):
  output_dir (str)           bags go to <output_dir>/<episode>_att<NNN>/
  topics (str[])             topics to record; message types are resolved from the graph. A
                             topic whose type has no message definition (e.g. a service
                             introspection topic, type pkg/srv/X_Event) is not recorded: an
                             error names it, /diagnostics and the stats list it under
                             "topics skipped", every other topic is recorded
  event_topic, progress_topic
  qos_reliability (str)      auto | reliable | best_effort (auto: reliable unless every
                             publisher of the topic is best effort, as rosbag2 does)
  best_effort_topics (str[]) topics always subscribed best effort
  qos_depth (int)            subscription queue depth
  compression (str)          none | zstd | lz4 (MCAP chunk compression; checked at start)
  writer_mode (str)          chunked (default; indexed chunks, as rosbag2 writes) | stream
                             (unchunked, flushed every flush_period_s: cheapest per message)
                             | naive (flush per message: the benchmark's baseline)
  stats_file (str)           write counters (received / recorded / write time / CPU) as JSON at exit
  chunk_size_mb, flush_period_s, fsync
  min_free_mb (float)        stop recording when the disk would have less free space
  max_total_mb (float)       stop recording when output_dir would exceed this (0: no cap)
  calibration_id (str), task (str: used when the START event carries none)
  dataset.enable (bool)      live LeRobot dataset, one episode per attempt
                             (wvm_ros.core.bag2lerobot.LiveDatasetRecorder); dataset.root,
                             dataset.keep_failed, dataset.fps, dataset.use_videos,
                             dataset.reference_topic, dataset.image_topics, dataset.state_topic,
                             dataset.action_topic, dataset.ground_truth_topic,
                             dataset.max_age_s, dataset.repo_id; see docs/data.md
"""
from __future__ import annotations

import heapq
import importlib
import itertools
import json
import math
import sys
import time

import rclpy
import rclpy.exceptions
import rclpy.executors
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message

from wvm_ros.core.diagnostics import NodeStats
from wvm_ros.core.bag import (COMPRESSIONS, BagError, BagExistsError, BagWriter, DiskGuard, DiskGuardError,
                              bag_name, check_compression, check_writable_dir, message_definition,
                              recover_incomplete_bags, unique_bag_dir)

DEFAULT_TOPICS = [
    "/camera/image_raw",
    "/camera/camera_info",
    "/robot/joint_states",
    "/robot/action",
    "/sim/ground_truth_progress",
    "/wvm/progress",
    "/wvm/episode_event",
    "/wvm/task",
]

EVENT_NAMES = {0: "START", 1: "SUCCESS", 2: "STALL", 3: "REGRESSION", 4: "TIMEOUT", 5: "RETRY",
               6: "ABORT", 7: "HUMAN_LABEL", 8: "END", 9: "HOLD", 10: "RESUME", 11: "FAILURE"}


def import_msg_class(typename: str):
    parts = typename.split("/")
    if len(parts) != 3:
        raise ValueError(f"message type {typename!r} is not of the form 'package/msg/Type'")
    return getattr(importlib.import_module(f"{parts[0]}.{parts[1]}"), parts[2])


def qos_yaml(profile: QoSProfile) -> str:
    """offered_qos_profiles text as rosbag2 v9 writes it."""
    rel = "reliable" if profile.reliability == ReliabilityPolicy.RELIABLE else "best_effort"
    dur = "transient_local" if profile.durability == DurabilityPolicy.TRANSIENT_LOCAL else "volatile"
    return (f"- history: keep_last\n  depth: {profile.depth}\n  reliability: {rel}\n"
            f"  durability: {dur}\n  deadline: {{sec: 0, nsec: 0}}\n  lifespan: {{sec: 0, nsec: 0}}\n"
            f"  liveliness: automatic\n  liveliness_lease_duration: {{sec: 0, nsec: 0}}\n"
            f"  avoid_ros_namespace_conventions: false\n")


class DataLoggerNode(Node):
    def __init__(self):
        super().__init__("wvm_logger")
        p = self.declare_parameter
        self.output_dir = str(p("output_dir", "wvm_bags").value)
        topics = list(p("topics", DEFAULT_TOPICS).value)
        self.event_topic = str(p("event_topic", "/wvm/episode_event").value)
        self.progress_topic = str(p("progress_topic", "/wvm/progress").value)
        self.task_topic = str(p("task_topic", "/wvm/task").value)
        self.qos_reliability = str(p("qos_reliability", "auto").value).lower()
        self.best_effort_topics = set(p("best_effort_topics", [""]).value) - {""}
        self.qos_depth = int(p("qos_depth", 100).value)
        compression = str(p("compression", "none").value)
        self.chunk_size = int(float(p("chunk_size_mb", 0.75).value) * 2**20)
        self.flush_period_s = float(p("flush_period_s", 0.5).value)
        self.fsync = bool(p("fsync", False).value)
        min_free_mb = float(p("min_free_mb", 512.0).value)
        max_total_mb = float(p("max_total_mb", 0.0).value)
        self.calibration_id = str(p("calibration_id", "").value)
        self.default_task = str(p("task", "").value)
        discovery_period_s = float(p("discovery_period_s", 0.25).value)
        self.writer_mode = str(p("writer_mode", "chunked").value)   # chunked | stream | naive (baseline)
        self.stats_file = str(p("stats_file", "").value)            # JSON of counters written at shutdown
        if self.writer_mode not in ("chunked", "stream", "naive"):
            raise ValueError(f"parameter writer_mode={self.writer_mode!r}; expected chunked, stream or naive")
        if self.qos_reliability not in ("auto", "reliable", "best_effort"):
            raise ValueError(f"parameter qos_reliability={self.qos_reliability!r}; expected auto, reliable or best_effort")
        # checked here, not at the first START (where every attempt would fail)
        if compression.strip().lower() not in (*COMPRESSIONS, ""):
            raise ValueError(f"parameter compression={compression!r}; expected one of {', '.join(COMPRESSIONS)}")
        try:
            self.compression = check_compression(compression, self.writer_mode)
        except BagError as exc:
            raise ValueError(f"parameter compression={compression!r} needs writer_mode 'chunked' "
                             f"(writer_mode={self.writer_mode!r}); expected compression 'none' "
                             f"with writer_mode {self.writer_mode!r}") from exc

        # fails here, naming the path, when the folder cannot be written
        self.out = check_writable_dir(self.output_dir)
        errors: list[str] = []
        live: list[str] = []
        for info in recover_incomplete_bags(self.out, errors, live):
            self.get_logger().warning(
                f"recovered bag {info.path} left open by a crash: {info.message_count} messages kept")
        for e in errors:
            self.get_logger().error(f"cannot recover bag {e}; left as it is")
        for e in live:
            # another logger (or this one's predecessor, not yet exited) is writing it
            self.get_logger().warning(f"not recovering bag {e}")
        self.guard = DiskGuard(self.out, min_free_bytes=int(min_free_mb * 2**20),
                               max_total_bytes=int(max_total_mb * 2**20))

        self.topics = list(dict.fromkeys([t for t in topics if t] + [self.event_topic, self.progress_topic]))
        self.types: dict[str, str] = {}
        self.msgdefs: dict[str, str] = {}     # type -> ros2msg definition (resolved once)
        self.skipped: dict[str, str] = {}     # topic -> why it is not recorded
        self.bag_open_failures = 0
        self.qos_text: dict[str, str] = {}
        self.subs = {}
        self.received: dict[str, int] = {t: 0 for t in self.topics}
        self.recorded: dict[str, int] = {t: 0 for t in self.topics}
        self.bag: BagWriter | None = None
        self.stopped_reason = ""
        self.last_task = self.default_task
        self._reset_attempt_state()
        self.closed_bags: list[str] = []
        self.write_time_s = 0.0
        # received messages not yet handled: (reception ns, seq, topic, raw), see process_received
        self._inbox: list = []
        self._inbox_seq = itertools.count()
        self._last_rx_ns = 0
        self.callbacks = 0       # subscription callbacks run (spin_once_in_arrival_order drains on it)
        self._sim_time = bool(self.get_parameter("use_sim_time").value)
        self.dataset = None  # live LeRobot sink, see _setup_dataset
        self._setup_dataset()

        # /diagnostics: message rate, recording state; ERROR while the disk guard has stopped
        # recording (a standing condition, re-asserted every period); WARN while a topic is
        # skipped (no message definition); ERROR for a while after a bag could not be opened
        self.stats = NodeStats(rates=("input", "recorded"), expect_input_within_s=None)
        self._EpisodeEvent = import_msg_class("wvm_msgs/msg/EpisodeEvent")
        self._Progress = import_msg_class("wvm_msgs/msg/Progress")
        self._String = import_msg_class("std_msgs/msg/String")
        # our own topics have known types: subscribe now, do not wait for a publisher
        self._subscribe(self.event_topic, "wvm_msgs/msg/EpisodeEvent", force_reliable=True)
        self._subscribe(self.progress_topic, "wvm_msgs/msg/Progress")
        self._discover()
        self.create_timer(discovery_period_s, self._tick)
        from wvm_ros.ros.diagnostics import DiagnosticsPublisher

        self._diag = DiagnosticsPublisher(self, self.stats, name="wvm_logger: recording",
                                          period_s=float(p("diagnostics_period_s", 1.0).value))
        self.get_logger().info(f"recording {len(self.topics)} topics into {self.out} "
                               f"(qos {self.qos_reliability}, flush every {self.flush_period_s} s)")

    # ------------------------------------------------------------------ live dataset
    def _setup_dataset(self) -> None:
        p = self.declare_parameter
        enable = bool(p("dataset.enable", False).value)
        root = str(p("dataset.root", "").value)
        keep_failed = bool(p("dataset.keep_failed", True).value)
        fps = int(p("dataset.fps", 10).value)
        videos = str(p("dataset.use_videos", "auto",
                       ParameterDescriptor(dynamic_typing=True)).value).lower()  # auto | true | false
        ref = str(p("dataset.reference_topic", "/camera/image_raw").value)
        image_topics = [t for t in p("dataset.image_topics", [""]).value if t]
        state_topic = str(p("dataset.state_topic", "/robot/joint_states").value)
        action_topic = str(p("dataset.action_topic", "/robot/action").value)
        gt_topic = str(p("dataset.ground_truth_topic", "/sim/ground_truth_progress").value)
        max_age_s = float(p("dataset.max_age_s", 0.1).value)
        repo_id = str(p("dataset.repo_id", "local/wvm_live").value)
        use_videos = {"auto": "auto", "true": True, "false": False}.get(videos)
        if use_videos is None:
            raise ValueError(f"parameter dataset.use_videos={videos!r}; expected auto, true or false")
        if not enable:
            return
        from wvm_ros.core.bag2lerobot import AlignConfig, LiveDatasetRecorder, parse_image_keys
        if not root:
            root = str(self.out / time.strftime("lerobot_%Y%m%d_%H%M%S"))
        cfg = AlignConfig(reference_topic=ref, image_keys=parse_image_keys([ref, *image_topics]),
                          state_topic=state_topic, action_topic=action_topic,
                          progress_topic=self.progress_topic, event_topic=self.event_topic,
                          ground_truth_topic=gt_topic, max_age_s=max_age_s)
        check_writable_dir(root)
        # lerobot takes seconds to import: do it in the background so that recording starts
        # at once; the first END waits for it (Python's import lock) if it is not done yet
        import threading

        def _preload():
            try:
                import wvm_ros.core.dataset  # noqa: F401
                from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: F401
            except Exception as exc:  # reported again, with context, at the first episode
                self.get_logger().error(f"live dataset: cannot import lerobot: {exc}")

        threading.Thread(target=_preload, name="lerobot-import", daemon=True).start()

        self.dataset = LiveDatasetRecorder(root, cfg, fps=fps, keep_failed=keep_failed, use_videos=use_videos,
                                           repo_id=repo_id, default_task=self.default_task,
                                           log_fn=lambda m: self.get_logger().info(m),
                                           error_fn=lambda m: self.get_logger().error(m))
        for t in (*cfg.image_topics, state_topic, action_topic, gt_topic):
            if t not in self.topics:
                self.topics.append(t)
                self.received.setdefault(t, 0)
                self.recorded.setdefault(t, 0)
        self.get_logger().info(f"live LeRobot dataset -> {root} (failed attempts "
                               f"{'kept' if keep_failed else 'dropped'})")

    def _dataset_call(self, what: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:  # the bags are the record; a dataset problem must not stop them
            import traceback

            self.get_logger().error(f"live dataset {what} failed: {type(exc).__name__}: {exc}\n"
                                    f"{traceback.format_exc(limit=6)}")

    # ------------------------------------------------------------------ subscriptions
    def _choose_qos(self, topic: str, force_reliable: bool = False) -> QoSProfile:
        rel = ReliabilityPolicy.RELIABLE
        if topic in self.best_effort_topics or self.qos_reliability == "best_effort":
            rel = ReliabilityPolicy.BEST_EFFORT
        elif self.qos_reliability == "auto" and not force_reliable:
            pubs = self.get_publishers_info_by_topic(topic)
            if pubs and all(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in pubs):
                rel = ReliabilityPolicy.BEST_EFFORT
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.qos_depth, reliability=rel,
                          durability=DurabilityPolicy.VOLATILE)

    def _skip_topic(self, topic: str, typename: str, why: str) -> None:
        """Record every topic but this one: say so (log, /diagnostics, stats) once."""
        self.types[topic] = typename      # not discovered again
        if topic in self.skipped:
            return
        msg = f"not recording topic {topic}: {why}; every other topic is recorded"
        self.skipped[topic] = msg
        self.get_logger().error(msg)
        self.stats.error(msg)
        self.stats.count("topics skipped")
        self.stats.warn(f"{len(self.skipped)} topic(s) not recorded: "
                        + ", ".join(f"{t} ({self.types.get(t, '?')})" for t in self.skipped))

    def _definition(self, topic: str, typename: str) -> str | None:
        """The ros2msg definition of a topic's type, None (and the topic skipped) without one."""
        if typename in self.msgdefs:
            return self.msgdefs[typename]
        try:
            self.msgdefs[typename] = message_definition(typename)
        except BagError as exc:
            self._skip_topic(topic, typename, f"type {typename} unusable in a bag: {exc}")
            return None
        return self.msgdefs[typename]

    def _subscribe(self, topic: str, typename: str, force_reliable: bool = False) -> None:
        try:
            cls = import_msg_class(typename)
        except (ImportError, AttributeError, ValueError) as exc:
            self._skip_topic(topic, typename, f"its message type {typename} is not importable "
                                              f"(expected a built interface package on the Python path: {exc})")
            return
        # a bag needs the type's definition: a type without one (e.g. a service event type) is
        # not recorded (not even subscribed, unless the logger itself reads it), and cannot stop
        # the recording of the others
        if self._definition(topic, typename) is None and topic not in (self.event_topic, self.progress_topic):
            return
        qos = self._choose_qos(topic, force_reliable)
        self.types[topic] = typename
        self.qos_text[topic] = qos_yaml(qos)
        self.subs[topic] = self.create_subscription(
            cls, topic, lambda raw, info, t=topic: self._on_received(t, raw, info), qos, raw=True)
        if self.bag is not None:
            try:
                self._add_topic(topic)
            except DiskGuardError as exc:
                self._stop_recording(str(exc))
            except (OSError, BagError) as exc:
                self._stop_recording(f"cannot write to {self.bag.path if self.bag else self.out}: {exc}")

    def _discover(self) -> None:
        pending = [t for t in self.topics if t not in self.types]
        if not pending:
            return
        graph = dict(self.get_topic_names_and_types())
        for t in pending:
            if t in graph and graph[t]:
                self._subscribe(t, graph[t][0])

    def _tick(self) -> None:
        self._discover()
        self.stats.extra.update({
            "bag": self.bag.path.name if self.bag is not None else "(between attempts)",
            "bags closed": str(len(self.closed_bags)),
            "free MB": f"{self.guard.free_bytes() / 2**20:.0f}",
            "topics subscribed": f"{len(self.subs)}/{len(self.topics)}",
            "topics skipped": ", ".join(self.skipped) or "none",
            "bag open failures": str(self.bag_open_failures),
        })
        if self.dataset is not None:
            # frames the live dataset dropped / messages it ignored, per reason (this session)
            c = self.dataset.counts()
            self.stats.extra["dataset dropped frames"] = json.dumps(c["dropped_frames"], sort_keys=True) \
                if c["dropped_frames"] else "0"
            self.stats.extra["dataset ignored messages"] = json.dumps(c["ignored_messages"], sort_keys=True) \
                if c["ignored_messages"] else "0"

        if self.stopped_reason:
            self.stats.error(self.stopped_reason)
        if self.bag is not None:
            try:
                t0 = time.perf_counter()
                self.bag.maybe_flush()
                self.write_time_s += time.perf_counter() - t0
                self.guard.check(0)
            except DiskGuardError as exc:
                self._stop_recording(str(exc))
            except OSError as exc:
                self._stop_recording(f"write error in {self.bag.path if self.bag else self.out}: {exc}")

    # ------------------------------------------------------------------ messages
    def _on_received(self, topic: str, raw: bytes, info) -> None:
        """Subscription callback: queue the message under its DDS reception time; it is handled
        by process_received(), in reception order across all topics."""
        self.callbacks += 1
        rx = int(info.get("received_timestamp") or 0) if info else 0
        if rx <= 0 or self._sim_time:      # no reception time from this rmw, or a simulated clock
            rx = self.get_clock().now().nanoseconds
        heapq.heappush(self._inbox, (rx, next(self._inbox_seq), topic, raw))

    def process_received(self) -> int:
        """Handle every queued message, oldest reception first; returns how many. A message
        received before one already handled (it was still unread when the last batch was
        handled) keeps its order of handling and gets that one's log time: log times in a bag
        never go back."""
        n = 0
        while self._inbox:
            rx, _, topic, raw = heapq.heappop(self._inbox)
            self._last_rx_ns = max(self._last_rx_ns, rx)
            self._on_raw(topic, raw, self._last_rx_ns)
            n += 1
        return n

    def _on_raw(self, topic: str, raw: bytes, now_ns: int | None = None) -> None:
        """Handle one message now; `now_ns`, its log time (default: the node's clock)."""
        if now_ns is None:
            now_ns = self.get_clock().now().nanoseconds
        self.received[topic] = self.received.get(topic, 0) + 1
        self.stats.tick("input")
        if topic == self.event_topic:
            self._on_event(deserialize_message(raw, self._EpisodeEvent), raw, now_ns)
            return
        if topic == self.progress_topic:
            self._on_progress(deserialize_message(raw, self._Progress))
        elif topic == self.task_topic and self.types.get(topic) == "std_msgs/msg/String":
            self.last_task = deserialize_message(raw, self._String).data or self.last_task
        self._write(topic, raw, now_ns)
        if self.dataset is not None and self.bag is not None:
            self._dataset_call("message", self.dataset.on_message, topic, self.types.get(topic, ""), raw, now_ns)

    def _add_topic(self, topic: str) -> bool:
        """Add a topic to the open bag; False (the topic skipped, reported once) when its type
        has no message definition. Errors of the bag itself (OSError, BagError) propagate."""
        if topic in self.skipped:
            return False
        typename = self.types.get(topic)
        if typename is None:
            return False
        msgdef = self._definition(topic, typename)
        if msgdef is None:
            return False
        self.bag.add_topic(topic, typename, self.qos_text.get(topic, ""), msgdef=msgdef)
        return True

    def _write(self, topic: str, raw: bytes, now_ns: int) -> None:
        if self.bag is None or topic in self.skipped:
            return
        try:
            if topic not in self.bag.topics and not self._add_topic(topic):
                return
            t0 = time.perf_counter()
            self.bag.write(topic, raw, now_ns)
            self.write_time_s += time.perf_counter() - t0
            self.recorded[topic] = self.recorded.get(topic, 0) + 1
            self.stats.tick("recorded")
        except DiskGuardError as exc:
            self._stop_recording(str(exc))
        except (OSError, BagError) as exc:
            self._stop_recording(f"cannot write to {self.bag.path if self.bag else self.out}: {exc}")

    def _reset_attempt_state(self) -> None:
        self.final_progress = float("nan")
        self.model_name = ""
        self.checkpoint_id = ""
        self.untrained = ""
        self.events: list[str] = []

    def _on_progress(self, msg) -> None:
        if msg.model_name:
            self.model_name = msg.model_name
            self.checkpoint_id = msg.checkpoint_id
            self.untrained = str(bool(msg.untrained)).lower()
        if msg.valid and self.bag is not None:
            self.final_progress = float(msg.progress)

    def _on_event(self, ev, raw: bytes, now_ns: int) -> None:
        kind = EVENT_NAMES.get(int(ev.kind), str(ev.kind))
        if ev.task:
            self.last_task = ev.task
        if int(ev.kind) == 0:  # START
            if self.bag is not None:
                self.get_logger().warning(f"START of {ev.episode_id}/{ev.attempt} while {self.bag.path.name} "
                                          "is open (END missed): closing it as 'unterminated'")
                self._close_bag({"outcome": "unterminated"})
            self._open_bag(ev)
            self.events.append(f"{kind}@0.000")
            self._write(self.event_topic, raw, now_ns)
            return
        if self.bag is None:
            return
        t0 = self.bag.start_ns or now_ns
        self.events.append(f"{kind}@{(now_ns - t0) / 1e9:.3f}")
        self._write(self.event_topic, raw, now_ns)
        if int(ev.kind) == 8:  # END
            fp = float(ev.progress)
            if not math.isnan(fp):
                self.final_progress = fp
            self._close_bag({"outcome": ev.outcome or "unknown", "end_reason": ev.reason})

    # ------------------------------------------------------------------ bags
    def _open_bag(self, ev) -> None:
        if self.stopped_reason:
            self.get_logger().error(f"not recording {ev.episode_id}/{ev.attempt}: {self.stopped_reason}")
            return
        self._reset_attempt_state()
        name = bag_name(ev.episode_id or "episode", ev.attempt)
        path = unique_bag_dir(self.out, name)
        custom = {
            "task": ev.task or self.last_task,
            "episode_id": ev.episode_id,
            "attempt": int(ev.attempt),
            "calibration_id": self.calibration_id,
            "start_unix": f"{time.time():.3f}",
            "logger": "wvm_logger",
        }
        try:
            self.guard.check(0)
            for _ in range(10):
                try:
                    # BagWriter checks its arguments before creating anything and, when it
                    # fails, closes and removes what it created
                    self.bag = BagWriter(path, custom_data=custom, compression=self.compression,
                                         chunk_size=self.chunk_size, flush_period_s=self.flush_period_s,
                                         fsync=self.fsync, disk_guard=self.guard, mode=self.writer_mode)
                    break
                except BagExistsError:  # taken meanwhile (another logger on this folder): next name
                    path = unique_bag_dir(self.out, name)
            else:
                raise BagError(f"no free bag folder name for {name} under {self.out} after 10 tries")
        except DiskGuardError as exc:
            self._stop_recording(str(exc))
            return
        except (OSError, BagError) as exc:
            self.bag_open_failures += 1
            msg = f"cannot open bag {path} for {ev.episode_id}/{ev.attempt}: {exc}; attempt not recorded"
            self.get_logger().error(msg)
            self.stats.error(msg)
            return
        try:
            for t in self.topics:
                if t in self.subs:
                    self._add_topic(t)
        except (OSError, BagError) as exc:
            self._stop_recording(f"cannot write to {path}: {exc}")
            return
        if self.dataset is not None:
            self._dataset_call("start", self.dataset.on_start, ev)
        self.get_logger().info(f"recording attempt {ev.episode_id}/{ev.attempt} -> {path}")

    def _final_custom(self, extra: dict) -> dict:
        return {
            "final_progress": "" if math.isnan(self.final_progress) else f"{self.final_progress:.4f}",
            "model_name": self.model_name,
            "checkpoint_id": self.checkpoint_id,
            "untrained": self.untrained,
            "events": ",".join(self.events),
            **extra,
        }

    def _close_bag(self, extra: dict) -> None:
        bag, self.bag = self.bag, None
        if bag is None:
            return
        custom = self._final_custom(extra)
        try:
            info = bag.close(custom)
        except (OSError, BagError) as exc:
            self.get_logger().error(f"cannot finish bag {bag.path}: {exc} (it will be recovered at the next start)")
            return
        self.closed_bags.append(str(info.path))
        self.get_logger().info(f"closed {info.path.name}: {info.message_count} messages, outcome "
                               f"{custom.get('outcome')}, final progress {custom['final_progress'] or 'n/a'}")
        if self.dataset is not None:
            self._dataset_call("episode", self.dataset.on_end, {**custom, "bag": info.path.name})

    def _stop_recording(self, reason: str) -> None:
        if self.stopped_reason:
            return
        self.stopped_reason = reason
        self.get_logger().error(reason)
        if self.bag is not None:
            bag, self.bag = self.bag, None
            bag.guard = None  # the summary of the bag is small: finish it so it stays readable
            try:
                info = bag.close(self._final_custom({"outcome": "stopped", "stop_reason": reason}))
                self.closed_bags.append(str(info.path))
            except (OSError, BagError) as exc:
                self.get_logger().error(f"cannot finish bag {bag.path}: {exc}")
            if self.dataset is not None:
                self._dataset_call("abort", self.dataset.on_abort)

    def shutdown(self) -> None:
        self.process_received()    # what was received before the stop is recorded
        if self.bag is not None:
            self._close_bag({"outcome": "interrupted", "end_reason": "logger stopped"})
        if self.dataset is not None:
            self.get_logger().info(f"live dataset: finishing ({self.dataset.pending()} queued items)")
            self._dataset_call("finalize", self.dataset.close)
        if self.stats_file:
            self._write_stats()
        total_rx = sum(self.received.values())
        total_rec = sum(self.recorded.values())
        self.get_logger().info(f"stopped: {total_rec} messages recorded of {total_rx} received, "
                               f"{len(self.closed_bags)} bags closed")


    def _write_stats(self) -> None:
        import json
        import resource

        ru = resource.getrusage(resource.RUSAGE_SELF)
        stats = {"received": self.received, "recorded": self.recorded, "write_time_s": self.write_time_s,
                 "write_calls": sum(self.recorded.values()), "cpu_s": ru.ru_utime + ru.ru_stime,
                 "writer_mode": self.writer_mode, "bags": self.closed_bags, "stopped_reason": self.stopped_reason,
                 "skipped_topics": self.skipped, "bag_open_failures": self.bag_open_failures}
        try:
            with open(self.stats_file, "w") as f:
                json.dump(stats, f, indent=2)
        except OSError as exc:
            self.get_logger().error(f"cannot write stats_file {self.stats_file}: {exc}")


def spin_once_in_arrival_order(executor, node: DataLoggerNode, timeout_sec: float = 0.1,
                                max_batch: int = 5000) -> int:
    """Wait up to `timeout_sec` for work, take every message that is ready on any subscription
    (at most `max_batch`: a flood cannot hold the handling back forever), then handle them in
    DDS reception order. Returns how many messages were handled."""
    executor.spin_once(timeout_sec=timeout_sec)
    idle = 0
    for _ in range(max_batch):
        before = node.callbacks
        executor.spin_once(timeout_sec=0)
        if node.callbacks == before:
            idle += 1            # nothing taken (or a timer ran): twice in a row, all is drained
            if idle >= 2:
                break
        else:
            idle = 0
    return node.process_received()


def main(argv=None) -> int:
    """Spin until SIGINT / SIGTERM; a callback in progress (e.g. writing a dataset episode)
    always completes before the open bag is closed and the dataset finalised."""
    import signal
    import threading

    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    rclpy.init(args=argv if argv is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    code = 0
    try:
        node = DataLoggerNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            spin_once_in_arrival_order(executor, node, timeout_sec=0.1)
    except rclpy.executors.ExternalShutdownException:
        pass
    except (BagError, ValueError, rclpy.exceptions.ParameterException) as exc:
        print(f"[wvm_logger] fatal: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
