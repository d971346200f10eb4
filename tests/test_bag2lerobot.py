"""Bags -> LeRobot dataset: alignment, recorded and offline values, determinism, missing topics."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from wvm_ros.core import bag as B
from wvm_ros.core.bag2lerobot import (AlignConfig, ConversionError, FrameAligner, convert_bags,
                                      parse_image_keys)

NS = 1_000_000_000


def _hdr(stamp_ns: int, frame_id="camera"):
    H, T = B.msg_class("std_msgs/msg/Header"), B.msg_class("builtin_interfaces/msg/Time")
    return H(stamp=T(sec=stamp_ns // NS, nanosec=stamp_ns % NS), frame_id=frame_id)


def image(stamp_ns, value, h=16, w=16):
    Img = B.msg_class("sensor_msgs/msg/Image")
    data = np.full((h, w, 3), value % 256, np.uint8)
    data[0, 0] = [1, 2, 3]
    return B.serialize(Img(header=_hdr(stamp_ns), height=h, width=w, encoding="rgb8", is_bigendian=0,
                           step=w * 3, data=data.reshape(-1)), "sensor_msgs/msg/Image")


def joints(stamp_ns, x):
    J = B.msg_class("sensor_msgs/msg/JointState")
    return B.serialize(J(header=_hdr(stamp_ns), name=["agent_x", "agent_y"],
                         position=np.array([x, 2 * x], np.float64), velocity=np.zeros(0), effort=np.zeros(0)),
                       "sensor_msgs/msg/JointState")


def action(x):
    F = B.msg_class("std_msgs/msg/Float64MultiArray")
    L = B.msg_class("std_msgs/msg/MultiArrayLayout")
    return B.serialize(F(layout=L(dim=[], data_offset=0), data=np.array([x, x + 0.5])),
                       "std_msgs/msg/Float64MultiArray")


def progress(stamp_ns, v, valid=True):
    P = B.msg_class("wvm_msgs/msg/Progress")
    return B.serialize(P(header=_hdr(stamp_ns), progress=v, chunk=np.array([v] * 4, np.float32), success=v, valid=valid,
                         status="", task="push", episode_id="e", attempt=1, model_name="tiny",
                         checkpoint_id="abc", untrained=False, inference_latency=0.01),
                       "wvm_msgs/msg/Progress")


def f32(v):
    return B.serialize(B.msg_class("std_msgs/msg/Float32")(data=v), "std_msgs/msg/Float32")


def make_bag(out: Path, name: str, n=12, outcome="success", t0=10 * NS, with_progress=True,
             with_state=True, fps=10, size=16):
    w = B.BagWriter(out / name, custom_data={"task": "push the T", "episode_id": name, "attempt": 1})
    w.add_topic("/camera/image_raw", "sensor_msgs/msg/Image")
    if with_state:
        w.add_topic("/robot/joint_states", "sensor_msgs/msg/JointState")
    w.add_topic("/robot/action", "std_msgs/msg/Float64MultiArray")
    w.add_topic("/sim/ground_truth_progress", "std_msgs/msg/Float32")
    if with_progress:
        w.add_topic("/wvm/progress", "wvm_msgs/msg/Progress")
    dt = NS // fps
    for i in range(n):
        t = t0 + i * dt
        if with_state:
            w.write("/robot/joint_states", joints(t, float(i)), t - 1_000_000)
        w.write("/sim/ground_truth_progress", f32(i / n), t - 500_000)
        w.write("/camera/image_raw", image(t, i, size, size), t + 2_000_000)   # received 2 ms after capture
        w.write("/robot/action", action(float(i)), t + 5_000_000)         # the policy's answer
        if with_progress and i >= 2:
            # the estimate for image i arrives 30 ms later and is stamped with it
            w.write("/wvm/progress", progress(t, (i + 1) / n), t + 30_000_000)
    w.close({"outcome": outcome, "final_progress": "1.0"})
    return out / name


def dataset_digest(root: Path) -> str:
    """Every file byte for byte, except parquet files: their tables (HF `datasets` puts a
    random fingerprint into the parquet schema metadata, which is not data)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            if p.suffix == ".parquet":
                t = pq.read_table(p).replace_schema_metadata(None)
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, t.schema) as w:
                    w.write_table(t)
                h.update(sink.getvalue().to_pybytes())
            else:
                h.update(p.read_bytes())
    return h.hexdigest()


