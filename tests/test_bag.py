"""wvm_ros.core.bag without ROS: write, read back with rosbags and mcap, recover, disk guard."""
from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import stop_child
from wvm_ros.core import bag as B


def image_cdr(value: int, h=8, w=8) -> bytes:
    Img, H, T = (B.msg_class(t) for t in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                            "builtin_interfaces/msg/Time"))
    m = Img(header=H(stamp=T(sec=value, nanosec=0), frame_id="cam"), height=h, width=w,
            encoding="rgb8", is_bigendian=0, step=w * 3, data=np.full(h * w * 3, value % 256, np.uint8))
    return B.serialize(m, "sensor_msgs/msg/Image")


def progress_cdr(v: float) -> bytes:
    P, H, T = (B.msg_class(t) for t in ("wvm_msgs/msg/Progress", "std_msgs/msg/Header",
                                          "builtin_interfaces/msg/Time"))
    m = P(header=H(stamp=T(sec=0, nanosec=0), frame_id=""), progress=v, chunk=np.array([v] * 4, np.float32),
          success=float("nan"), valid=True, status="", task="t", episode_id="e", attempt=1, model_name="tiny",
          checkpoint_id="abc", untrained=False, inference_latency=0.01)
    return B.serialize(m, "wvm_msgs/msg/Progress")


def write_bag(path, n=10, **kw):
    w = B.BagWriter(path, custom_data={"task": "push"}, **kw)
    w.add_topic("/camera/image_raw", "sensor_msgs/msg/Image")
    w.add_topic("/wvm/progress", "wvm_msgs/msg/Progress")
    for i in range(n):
        w.write("/camera/image_raw", image_cdr(i), 1_000_000_000 + i * 33_000_000)
        w.write("/wvm/progress", progress_cdr(i / n), 1_000_000_000 + i * 33_000_000 + 1)
    return w


def test_definitions_standard_and_wvm_msgs():
    d = B.message_definition("sensor_msgs/Image")
    assert "MSG: std_msgs/Header" in d
    d = B.message_definition("wvm_msgs/msg/Progress")
    assert "float32[] chunk" in d and "MSG: std_msgs/Header" in d
    with pytest.raises(B.BagError, match="no message definition for nope_msgs/msg/X"):
        B.message_definition("nope_msgs/msg/X")
    with pytest.raises(B.BagError, match="package/msg/Type"):
        B.normalize_typename("Image")


@pytest.mark.parametrize("mode,compression", [("chunked", "none"), ("chunked", "zstd"), ("stream", "none"),
                                              ("naive", "none")])
def test_write_read_back_rosbags_and_mcap(tmp_path, mode, compression):
    w = write_bag(tmp_path / "ep_att001", compression=compression, mode=mode)
    info = w.close({"outcome": "success", "final_progress": 0.9})
    assert info.message_count == 20
    a = B.count_messages_rosbags(info.path)
    b = B.count_messages_mcap(info.path)
    assert a == b == {"/camera/image_raw": 10, "/wvm/progress": 10}
    cd = B.bag_custom_data(info.path)
    assert cd == {"task": "push", "outcome": "success", "final_progress": "0.9"}
    assert not (info.path / B.MARKER_NAME).exists()
    # content round-trips
    msgs = [(t, ty, ts, raw) for t, ty, ts, raw in B.iter_bag(info.path, ["/wvm/progress"])]
    assert [round(float(B.deserialize(r, ty).progress), 3) for _, ty, _, r in msgs] == \
        [round(i / 10, 3) for i in range(10)]
    md = B.bag_metadata(info.path)
    assert md["storage_identifier"] == "mcap" and md["message_count"] == 20


