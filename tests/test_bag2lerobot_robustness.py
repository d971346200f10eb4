"""Bags / live messages -> LeRobot dataset when the data is bad: one bad message costs the
frame it touches (counted, the same in `convert_bags` and `LiveDatasetRecorder`), never the
attempt or the conversion; an error that does stop a conversion names bag, topic and log time;
alignment does not assume that stamps arrive in order."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_bag2lerobot import NS, _hdr, _replay, action, joints, make_bag

from wvm_ros.core import bag as B
from wvm_ros.core.bag2lerobot import (AlignConfig, ConversionError, FrameAligner, LiveDatasetRecorder,
                                      _Latest, convert_bags)
from wvm_ros.core.dataset import read_episode_metadata

IMG = np.zeros((2, 2, 3), np.uint8)
COLS = ("observation.state", "action", "progress", "value_chunk", "value_valid", "success_probability",
        "ground_truth_progress", "next.done", "next.success", "episode_index", "frame_index")


def rewrite(src: Path, dst: Path, edit) -> Path:
    """Copy a bag, message by message, through edit(topic, t, raw) -> [(topic, raw, t), ...]."""
    w = B.BagWriter(dst, custom_data=B.bag_custom_data(src))
    types = {}
    for topic, typ, t, raw in B.iter_bag(src):
        types[topic] = typ
        if topic not in w.topics:
            w.add_topic(topic, typ)
        for tp, r, tt in edit(topic, t, raw):
            w.write(tp, r, tt)
    w.close(B.bag_custom_data(src))
    return dst


def empty_image(stamp_ns):
    Img = B.msg_class("sensor_msgs/msg/Image")
    return B.serialize(Img(header=_hdr(stamp_ns), height=0, width=0, encoding="rgb8", is_bigendian=0, step=0,
                           data=np.zeros(0, np.uint8)), "sensor_msgs/msg/Image")


def progress_msg(stamp_ns, v, chunk):
    P = B.msg_class("wvm_msgs/msg/Progress")
    return B.serialize(P(header=_hdr(stamp_ns), progress=v, chunk=np.asarray(chunk, np.float32), success=0.5,
                         valid=True, status="", task="push", episode_id="e", attempt=1, model_name="tiny",
                         checkpoint_id="abc", untrained=False, inference_latency=0.01), "wvm_msgs/msg/Progress")


def frame_t(i, t0=10 * NS):
    """Header stamp of make_bag's image i (the log times are around it)."""
    return t0 + i * NS // 10


def load(root: Path):
    import pandas as pd

    return pd.concat([pd.read_parquet(p) for p in sorted((root / "data").rglob("*.parquet"))], ignore_index=True)


def assert_same_frames(a: Path, b: Path) -> None:
    da, db = load(a), load(b)
    assert len(da) == len(db)
    for col in COLS:
        np.testing.assert_array_equal(np.stack(da[col].map(np.asarray).to_numpy()).astype(float),
                                      np.stack(db[col].map(np.asarray).to_numpy()).astype(float), err_msg=col)


def live(tmp_path: Path, bags, name="live"):
    errors, logs = [], []
    rec = LiveDatasetRecorder(tmp_path / name, AlignConfig(), fps=10, use_videos=False, repo_id="local/wvm_bags",
                              log_fn=logs.append, error_fn=errors.append, threaded=False)
    for b in bags:
        _replay(rec, b)
    counts = rec.counts()
    rec.close()
    return rec, counts, errors, logs


# ----------------------------------------------------------------------------- bad images, bad messages