def test_aligner_rules():
    cfg = AlignConfig(max_age_s=0.05)
    al = FrameAligner(cfg)
    al.push("/robot/joint_states", 0, np.array([1.0], np.float32))
    al.push("/camera/image_raw", 10 * 10**6, (10 * 10**6, np.zeros((2, 2, 3), np.uint8)))
    al.push("/robot/action", 5 * 10**6, np.array([0.0], np.float32))      # before the frame
    al.push("/robot/action", 15 * 10**6, np.array([9.0], np.float32))     # answer to the frame
    assert al.pop_ready(16 * 10**6) == []     # progress may still come
    al.push("/wvm/progress", 40 * 10**6, {"stamp_ns": 10 * 10**6, "progress": 0.4, "chunk": [0.1, 0.4],
                                           "valid": True})
    # a second frame whose state is too old (> 50 ms)
    al.push("/camera/image_raw", 80 * 10**6, (80 * 10**6, np.zeros((2, 2, 3), np.uint8)))
    frames = al.pop_ready(41 * 10**6) + al.finish()
    assert len(frames) == 1
    f = frames[0]
    assert f.action.tolist() == [9.0] and f.state.tolist() == [1.0]
    assert f.progress == pytest.approx(0.4) and f.value_valid
    assert al.stats.dropped == {"no /robot/joint_states within 0.05 s": 1}


def test_aligner_matches_stamped_state_by_header_stamp():
    """The simulator stamps image and joint state of a step alike and may send the state
    after the image: the state of the same stamp is the frame's state."""
    al = FrameAligner(AlignConfig(max_age_s=0.05))
    img = np.zeros((2, 2, 3), np.uint8)
    for i in range(3):
        t = (i + 1) * 100 * 10**6
        al.push("/camera/image_raw", t + 1 * 10**6, (t, img))
        al.push("/robot/joint_states", t + 3 * 10**6, (t, np.array([float(i)], np.float32)))
        al.push("/robot/action", t + 4 * 10**6, np.array([float(i)], np.float32))
    al.add_progress(150 * 10**6, 0.5, [0.5])       # one estimate, stamped between frames 1 and 2
    frames = al.pop_ready(2 * 10**9) + al.finish()
    assert [f.state.tolist() for f in frames] == [[0.0], [1.0], [2.0]]
    # before it: 0, not valid; after it: 0.5 valid while fresh
    assert [(f.progress, f.value_valid) for f in frames] == [(0.0, False), (0.5, True), (0.5, True)]
    assert [f.action.tolist() for f in frames] == [[0.0], [1.0], [2.0]]
    assert al.stats.dropped == {}


def test_stale_estimate_is_kept_but_not_valid():
    al = FrameAligner(AlignConfig(max_age_s=0.05, progress_max_age_s=1.0))
    img = np.zeros((2, 2, 3), np.uint8)
    al.add_progress(0, 0.4, [0.4])
    for i, t in enumerate((10**8, 3 * 10**9)):                 # 0.1 s and 3 s after the estimate
        al.push("/robot/joint_states", t, np.array([0.0], np.float32))
        al.push("/camera/image_raw", t, (t, img))
        al.push("/robot/action", t + 10**6, np.array([0.0], np.float32))
        al.push("/sim/ground_truth_progress", t + 2 * 10**6, 0.25 * (i + 1))   # after the image
    frames = al.finish()
    assert [(f.progress, f.value_valid) for f in frames] == [(0.4, True), (0.4, False)]
    assert [f.ground_truth for f in frames] == [0.25, 0.5]


def test_parse_image_keys():
    assert parse_image_keys(["/camera/image_raw", "/wrist/image_raw"]) == {
        "/camera/image_raw": "observation.image", "/wrist/image_raw": "observation.images.wrist"}
    assert parse_image_keys(["/a/image_raw=observation.images.top"]) == {"/a/image_raw": "observation.images.top"}