def test_bad_inputs(tmp_path):
    w = write_bag(tmp_path / "b", n=1)
    with pytest.raises(B.BagError, match="not added"):
        w.write("/other", b"x", 1)
    w.close()
    with pytest.raises(B.BagError, match="closed"):
        w.write("/wvm/progress", progress_cdr(0.1), 2)
    with pytest.raises(B.BagError, match="already exists"):
        B.BagWriter(tmp_path / "b")
    with pytest.raises(B.BagError, match="compression 'gzip'"):
        B.BagWriter(tmp_path / "c", compression="gzip")
    with pytest.raises(B.BagError, match="writer mode 'fast'"):
        B.BagWriter(tmp_path / "d", mode="fast")
    with pytest.raises(B.BagError, match="needs writer mode 'chunked'"):
        B.BagWriter(tmp_path / "e", mode="stream", compression="zstd")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(B.BagError, match=f"{f}/sub.*not writable"):
        B.check_writable_dir(f / "sub")
    with pytest.raises(B.BagError, match="does not exist"):
        B.list_bags([tmp_path / "missing"])


def test_flush_period_bounds_loss_and_recovery(tmp_path):
    """Simulate kill -9: the process never closes the writer; what was flushed survives."""
    w = write_bag(tmp_path / "open", n=10, flush_period_s=0.0)   # flush after every write
    w.set_custom_data(episode_id="e1", attempt=3)
    w.flush()
    # a partly written chunk at the end (what a kill in the middle of a write leaves)
    size = os.path.getsize(w.path / w.mcap_name)
    w._file.write(b"\x06" + b"\x00" * 7)
    w._file.flush()
    assert B.is_incomplete(w.path)
    # before recovery rosbags cannot open it (no metadata.yaml)
    from rosbags.rosbag2 import Reader
    with pytest.raises(Exception):
        Reader(w.path).open()
    # the writer still holds its file (and lock) here, as a live writer does: left alone
    assert B.recover_incomplete_bags(tmp_path) == []
    w._file.close()   # what the kernel does to a killed process's files (its lock goes with it)
    infos = B.recover_incomplete_bags(tmp_path)
    assert [i.path.name for i in infos] == ["open"]
    assert infos[0].counts == {"/camera/image_raw": 10, "/wvm/progress": 10}
    assert B.count_messages_rosbags(w.path) == B.count_messages_mcap(w.path) == infos[0].counts
    cd = B.bag_custom_data(w.path)
    assert cd["outcome"] == "interrupted" and cd["episode_id"] == "e1" and cd["attempt"] == "3"
    assert not B.is_incomplete(w.path)
    assert size > 0


@pytest.mark.parametrize("mode", ["chunked", "stream"])
def test_truncated_tail_loses_only_last_chunk(tmp_path, mode):
    w = write_bag(tmp_path / "t", n=10, flush_period_s=0.0, mode=mode)
    w.flush()
    path = w.path / w.mcap_name
    size = os.path.getsize(path)
    with open(path, "r+b") as f:     # cut into the last chunk
        f.truncate(size - 40)
    info = B.recover_bag(w.path)
    total = sum(info.counts.values())
    assert 17 <= total < 20
    assert B.count_messages_rosbags(w.path) == B.count_messages_mcap(w.path)


def test_unflushed_messages_are_the_only_loss(tmp_path):
    w = write_bag(tmp_path / "u", n=5, flush_period_s=3600)   # never flushed by time
    w.flush()
    w.write("/wvm/progress", progress_cdr(0.99), 2_000_000_000)  # still in the open chunk
    info = B.recover_bag(w.path)
    assert info.counts == {"/camera/image_raw": 5, "/wvm/progress": 5}


def test_disk_guard_size_cap_and_free_space(tmp_path):
    g = B.DiskGuard(tmp_path, min_free_bytes=0, max_total_bytes=50_000)
    w = B.BagWriter(tmp_path / "capped", disk_guard=g)
    w.add_topic("/camera/image_raw", "sensor_msgs/msg/Image")
    n = 0
    with pytest.raises(B.DiskGuardError, match="size cap reached"):
        for i in range(100):
            w.write("/camera/image_raw", image_cdr(i, 32, 32), i)
            n += 1
    assert 0 < n < 100
    w.guard = None
    w.close({"outcome": "stopped"})
    assert B.count_messages_rosbags(w.path)["/camera/image_raw"] == n
    free = __import__("shutil").disk_usage(tmp_path).free
    g2 = B.DiskGuard(tmp_path, min_free_bytes=free + 2**30)
    with pytest.raises(B.DiskGuardError, match="disk almost full"):
        g2.check(1)