def test_bad_image_is_a_dropped_frame_not_a_failed_conversion(tmp_path):
    """An empty (0x0) image in one of two bags: that frame is dropped and counted with its
    reason, the other 12 frames of that bag and the other bag are written; an undecodable
    state message is ignored and counted; the live recorder does exactly the same."""
    good = make_bag(tmp_path / "src", "good_att001", n=12)
    src = make_bag(tmp_path / "src", "bad_att001", n=12, t0=20 * NS)
    t5 = frame_t(5, 20 * NS)

    def edit(topic, t, raw):
        out = [(topic, raw, t)]
        if topic == "/robot/action" and t == t5 + 5_000_000:        # after image 5's answer
            out.append(("/camera/image_raw", empty_image(t5 + 50_000_000), t5 + 52_000_000))
            out.append(("/robot/joint_states", joints(t5 + 60_000_000, 1.0)[:12], t5 + 61_000_000))   # truncated
        return out

    bad = rewrite(src, tmp_path / "bags" / "bad_att001", edit)
    rep = convert_bags([good, bad], tmp_path / "conv", progress_bar=False)
    assert [(e["bag"], e["frames"]) for e in rep.episodes] == [("good_att001", 12), ("bad_att001", 12)]
    ep = rep.episodes[1]
    assert ep["reference_frames"] == 13
    [(why, n)] = ep["dropped_frames"].items()
    assert n == 1 and why.startswith("undecodable /camera/image_raw: ImageError: empty image (0x0")
    [(why_ign, n_ign)] = ep["ignored_messages"].items()
    assert n_ign == 1 and why_ign.startswith("undecodable /robot/joint_states: ")
    assert rep.episodes[0]["dropped_frames"] == {} and rep.episodes[0]["ignored_messages"] == {}
    assert rep.dropped_frames == {why: 1} and rep.ignored_messages == {why_ign: 1}
    assert rep.to_dict()["dropped_frames"] == {why: 1}
    # the episode metadata in the dataset says the same
    md = read_episode_metadata(tmp_path / "conv")
    assert md[1]["dropped_frames"] == {why: 1} and md[1]["ignored_messages"] == {why_ign: 1}

    rec, counts, errors, logs = live(tmp_path, [good, bad])
    assert errors == []
    assert counts == {"dropped_frames": {why: 1}, "ignored_messages": {why_ign: 1}}
    assert any("bad_att001 -> episode 1 (12 frames); dropped 1 frames" in m for m in logs), logs
    lmd = read_episode_metadata(tmp_path / "live")
    assert lmd[1]["dropped_frames"] == {why: 1} and lmd[1]["ignored_messages"] == {why_ign: 1}
    assert_same_frames(tmp_path / "live", tmp_path / "conv")


def test_an_error_that_stops_a_conversion_names_bag_topic_and_log_time(tmp_path, monkeypatch):
    import wvm_ros.core.bag2lerobot as b2l

    a = make_bag(tmp_path / "bags", "a_att001", n=6)
    b = make_bag(tmp_path / "bags", "b_att001", n=6, t0=20 * NS)
    out = tmp_path / "ds"

    # a failure while writing a frame: the bag and the frame (reference topic, log time)
    real, calls = b2l.add_frame, []

    def failing_add_frame(writer, spec, f, *args, **kw):
        calls.append(f.t_ns)
        if len(calls) == 9:
            raise RuntimeError("disk on fire")
        return real(writer, spec, f, *args, **kw)

    monkeypatch.setattr(b2l, "add_frame", failing_add_frame)
    with pytest.raises(ConversionError) as ei:
        convert_bags([a, b], out, progress_bar=False)
    msg = str(ei.value)
    assert str(b) in msg and "RuntimeError: disk on fire" in msg
    assert f"/camera/image_raw frame at log time {calls[-1]} ns" in msg
    assert not out.exists() and not list(tmp_path.glob(".ds.partial-*"))
    monkeypatch.setattr(b2l, "add_frame", real)

    # a failure while reading a message: the bag and the message (topic, log time)
    real_push = FrameAligner.push
    t_bad = frame_t(3, 20 * NS) - 1_000_000        # log time of b's 4th joint state

    def failing_push(self, topic, t_ns, value):
        if topic == "/robot/joint_states" and t_ns == t_bad:
            raise KeyError("position")
        return real_push(self, topic, t_ns, value)

    monkeypatch.setattr(FrameAligner, "push", failing_push)
    with pytest.raises(ConversionError) as ei:
        convert_bags([a, b], out, progress_bar=False)
    msg = str(ei.value)
    assert str(b) in msg and f"/robot/joint_states message at log time {t_bad} ns" in msg and "KeyError" in msg
    monkeypatch.setattr(FrameAligner, "push", real_push)

    # a camera that changes size within the attempt: the frame that does not fit
    from test_bag2lerobot import image

    t2 = frame_t(2, 30 * NS)
    c = rewrite(make_bag(tmp_path / "src", "c_att001", n=6, t0=30 * NS), tmp_path / "odd" / "c_att001",
                lambda topic, t, raw: [(topic, image(t2, 2, 8, 8) if t == t2 + 2_000_000 else raw, t)])
    with pytest.raises(ConversionError) as ei:
        convert_bags([a, c], out, progress_bar=False)
    msg = str(ei.value)
    assert f"bag {c}, /camera/image_raw frame at log time {t2 + 2_000_000} ns" in msg
    assert "does not fit the dataset" in msg and "(expected {'observation.image': (16, 16, 3)})" in msg
    assert not out.exists()