def test_convert_recorded_values_and_deterministic(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    bags = tmp_path / "bags"
    make_bag(bags, "ep1_att001", n=12, outcome="failure")
    make_bag(bags, "ep1_att002", n=10, outcome="success", t0=20 * NS)
    rep = convert_bags([bags], tmp_path / "ds1", progress_bar=False)
    assert [e["frames"] for e in rep.episodes] == [12, 10]
    assert rep.fps == 10 and rep.values == "recorded"
    ds = LeRobotDataset("local/wvm_bags", root=tmp_path / "ds1")
    assert ds.num_episodes == 2 and len(ds) == 22
    fr = ds[5]
    # frame 5 of the first attempt: its own estimate (stamped with image 5), the answer action 5
    assert float(fr["progress"]) == pytest.approx(6 / 12)
    assert float(fr["success_probability"]) == pytest.approx(6 / 12)   # Progress.success of that estimate
    assert np.isnan(float(ds[0]["success_probability"]))
    assert fr["action"].tolist() == [5.0, 5.5]
    assert fr["observation.state"].tolist() == [5.0, 10.0]
    assert float(fr["ground_truth_progress"]) == pytest.approx(5 / 12)
    assert bool(fr["value_valid"])
    assert not bool(ds[0]["value_valid"]) and float(ds[0]["progress"]) == 0.0   # before the first estimate
    last = ds[21]
    assert bool(last["next.done"]) and bool(last["next.success"])
    assert bool(ds[11]["next.done"]) and not bool(ds[11]["next.success"])
    assert ds[0]["task"] == "push the T"
    # twice -> the same dataset, byte for byte
    convert_bags([bags], tmp_path / "ds2", progress_bar=False)
    assert dataset_digest(tmp_path / "ds1") == dataset_digest(tmp_path / "ds2")
    # failed attempts dropped on request
    rep3 = convert_bags([bags], tmp_path / "ds3", keep_failed=False, progress_bar=False)
    assert len(rep3.episodes) == 1 and rep3.skipped and "failure" in rep3.skipped[0]


def test_bags_recorded_with_an_older_progress_definition_still_convert(tmp_path):
    """Bags from before Progress had its `success` field: the recorded definition decodes them."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from rosbags.typesys import Stores, get_typestore, get_types_from_msg

    new_def = B.message_definition("wvm_msgs/msg/Progress")
    old_def = new_def.replace("float32 success\n", "")
    assert old_def != new_def
    old = get_typestore(Stores.ROS2_KILTED)
    old.register(get_types_from_msg(old_def, "wvm_msgs/msg/Progress"))
    P, H, T = (old.types[n] for n in ("wvm_msgs/msg/Progress", "std_msgs/msg/Header", "builtin_interfaces/msg/Time"))

    def old_progress(stamp_ns, v):
        return bytes(old.serialize_cdr(P(header=H(stamp=T(sec=stamp_ns // NS, nanosec=stamp_ns % NS), frame_id="camera"),
                                         progress=v, chunk=np.array([v] * 4, np.float32), valid=True, status="",
                                         task="push", episode_id="e", attempt=1, model_name="tiny",
                                         checkpoint_id="abc", untrained=False, inference_latency=0.01),
                                       "wvm_msgs/msg/Progress"))

    raw = old_progress(3 * NS, 0.625)
    try:                                 # the current layout cannot read it ...
        m = B.deserialize(raw, "wvm_msgs/msg/Progress")
        misread = not (m.task == "push" and m.model_name == "tiny" and m.checkpoint_id == "abc")
    except Exception:
        misread = True
    assert misread
    m = B.deserialize(raw, "wvm_msgs/msg/Progress", old_def)   # ... the recorded one can
    assert m.progress == pytest.approx(0.625) and m.task == "push" and not hasattr(m, "success")

    n, t0, dt = 8, 10 * NS, NS // 10
    w = B.BagWriter(tmp_path / "bags" / "old_att001", custom_data={"task": "push the T", "attempt": 1})
    w.add_topic("/camera/image_raw", "sensor_msgs/msg/Image")
    w.add_topic("/robot/joint_states", "sensor_msgs/msg/JointState")
    w.add_topic("/robot/action", "std_msgs/msg/Float64MultiArray")
    w.add_topic("/wvm/progress", "wvm_msgs/msg/Progress", msgdef=old_def)
    for i in range(n):
        t = t0 + i * dt
        w.write("/robot/joint_states", joints(t, float(i)), t - 1_000_000)
        w.write("/camera/image_raw", image(t, i), t + 2_000_000)
        w.write("/robot/action", action(float(i)), t + 5_000_000)
        w.write("/wvm/progress", old_progress(t, (i + 1) / n), t + 30_000_000)
    w.close({"outcome": "success"})
    rep = convert_bags([tmp_path / "bags"], tmp_path / "ds", progress_bar=False)
    assert rep.values == "recorded" and [e["frames"] for e in rep.episodes] == [n]
    ds = LeRobotDataset("local/wvm_bags", root=tmp_path / "ds")
    assert [float(ds[i]["progress"]) for i in range(n)] == pytest.approx([(i + 1) / n for i in range(n)])
    assert all(np.isnan(float(ds[i]["success_probability"])) for i in range(n))   # not recorded then


def test_missing_topics_report_and_no_partial_dataset(tmp_path):
    bags = tmp_path / "bags"
    make_bag(bags, "good", n=5)
    make_bag(bags, "other_robot", n=5, with_state=False, with_progress=False)
    out = tmp_path / "ds"
    with pytest.raises(ConversionError) as ei:
        convert_bags([bags], out, progress_bar=False)
    msg = str(ei.value)
    assert "other_robot" in msg and "/robot/joint_states (state)" in msg and "/wvm/progress" in msg
    assert "good:" not in msg
    assert not out.exists()
    assert not list(tmp_path.glob(".ds.partial-*"))


def test_output_exists_and_bad_paths(tmp_path):
    bags = tmp_path / "bags"
    make_bag(bags, "a", n=3)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ConversionError, match="not empty"):
        convert_bags([bags], tmp_path / "full", progress_bar=False)
    with pytest.raises(ConversionError, match="does not exist"):
        convert_bags([tmp_path / "nope"], tmp_path / "o", progress_bar=False)


@pytest.mark.timeout(300)
def test_plain_bag_offline_values_deterministic(tmp_path):
    import torch

    from wvm_ros.core.model import build_model, preset_config, save_checkpoint

    torch.manual_seed(0)
    try:
        model = build_model(preset_config("tiny"))
    except TypeError:
        model = build_model("tiny")
    ckpt = tmp_path / "ckpt"
    save_checkpoint(model, ckpt)
    bags = tmp_path / "bags"
    make_bag(bags, "plain", n=12, with_progress=False)
    r1 = convert_bags([bags], tmp_path / "d1", checkpoint=str(ckpt), progress_bar=False)
    r2 = convert_bags([bags], tmp_path / "d2", checkpoint=str(ckpt), progress_bar=False)
    assert r1.values.startswith("offline:tiny:")
    assert dataset_digest(tmp_path / "d1") == dataset_digest(tmp_path / "d2")
    import pandas as pd
    df = pd.concat(pd.read_parquet(p) for p in sorted((tmp_path / "d1" / "data").rglob("*.parquet")))
    assert df["value_valid"].astype(bool).sum() > 0
    assert ((df["progress"].map(float) >= 0) & (df["progress"].map(float) <= 1)).all()


def _replay(rec, bag):
    from types import SimpleNamespace

    cd = B.bag_custom_data(bag)
    rec.on_start(SimpleNamespace(task=cd["task"], episode_id=cd["episode_id"], attempt=int(cd["attempt"])))
    for topic, typename, t, raw in B.iter_bag(bag):
        rec.on_message(topic, typename, raw, t)
    rec.on_end({**cd, "bag": bag.name})


@pytest.mark.parametrize("threaded", [True, False])
def test_live_recorder_equals_conversion_and_handles_faults(tmp_path, threaded):
    import pandas as pd

    from wvm_ros.core.bag2lerobot import LiveDatasetRecorder

    bags = tmp_path / "bags"
    b1 = make_bag(bags, "a_att001", n=8, outcome="failure")
    b2 = make_bag(bags, "a_att002", n=6, outcome="success", t0=20 * NS)
    odd = tmp_path / "odd"
    b3 = make_bag(odd, "a_att003", n=5, outcome="success", t0=30 * NS)
    # a camera of another size in a later attempt: that attempt is skipped, not half-written
    w = B.BagWriter(odd / "a_att004", custom_data={"task": "push the T", "episode_id": "a", "attempt": 4})
    for topic, ty in (("/camera/image_raw", "sensor_msgs/msg/Image"), ("/robot/joint_states", "sensor_msgs/msg/JointState"),
                      ("/robot/action", "std_msgs/msg/Float64MultiArray")):
        w.add_topic(topic, ty)
    for i in range(3):
        t = 40 * NS + i * NS // 10
        w.write("/robot/joint_states", joints(t, 1.0), t)
        w.write("/camera/image_raw", image(t, i, h=8, w=8), t + 1)
        w.write("/robot/action", action(1.0), t + 2)
    w.close({"outcome": "success"})
    errors, logs = [], []
    rec = LiveDatasetRecorder(tmp_path / "live", AlignConfig(), fps=10, keep_failed=False, use_videos=False,
                              repo_id="local/wvm_bags", log_fn=logs.append, error_fn=errors.append,
                              threaded=threaded)
    for b in (b1, b2, odd / "a_att004", b3):
        _replay(rec, b)
    rec.close()
    assert any("a_att001 dropped (outcome failure)" in m for m in logs)
    assert any("a_att002 -> episode 0 (6 frames)" in m for m in logs)
    assert len(errors) == 1 and "does not fit the dataset" in errors[0]
    assert any("a_att003 -> episode 1 (5 frames)" in m for m in logs)
    convert_bags([b2, b3], tmp_path / "conv", progress_bar=False)

    def load(r):
        return pd.concat([pd.read_parquet(p) for p in sorted((r / "data").rglob("*.parquet"))], ignore_index=True)

    live, conv = load(tmp_path / "live"), load(tmp_path / "conv")
    assert len(live) == len(conv) == 11
    for col in ("observation.state", "action", "progress", "value_chunk", "value_valid", "ground_truth_progress",
                "next.done", "next.success", "episode_index", "frame_index"):
        np.testing.assert_array_equal(np.stack(live[col].map(np.asarray).to_numpy()).astype(float),
                                      np.stack(conv[col].map(np.asarray).to_numpy()).astype(float), err_msg=col)


def test_convert_sqlite3_bag_written_by_rosbags(tmp_path):
    """A bag from another recorder (rosbag2's default sqlite3 storage, no custom_data)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    B.message_definition("wvm_msgs/msg/Progress")     # registers wvm_msgs in our type store
    ts = get_typestore(Stores.ROS2_KILTED)
    ts.register({k: v for k, v in B._typestore().fielddefs.items() if k.startswith("wvm_msgs/")})
    path = tmp_path / "other_robot"
    with Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3) as w:
        conns = {t: w.add_connection(t, ty, typestore=ts) for t, ty in (
            ("/camera/image_raw", "sensor_msgs/msg/Image"), ("/robot/joint_states", "sensor_msgs/msg/JointState"),
            ("/robot/action", "std_msgs/msg/Float64MultiArray"), ("/wvm/progress", "wvm_msgs/msg/Progress"))}
        for i in range(6):
            t = 5 * NS + i * NS // 10
            w.write(conns["/robot/joint_states"], t, joints(t, float(i)))
            w.write(conns["/camera/image_raw"], t + 1, image(t, i))
            w.write(conns["/robot/action"], t + 2, action(float(i)))
            w.write(conns["/wvm/progress"], t + 3, progress(t, i / 6))
    rep = convert_bags([path], tmp_path / "ds", progress_bar=False, task="push")
    assert rep.episodes[0]["frames"] == 6 and rep.episodes[0]["outcome"] == ""
    import pandas as pd
    df = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "ds" / "data").rglob("*.parquet"))])
    np.testing.assert_allclose(df["progress"].astype(float), [i / 6 for i in range(6)], atol=1e-6)
    assert bool(df["next.done"].iloc[-1]) and not bool(df["next.success"].iloc[-1])