# ----------------------------------------------------------------------------- robustness

def _open_fds_under(path) -> list[str]:
    """Paths under `path` this process still has open (Linux /proc)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path)):
            out.append(target)
    return out


def test_invalid_compression_creates_nothing(tmp_path):
    with pytest.raises(B.BagError, match=r"compression 'gzip' not supported; expected one of none, zstd, lz4"):
        B.BagWriter(tmp_path / "c", compression="gzip")
    with pytest.raises(B.BagError, match="needs writer mode 'chunked'"):
        B.BagWriter(tmp_path / "s", mode="stream", compression="zstd")
    with pytest.raises(B.BagError, match="writer mode 'fast'"):
        B.BagWriter(tmp_path / "m", mode="fast")
    assert list(tmp_path.iterdir()) == []          # no folder, no .mcap, no handle
    assert _open_fds_under(tmp_path) == []
    assert B.recover_incomplete_bags(tmp_path) == []
    assert B.check_compression("ZSTD") == "zstd" and B.check_compression("") == "none"


def test_failed_open_closes_and_removes_what_it_created(tmp_path, monkeypatch):
    import errno

    def no_space(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(B.BagWriter, "_write_marker", no_space)
    with pytest.raises(B.BagError, match=f"cannot create bag '{tmp_path / 'new'}': No space left"):
        B.BagWriter(tmp_path / "new")
    assert not (tmp_path / "new").exists()         # the folder it created is gone
    (tmp_path / "empty").mkdir()                   # a folder it did not create stays
    with pytest.raises(B.BagError, match="No space left"):
        B.BagWriter(tmp_path / "empty")
    assert (tmp_path / "empty").is_dir() and list((tmp_path / "empty").iterdir()) == []
    assert _open_fds_under(tmp_path) == []
    monkeypatch.undo()
    # nothing is left for the next start to "recover" as a 0-message bag
    assert B.recover_incomplete_bags(tmp_path) == []
    # a folder with content is never touched
    write_bag(tmp_path / "full", n=1).close()
    before = sorted(p.name for p in (tmp_path / "full").iterdir())
    with pytest.raises(B.BagExistsError, match="already exists and is not empty"):
        B.BagWriter(tmp_path / "full")
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == before


def test_recovery_leaves_a_bag_open_in_this_process_alone(tmp_path):
    w = write_bag(tmp_path / "live", n=5, flush_period_s=0.0)
    w.flush()
    live, errors = [], []
    assert B.recover_incomplete_bags(tmp_path, errors, live) == []
    assert errors == [] and len(live) == 1
    assert str(w.path) in live[0] and "locked by a running writer" in live[0] and f"pid {os.getpid()}" in live[0]
    assert B.live_writer(w.path)
    assert (w.path / B.MARKER_NAME).exists() and not (w.path / B.METADATA_NAME).exists()
    for i in range(5, 15):                          # the writer goes on, nothing is lost
        w.write("/wvm/progress", progress_cdr(i / 15), 2_000_000_000 + i)
    info = w.close({"outcome": "success"})
    assert B.count_messages_mcap(w.path) == B.count_messages_rosbags(w.path) == \
        {"/camera/image_raw": 5, "/wvm/progress": 15} == info.counts
    assert B.bag_custom_data(w.path)["outcome"] == "success"
    assert B.live_writer(w.path) is None and not B.is_incomplete(w.path)


_CHILD_WRITER = r"""
import sys
from wvm_ros.core import bag as B
raw = bytes.fromhex(sys.argv[2])
w = B.BagWriter(sys.argv[1], custom_data={"episode_id": "other"}, flush_period_s=0.0)
w.add_topic("/chatter", "std_msgs/msg/String")
for i in range(10):
    w.write("/chatter", raw, 1_000_000_000 + i)
w.flush()
print("ready", flush=True)
sys.stdin.readline()                    # the test recovers the folder now
for i in range(10, 30):
    w.write("/chatter", raw, 1_000_000_000 + i)