# ----------------------------------------------------------------------------- NaN / inf

def test_aligner_drops_frames_with_non_finite_state_or_action_and_ignores_bad_estimates():
    al = FrameAligner(AlignConfig(max_age_s=0.05))
    for i in range(6):
        t = (i + 1) * 100 * 10**6
        al.push("/robot/joint_states", t - 10**6, (t, np.array([np.nan if i == 1 else float(i)], np.float32)))
        al.push("/camera/image_raw", t + 10**6, (t, IMG))
        al.push("/robot/action", t + 4 * 10**6, np.array([np.inf if i == 2 else float(i)], np.float32))
        chunk = [0.1, np.nan] if i == 4 else [0.1, i / 10]
        al.add_progress(t, np.inf if i == 5 else i / 10, chunk)
    frames = al.finish()
    assert [f.state.tolist() for f in frames] == [[0.0], [3.0], [4.0], [5.0]]
    assert al.stats.dropped == {"non-finite /robot/joint_states (NaN/inf)": 1,
                                "non-finite /robot/action (NaN/inf)": 1}
    assert al.stats.ignored == {"non-finite /wvm/progress (progress or chunk)": 2}
    assert al.stats.reference_frames == al.stats.frames + sum(al.stats.dropped.values()) == 6
    # frames 4 and 5 keep the newest usable estimate (frame 3's), as for an image the value node skipped
    assert [(round(f.progress, 6), [round(float(x), 6) for x in f.chunk], f.value_valid) for f in frames] == [
        (0.0, [0.1, 0.0], True), (0.3, [0.1, 0.3], True), (0.3, [0.1, 0.3], True), (0.3, [0.1, 0.3], True)]


def test_non_finite_values_cost_frames_not_the_episode_live_and_converted(tmp_path):
    """A NaN joint position, an inf action and a NaN in a value chunk: the converter and
    the live recorder both keep the episode, drop / ignore the same and write the same."""
    src = make_bag(tmp_path / "src", "n_att001", n=12)
    F = B.msg_class("std_msgs/msg/Float64MultiArray")
    L = B.msg_class("std_msgs/msg/MultiArrayLayout")
    inf_action = B.serialize(F(layout=L(dim=[], data_offset=0), data=np.array([np.inf, 0.0])),
                             "std_msgs/msg/Float64MultiArray")

    def edit(topic, t, raw):
        if topic == "/robot/joint_states" and t == frame_t(6) - 1_000_000:
            raw = joints(frame_t(6), float("nan"))
        elif topic == "/robot/action" and t == frame_t(3) + 5_000_000:
            raw = inf_action
        elif topic == "/wvm/progress" and t == frame_t(8) + 30_000_000:
            raw = progress_msg(frame_t(8), 0.75, [0.5, 0.6, np.nan, 0.75])
        return [(topic, raw, t)]

    bag = rewrite(src, tmp_path / "bags" / "n_att001", edit)
    rep = convert_bags([bag], tmp_path / "conv", progress_bar=False)
    ep = rep.episodes[0]
    assert ep["frames"] == 10 and ep["reference_frames"] == 12
    dropped = {"non-finite /robot/action (NaN/inf)": 1, "non-finite /robot/joint_states (NaN/inf)": 1}
    ignored = {"non-finite /wvm/progress (progress or chunk)": 1}
    assert ep["dropped_frames"] == dropped and ep["ignored_messages"] == ignored
    assert rep.dropped_frames == dropped and rep.ignored_messages == ignored
    df = load(tmp_path / "conv")
    states = [float(s[0]) for s in df["observation.state"]]
    assert states == [0, 1, 2, 4, 5, 7, 8, 9, 10, 11]
    # image 8 takes image 7's estimate (8/12), still fresh
    row8 = df.iloc[states.index(8)]
    assert float(row8["progress"]) == pytest.approx(8 / 12) and bool(row8["value_valid"])
    assert np.isfinite(np.stack(df["value_chunk"].to_numpy())).all()

    rec, counts, errors, logs = live(tmp_path, [bag])
    assert errors == [] and rec.episodes_written == 1
    assert counts == {"dropped_frames": dropped, "ignored_messages": ignored}
    assert any("n_att001 -> episode 0 (10 frames); dropped 2 frames" in m and "ignored 1 messages" in m
               for m in logs), logs
    assert read_episode_metadata(tmp_path / "live")[0]["dropped_frames"] == dropped
    assert_same_frames(tmp_path / "live", tmp_path / "conv")