@pytest.mark.timeout(300)
def test_live_recorder_videos_and_small_frames(tmp_path):
    """Videos where the encoder can (>= 64 px); smaller cameras fall back to images (the AV1
    encoder kills the process with SIGFPE on 16x16 frames)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from wvm_ros.core.bag2lerobot import LiveDatasetRecorder
    from wvm_ros.core.dataset import video_support

    if not video_support()[0]:
        pytest.skip(f"no video encoder here: {video_support()[1]}")
    bags = tmp_path / "bags"
    b1 = make_bag(bags, "v_att001", n=6, outcome="failure", size=64)
    b2 = make_bag(bags, "v_att002", n=8, t0=20 * NS, size=64)
    rec = LiveDatasetRecorder(tmp_path / "live", AlignConfig(), fps=10, keep_failed=False, use_videos="auto")
    for b in (b1, b2):
        _replay(rec, b)
    rec.close()
    ds = LeRobotDataset("local/wvm_live", root=tmp_path / "live")
    assert ds.meta.video_keys == ["observation.image"]
    assert ds.num_episodes == 1 and len(ds) == 8
    assert tuple(ds[7]["observation.image"].shape) == (3, 64, 64) and bool(ds[7]["next.success"])
    small = make_bag(tmp_path / "small", "s_att001", n=4, size=16)
    rec = LiveDatasetRecorder(tmp_path / "live_small", AlignConfig(), use_videos="auto")
    _replay(rec, small)
    rec.close()
    assert LeRobotDataset("local/wvm_live", root=tmp_path / "live_small").meta.video_keys == []
