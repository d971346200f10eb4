"""wvm_ros.core.bag without ROS: write, read back with rosbags and mcap, recover, disk guard."""
from __future__ import annotations

import os

import numpy as np
import pytest

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
