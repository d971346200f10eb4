"""wvm_logger robustness, in-process (the node's own callbacks are called as its
subscriptions would): a topic whose type has no message definition, a bad `compression`,
a bag that cannot be opened, and start-up next to a bag another process is still writing."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import node_cmd, requires_ros, stop_child

pytestmark = [requires_ros, pytest.mark.timeout(120)]

SVC_TOPIC = "/robot/reset/_service_event"
SVC_TYPE = "std_srvs/srv/Trigger_Event"


@pytest.fixture
def logger(ros_env):
    """make(out, *params) -> a DataLoggerNode in this process (rclpy's default context, on the
    test's own DDS domain); every node is destroyed and rclpy shut down afterwards."""
    import rclpy

    nodes = []

    def make(out: Path, *params: str):
        from wvm_ros.nodes.data_logger_node import DataLoggerNode

        if rclpy.ok():
            rclpy.shutdown()
        args = ["wvm_logger_test", "--ros-args", "-p", f"output_dir:={out}", "-p", "min_free_mb:=1.0"]
        for p in params:
            args += ["-p", p]
        rclpy.init(args=args)
        node = DataLoggerNode()
        nodes.append(node)
        return node

    def helper():
        node = rclpy.create_node("robustness_helper")
        nodes.append(node)
        return node

    make.helper = helper
    yield make
    for n in reversed(nodes):
        try:
            if hasattr(n, "shutdown"):
                n.shutdown()
            n.destroy_node()
        except Exception:
            pass
    if rclpy.ok():
        rclpy.shutdown()


def event(kind: int, ep: str, attempt: int = 1, outcome: str = "") -> bytes:
    from rclpy.serialization import serialize_message
    from wvm_msgs.msg import EpisodeEvent

    m = EpisodeEvent()
    m.kind, m.episode_id, m.attempt, m.outcome, m.task = kind, ep, attempt, outcome, "push the T"
    m.progress = float("nan")
    return serialize_message(m)


def chatter(text: str) -> bytes:
    from rclpy.serialization import serialize_message
    from std_msgs.msg import String

    return serialize_message(String(data=text))


def discover(node, topic: str, timeout: float = 10.0) -> None:
    """Run the node's graph discovery until it has seen `topic` (as its timer does)."""
    deadline = time.monotonic() + timeout
    while topic not in node.types:
        assert time.monotonic() < deadline, f"the logger did not discover {topic}"
        node._discover()
        time.sleep(0.05)


def attempt(node, ep: str, n: int, attempt_no: int = 1, extra=()) -> None:
    node._on_raw(node.event_topic, event(0, ep, attempt_no))
    assert node.bag is not None, f"no bag open for {ep}/{attempt_no}"
    for i in range(n):
        node._on_raw("/chatter", chatter(f"{ep}-{i}"))
        for t in extra:
            node._on_raw(t, b"\x00\x01\x00\x00")   # any payload: it is never decoded
    node._on_raw(node.event_topic, event(8, ep, attempt_no, "success"))
    assert node.bag is None


def test_topic_without_definition_is_skipped_and_the_others_recorded(logger, tmp_path):
    """A service introspection topic (importable type, no .msg) listed in `topics`, discovered
    before START: the logger neither crashes nor stops; every other topic is recorded."""
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from wvm_ros.core.bag import bag_custom_data, count_messages_mcap, count_messages_rosbags
    from wvm_ros.core.diagnostics import ERROR, WARN

    out = tmp_path / "bags"
    stats = tmp_path / "stats.json"
    node = logger(out, f"topics:=['/chatter', '{SVC_TOPIC}']", f"stats_file:={stats}")
    helper = logger.helper()
    helper.create_publisher(String, "/chatter", 10)
    helper.create_publisher(Trigger.Event, SVC_TOPIC, 10)
    discover(node, "/chatter")
    discover(node, SVC_TOPIC)
    assert node.types[SVC_TOPIC] == SVC_TYPE
    assert "/chatter" in node.subs and SVC_TOPIC not in node.subs
    why = node.skipped[SVC_TOPIC]
    assert SVC_TOPIC in why and SVC_TYPE in why and "expected a message type" in why, why

    attempt(node, "ep1", 3, extra=[SVC_TOPIC])   # a message of it arriving anyway is ignored
    attempt(node, "ep1", 2, attempt_no=2)
    assert node.stopped_reason == ""
    for name, n in (("ep1_att001", 3), ("ep1_att002", 2)):
        d = out / name
        assert count_messages_mcap(d) == count_messages_rosbags(d) == {"/chatter": n, "/wvm/episode_event": 2}
        assert bag_custom_data(d)["outcome"] == "success"

    node._tick()
    rep = node.stats.report()
    assert rep.level in (WARN, ERROR) and SVC_TOPIC in rep.message
    assert rep.values["topics skipped"] == SVC_TOPIC
    assert node.stats.counters["topics skipped"] == 1
    node.stats.error_hold_s = 0.0           # once the error has aged, a standing warning remains
    rep = node.stats.report()
    assert rep.level == WARN and SVC_TOPIC in rep.message and SVC_TYPE in rep.message
    node.shutdown()
    saved = json.loads(stats.read_text())
    assert SVC_TOPIC in saved["skipped_topics"] and saved["recorded"]["/chatter"] == 5


def test_topic_without_definition_during_a_bag_does_not_stop_recording(logger, tmp_path):
    """Discovered while a bag is open (the timer's path), and a first message of such a type
    arriving during a bag (the write path): only that topic is skipped, later STARTs record."""
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from wvm_ros.core.bag import count_messages_mcap

    out = tmp_path / "bags"
    other = "/other/_service_event"
    node = logger(out, f"topics:=['/chatter', '{SVC_TOPIC}', '{other}']")
    helper = logger.helper()
    helper.create_publisher(String, "/chatter", 10)
    discover(node, "/chatter")
    node._on_raw(node.event_topic, event(0, "ep2"))
    node._on_raw("/chatter", chatter("a"))
    helper.create_publisher(Trigger.Event, SVC_TOPIC, 10)
    discover(node, SVC_TOPIC)                     # subscribed while the bag is open
    assert SVC_TOPIC in node.skipped and node.bag is not None
    # a type that reached the write path without the subscription's check
    node.types[other] = SVC_TYPE
    node._on_raw(other, b"\x00\x01\x00\x00")
    assert other in node.skipped and other in node.skipped[other] and SVC_TYPE in node.skipped[other]
    assert node.stopped_reason == "" and node.bag is not None
    node._on_raw("/chatter", chatter("b"))
    node._on_raw(node.event_topic, event(8, "ep2", 1, "success"))
    assert count_messages_mcap(out / "ep2_att001") == {"/chatter": 2, "/wvm/episode_event": 2}
    attempt(node, "ep3", 4)                       # the next START records normally
    assert count_messages_mcap(out / "ep3_att001") == {"/chatter": 4, "/wvm/episode_event": 2}
    assert node.stats.counters["topics skipped"] == 2


def test_bad_compression_fails_at_start_naming_it(logger, tmp_path):
    out = tmp_path / "bags"
    with pytest.raises(ValueError, match=r"parameter compression='gzip'; expected one of none, zstd, lz4"):
        logger(out, "compression:=gzip")
    with pytest.raises(ValueError, match=r"parameter compression='zstd' needs writer_mode 'chunked'"):
        logger(out, "compression:=zstd", "writer_mode:=stream")
    assert not out.exists()                       # failed before creating anything
    node = logger(out, "compression:=ZSTD")
    assert node.compression == "zstd"


def test_bad_compression_process_exits_with_the_reason(ros_env, procs, tmp_path):
    out = tmp_path / "bags"
    child = procs.start("logger", node_cmd("wvm_ros.nodes.data_logger_node", "-p", f"output_dir:={out}",
                                           "-p", "compression:=gzip"), env=ros_env)
    assert child.popen.wait(timeout=45) == 1
    log = child.log_path.read_text(errors="replace")
    assert "fatal: parameter compression='gzip'; expected one of none, zstd, lz4" in log, log
    assert not out.exists()


def test_bag_open_failure_cleans_up_and_is_an_error(logger, tmp_path, monkeypatch):
    import errno

    from wvm_ros.core import bag as B
    from wvm_ros.core.diagnostics import ERROR

    out = tmp_path / "bags"
    node = logger(out, "topics:=['/chatter']")
    real = B.BagWriter._write_marker
    calls = {"n": 0}

    def failing_marker(self):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self)

    monkeypatch.setattr(B.BagWriter, "_write_marker", failing_marker)
    node._on_raw(node.event_topic, event(0, "epf"))
    assert node.bag is None and node.stopped_reason == ""
    assert list(out.iterdir()) == []              # no folder, no .mcap left behind
    rep = node.stats.report()
    assert rep.level == ERROR and "epf_att001" in rep.message and "No space left" in rep.message
    assert node.stats.counters["errors"] == 1 and node.bag_open_failures == 1
    node._tick()
    assert node.stats.report().values["bag open failures"] == "1"
    attempt(node, "epf", 0, attempt_no=2)         # the next START records
    assert [p.name for p in out.iterdir()] == ["epf_att002"]
    assert B.recover_incomplete_bags(out) == []   # nothing for the next start to "recover"