def test_live_counts_include_the_open_attempt_and_add_up(tmp_path):
    from types import SimpleNamespace

    rec = LiveDatasetRecorder(tmp_path / "live", AlignConfig(), use_videos=False, threaded=False)
    nan_state = joints(frame_t(0), float("nan"))
    for attempt in (1, 2):
        rec.on_start(SimpleNamespace(task="push", episode_id="e", attempt=attempt))
        rec.on_message("/robot/joint_states", "sensor_msgs/msg/JointState", nan_state, frame_t(0))
        rec.on_message("/robot/joint_states", "sensor_msgs/msg/JointState", nan_state[:9], frame_t(0) + 1)
        rec.on_message("/camera/image_raw", "sensor_msgs/msg/Image", empty_image(frame_t(0)), frame_t(0) + 2)
        rec.on_message("/robot/action", "std_msgs/msg/Float64MultiArray", action(0.0), frame_t(0) + 3)
        assert sum(rec.counts()["ignored_messages"].values()) == attempt          # the open attempt counts
        if attempt == 1:
            rec.on_end({"outcome": "success"})
    c = rec.counts()
    assert sum(c["ignored_messages"].values()) == 2
    assert list(c["dropped_frames"].values()) == [2]
    assert next(iter(c["dropped_frames"])).startswith("undecodable /camera/image_raw: ImageError: empty image")
    rec.on_abort()
    assert sum(rec.counts()["dropped_frames"].values()) == 1        # an aborted attempt is not counted
    assert rec.close() is None and rec.episodes_written == 0


# ----------------------------------------------------------------------------- out-of-order stamps

def test_latest_buffer_is_ordered_by_time_not_by_arrival():
    b = _Latest(keep=4)
    for t, v in ((100, "a"), (300, "c"), (200, "b"), (50, "z"), (300, "c2")):
        b.add(t, v)
    assert b.ts == [100, 200, 300, 300]            # the oldest (50) fell out: the 4 newest by time
    assert b.at_or_before(250, 100) == "b" and b.at_or_before(250, 10) is None
    assert b.at_or_before(300, 0) == "c2"          # equal times: the last added
    assert b.at_or_before(99, 10**9) is None
    assert b.first_after(100, 150) == "b" and b.first_after(100, 50) is None and b.first_after(300, 10) is None
    assert b.nearest(240, 100) == "b" and b.nearest(260, 100) == "c" and b.nearest(150, 50) == "a"
    assert b.nearest(1000, 100) is None
    assert b.newest_at_or_before(350) == (300, "c2")


def test_aligner_robust_to_an_older_stamped_state_arriving_late():
    """A state from a second publisher stamped 0.5 s in the past, between two in-order ones:
    it must not hide the newer states from the frames that follow."""
    al = FrameAligner(AlignConfig(max_age_s=0.1), use_recorded_progress=False)
    out = []
    for i in range(10):
        t = (10 + i) * NS // 10
        al.push("/robot/joint_states", t, (t, np.array([float(i)], np.float32)))
        if i == 4:
            al.push("/robot/joint_states", t + 1, (t - NS // 2, np.array([-1.0], np.float32)))
        al.push("/camera/image_raw", t + 2_000_000, (t, IMG))
        al.push("/robot/action", t + 5_000_000, np.array([0.0], np.float32))
        out += al.pop_ready()
    out += al.finish()
    assert al.stats.dropped == {} and [f.state.tolist() for f in out] == [[float(i)] for i in range(10)]


def test_aligner_progress_estimates_out_of_order():
    """The value node may publish a late estimate for an older image after a newer one: a frame
    still takes the newest estimate at or before its stamp."""
    al = FrameAligner(AlignConfig(max_age_s=0.05))
    al.add_progress(200 * 10**6, 0.6, [0.6])
    al.add_progress(100 * 10**6, 0.3, [0.3])       # late, for an older image
    for t in (150 * 10**6, 250 * 10**6):
        al.push("/robot/joint_states", t, (t, np.array([0.0], np.float32)))
        al.push("/camera/image_raw", t + 10**6, (t, IMG))
        al.push("/robot/action", t + 2 * 10**6, np.array([0.0], np.float32))
    assert [f.progress for f in al.finish()] == pytest.approx([0.3, 0.6])