w.flush()
print("wrote", flush=True)
if sys.stdin.readline().strip() == "close":
    w.close({"outcome": "success"})
    print("closed", flush=True)
    sys.stdin.readline()
"""


def _string_cdr(text: str) -> bytes:
    return B.serialize(B.msg_class("std_msgs/msg/String")(data=text), "std_msgs/msg/String")


@pytest.mark.parametrize("ending", ["close", "kill"])
def test_recovery_leaves_a_bag_of_another_live_process_alone(tmp_path, ending):
    """A second process (another logger, or a respawned one whose predecessor still runs)
    holds a bag open: startup recovery must not take it; once the writer is gone, it must."""
    import signal
    import subprocess
    import sys

    bag = tmp_path / "other_att001"
    child = subprocess.Popen([sys.executable, "-c", _CHILD_WRITER, str(bag), _string_cdr("x").hex()],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        live, errors = [], []
        assert B.recover_incomplete_bags(tmp_path, errors, live) == []
        assert errors == [] and len(live) == 1 and f"pid {child.pid}" in live[0], live
        assert (bag / B.MARKER_NAME).exists()
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "wrote"
        if ending == "close":
            child.stdin.write("close\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "closed"
            assert B.recover_incomplete_bags(tmp_path) == []
            assert B.bag_custom_data(bag)["outcome"] == "success"
        else:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
            infos = B.recover_incomplete_bags(tmp_path)   # the writer is gone: recovered now
            assert [i.path for i in infos] == [bag]
            assert B.bag_custom_data(bag)["outcome"] == "interrupted"
        # every message the writer wrote (and flushed) is in the file on disk
        assert B.count_messages_mcap(bag) == B.count_messages_rosbags(bag) == {"/chatter": 30}
    finally:
        stop_child(child)


@pytest.mark.parametrize("case,left_alone", [
    ("pid_alive", True),              # no lock (older writer / no flock here): a running pid decides
    ("pid_alive_same_start", True),
    ("pid_reused", False),            # same pid, another process (started at another time)
    ("pid_dead", False),
    ("other_host", False),            # a pid of another host cannot be checked here
    ("self_no_start", False),         # our own pid from an earlier life (e.g. a container restart)
    ("self_same_start", True),        # an open writer of this very process
])
def test_recovery_without_lock_checks_the_markers_pid(tmp_path, case, left_alone):
    import fcntl
    import subprocess
    import sys

    import psutil
    import yaml

    w = write_bag(tmp_path / "b", n=3, flush_period_s=0.0)
    w.flush()
    fcntl.flock(w._file.fileno(), fcntl.LOCK_UN)   # as if locks were not available
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        if case == "pid_dead":
            sleeper.kill()
            sleeper.wait(timeout=10)
        pid = os.getpid() if case.startswith("self") else sleeper.pid
        start = psutil.Process(pid).create_time() if case in ("pid_alive_same_start", "self_same_start") else None
        marker = yaml.safe_load((w.path / B.MARKER_NAME).read_text())
        marker.update(lock=False, pid=pid, host=("elsewhere" if case == "other_host" else marker["host"]),
                      pid_start_unix=(start if case != "pid_reused" else psutil.Process(pid).create_time() - 100))
        if start is None and case != "pid_reused":
            del marker["pid_start_unix"]
        (w.path / B.MARKER_NAME).write_text(yaml.safe_dump(marker))
        live = []
        infos = B.recover_incomplete_bags(tmp_path, [], live)
        if left_alone:
            assert infos == [] and len(live) == 1 and "still running" in live[0] and f"pid {pid}" in live[0]
            assert (w.path / B.MARKER_NAME).exists()
        else:
            assert live == [] and [i.path.name for i in infos] == ["b"]
            assert infos[0].counts == {"/camera/image_raw": 3, "/wvm/progress": 3}
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)
        w._file.close()


def test_message_definition_of_a_service_type_says_what_is_expected():
    with pytest.raises(B.BagError, match=r"no message definition for std_srvs/srv/Trigger_Event: it is a "
                                         r"'srv' interface type.*expected a message type 'package/msg/Type'"):
        B.message_definition("std_srvs/srv/Trigger_Event")