_CHILD_WRITER = r"""
import sys
from wvm_ros.core import bag as B
w = B.BagWriter(sys.argv[1], custom_data={"episode_id": "live"}, flush_period_s=0.0)
w.add_topic("/chatter", "std_msgs/msg/String")
raw = bytes.fromhex(sys.argv[2])
for i in range(10):
    w.write("/chatter", raw, 1_000_000_000 + i)
w.flush()
print("ready", flush=True)
sys.stdin.readline()
for i in range(10, 25):
    w.write("/chatter", raw, 1_000_000_000 + i)
w.close({"outcome": "success"})
print("closed", flush=True)
"""


def test_start_leaves_a_bag_another_process_is_writing_alone(logger, tmp_path, capfd):
    """A logger started next to a running one (respawn before the old one exited, or two
    loggers on one folder) must not recover the bag the other is writing."""
    from wvm_ros.core import bag as B

    out = tmp_path / "bags"
    out.mkdir()
    bag = out / "live_att001"
    child = subprocess.Popen([sys.executable, "-c", _CHILD_WRITER, str(bag), chatter("x").hex()],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        logger(out, "topics:=['/chatter']")
        assert (bag / B.MARKER_NAME).exists() and not (bag / B.METADATA_NAME).exists()
        err = capfd.readouterr().err
        assert f"not recovering bag {bag}: still being written" in err and f"pid {child.pid}" in err, err
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "closed"
        assert B.count_messages_mcap(bag) == B.count_messages_rosbags(bag) == {"/chatter": 25}
        assert B.bag_custom_data(bag)["outcome"] == "success"
    finally:
        stop_child(child)


def test_live_dataset_drop_counts_reach_the_diagnostics(logger, tmp_path):
    """The live dataset's dropped frames / ignored messages (per reason, this session) are shown
    in the logger's diagnostics at every tick."""
    node = logger(tmp_path / "bags", "dataset.enable:=true", f"dataset.root:={tmp_path / 'ds'}")
    assert node.dataset is not None
    node._tick()
    assert node.stats.extra["dataset dropped frames"] == "0"
    assert node.stats.extra["dataset ignored messages"] == "0"
    node.dataset.dropped_frames["non-finite /robot/joint_states (NaN/inf)"] = 2   # as an ended attempt leaves it
    node._tick()
    values = dict(node.stats.report().values)
    assert json.loads(values["dataset dropped frames"]) == {"non-finite /robot/joint_states (NaN/inf)": 2}


def test_backlog_is_recorded_in_arrival_order(logger, tmp_path):
    """A logger that falls behind (here: not spun while two whole attempts arrive) must still
    put every message into the attempt it was received in. rclpy's executor serves waiting
    subscriptions in turn, one message each, so handled in callback order the END and the next
    START overtake the queued messages of the attempt (measured before the fix: 1 of 10 kept per
    bag, the rest lost between the bags). Handled in DDS reception order, each bag has exactly
    its own messages, in publication order, with log times that are reception times."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message
    from std_msgs.msg import String
    from wvm_msgs.msg import EpisodeEvent

    from wvm_ros.core.bag import count_messages_mcap, count_messages_rosbags, deserialize, iter_bag
    from wvm_ros.nodes.data_logger_node import spin_once_in_arrival_order

    out = tmp_path / "bags"
    node = logger(out, "topics:=['/chatter']")
    helper = logger.helper()
    chat = helper.create_publisher(String, "/chatter", 100)
    events = helper.create_publisher(EpisodeEvent, node.event_topic,
                                     QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    discover(node, "/chatter")
    deadline = time.monotonic() + 10
    while chat.get_subscription_count() < 1 or events.get_subscription_count() < 1:
        assert time.monotonic() < deadline, "the logger's subscriptions were not matched"
        time.sleep(0.05)
    time.sleep(0.3)
    t_first = time.time_ns()
    for n, prefix in ((1, "a"), (2, "b")):
        events.publish(deserialize_message(event(0, "ebl", n), EpisodeEvent))
        for i in range(10):
            chat.publish(String(data=f"{prefix}{i}"))
            time.sleep(0.002)
        events.publish(deserialize_message(event(8, "ebl", n, "success"), EpisodeEvent))
    t_last = time.time_ns()
    time.sleep(0.5)                                   # all of it waits in the subscriptions' queues
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        assert spin_once_in_arrival_order(executor, node, timeout_sec=0.0) == 24
    finally:
        executor.remove_node(node)
    for n, prefix in ((1, "a"), (2, "b")):
        d = out / f"ebl_att00{n}"
        assert count_messages_mcap(d) == count_messages_rosbags(d) == {"/chatter": 10, "/wvm/episode_event": 2}
        rows = list(iter_bag(d))
        texts = [deserialize(raw, "std_msgs/msg/String").data for topic, _, _, raw in rows if topic == "/chatter"]
        assert texts == [f"{prefix}{i}" for i in range(10)]
        stamps = [t for _, _, t, _ in rows]
        assert stamps == sorted(stamps)
        # reception times (the system clock at arrival), not the time the backlog was handled
        assert t_first - 50_000_000 <= stamps[0] and stamps[-1] <= t_last + 50_000_000, (t_first, stamps, t_last)
