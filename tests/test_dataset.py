"""ValuedDatasetWriter: write tiny datasets, load them back offline with LeRobotDataset."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from wvm_ros.core.dataset import (
    SARM_PROGRESS_FILE,
    ValuedDatasetWriter,
    read_episode_metadata,
    video_support,
)


def _frames(writer, n, seed=0, **extra):
    rng = np.random.default_rng(seed)
    for t in range(n):
        imgs = {k: rng.integers(0, 255, size=s, dtype=np.uint8) for k, s in writer.image_shapes.items()}
        writer.add_frame(imgs, state=rng.normal(size=writer.state_dim), action=rng.normal(size=writer.action_dim),
                         progress=t / max(n - 1, 1), success=t == n - 1, done=t == n - 1, task="push the T",
                         **{k: v(t) for k, v in extra.items()})


def _load(root, repo_id="local/wvm"):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset(repo_id, root=root, video_backend="pyav")


def test_images_two_cameras_keep_drop_overrides(tmp_path):
    root = tmp_path / "ds"
    w = ValuedDatasetWriter(root, image_shapes={"observation.images.top": (24, 32, 3), "observation.images.wrist": (16, 16, 3)},
                            state=["x", "y", "z"], action=2, fps=10, value_horizon=3, use_videos=False,
                            extra_scalars={"progress_coverage": "float32", "segment": "int64"})
    _frames(w, 5, progress_coverage=lambda t: t * 0.1, segment=lambda t: 2 if t == 2 else 0)
    gt = np.array([0.0, 0.3, 0.1, 0.6, 1.0], dtype=np.float32)
    assert w.end_episode(overrides={"progress": gt, "value_chunk": np.tile(gt[:, None], (1, 3))},
                         metadata={"kind": "retry", "segment": [1, 2]}) == 0
    _frames(w, 3, seed=1, progress_coverage=lambda t: 0.0, segment=lambda t: 0)
    assert w.end_episode(keep=False) is None  # dropped attempt
    _frames(w, 4, seed=2, progress_coverage=lambda t: 0.5, segment=lambda t: 1)
    assert w.end_episode(metadata={"kind": "hesitation"}) == 1
    _frames(w, 2, seed=3, progress_coverage=lambda t: 0.0, segment=lambda t: 0)  # unfinished: dropped
    w.finalize()

    ds = _load(root)
    assert ds.num_episodes == 2 and len(ds) == 9
    item = ds[2]
    assert tuple(item["observation.images.top"].shape) == (3, 24, 32)
    assert tuple(item["observation.images.wrist"].shape) == (3, 16, 16)
    assert float(item["progress"]) == pytest.approx(0.1)
    assert int(item["segment"]) == 2 and float(item["progress_coverage"]) == pytest.approx(0.2)
    assert tuple(item["value_chunk"].shape) == (3,) and float(item["value_chunk"][0]) == pytest.approx(0.1)
    assert tuple(item["observation.state"].shape) == (3,) and tuple(item["action"].shape) == (2,)
    assert item["task"] == "push the T"
    last = ds[4]
    assert bool(last["next.success"]) and bool(last["next.done"])
    second = ds[5]
    assert int(second["episode_index"]) == 1 and int(second["frame_index"]) == 0
    assert sum(1 for _ in ds) == 9

    sarm = pq.read_table(root / SARM_PROGRESS_FILE)
    assert sarm.column_names == ["index", "episode_index", "frame_index", "progress_sparse", "progress_dense"]
    assert str(sarm.schema.field("index").type) == "int64" and str(sarm.schema.field("progress_dense").type) == "float"
    df = sarm.to_pandas()
    assert df["index"].tolist() == list(range(9))
    np.testing.assert_allclose(df["progress_dense"][:5], gt)
    assert df["episode_index"].tolist() == [0] * 5 + [1] * 4 and df["frame_index"].tolist()[5:] == [0, 1, 2, 3]
    meta = read_episode_metadata(root)
    assert meta[0]["kind"] == "retry" and meta[0]["segment"] == [1, 2] and meta[0]["length"] == 5
    assert meta[1] == {"episode_index": 1, "length": 4, "index_from": 5, "kind": "hesitation"}


@pytest.mark.skipif(not video_support()[0], reason=f"no video encoder: {video_support()[1]}")
def test_video_roundtrip(tmp_path):
    root = tmp_path / "vid"
    with ValuedDatasetWriter(root, image_shapes={"observation.image": (32, 32, 3)}, state=5, action=2,
                             use_videos="auto") as w:
        assert w.use_videos
        _frames(w, 6)
        w.end_episode()
    ds = _load(root)
    assert ds.meta.video_keys == ["observation.image"]
    item = ds[3]
    assert tuple(item["observation.image"].shape) == (3, 32, 32)
    assert not (root / "images").exists()


def test_bad_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="image_shapes"):
        ValuedDatasetWriter(tmp_path / "a", image_shapes={}, state=2, action=2)
    with pytest.raises(ValueError, match="reserved"):
        ValuedDatasetWriter(tmp_path / "b", image_shapes={"progress": (8, 8, 3)}, state=2, action=2, use_videos=False)
    w = ValuedDatasetWriter(tmp_path / "c", image_shapes={"cam": (8, 8, 3)}, state=2, action=2, use_videos=False)
    img = {"cam": np.zeros((8, 8, 3), np.uint8)}
    with pytest.raises(ValueError, match="cam"):
        w.add_frame({"cam": np.zeros((8, 9, 3), np.uint8)}, [0, 0], [0, 0])
    with pytest.raises(ValueError, match="state"):
        w.add_frame(img, [0, 0, 0], [0, 0])
    with pytest.raises(ValueError, match="extra scalars"):
        w.add_frame(img, [0, 0], [0, 0], segment=1)
    with pytest.raises(RuntimeError, match="no frames"):
        w.end_episode()
    w.add_frame(img, [0, 0], [0, 0])
    with pytest.raises(ValueError, match="overrides"):
        w.end_episode(overrides={"progress": [0.1, 0.2]})
    w.finalize()
    with pytest.raises(FileExistsError):
        ValuedDatasetWriter(tmp_path / "c", image_shapes={"cam": (8, 8, 3)}, state=2, action=2)


def test_rejected_frame_is_named_and_leaves_the_open_episode_intact(tmp_path):
    """A frame with a NaN/inf, a non-numeric value or a bad extra scalar is refused with a
    ValueError naming the field, what was wrong and what was expected; the episode's
    other frames stay and the episode can still be saved."""
    root = tmp_path / "ds"
    w = ValuedDatasetWriter(root, image_shapes={"cam": (8, 8, 3)}, state=3, action=2, value_horizon=2,
                            use_videos=False, extra_scalars={"segment": "int64"})
    img = {"cam": np.zeros((8, 8, 3), np.uint8)}
    w.add_frame(img, [0, 1, 2], [0, 0], progress=0.1, segment=0)
    with pytest.raises(ValueError, match=r"^state: expected 3 finite numbers, got 2 NaN/inf \(at index \[1, 2\]\)"):
        w.add_frame(img, [0, np.nan, np.inf], [0, 0], segment=0)
    with pytest.raises(ValueError, match=r"^action: expected 2 finite numbers, got 3: "):
        w.add_frame(img, [0, 1, 2], [0, 0, 0], segment=0)
    with pytest.raises(ValueError, match=r"^state: expected 3 finite numbers, got \['a', 'b', 'c'\]"):
        w.add_frame(img, ["a", "b", "c"], [0, 0], segment=0)
    with pytest.raises(ValueError, match=r"^value_chunk: expected 2 finite numbers, got 1 NaN/inf \(at index \[0\]\)"):
        w.add_frame(img, [0, 1, 2], [0, 0], value_chunk=[np.nan, 0.1], segment=0)
    with pytest.raises(ValueError, match=r"^progress: expected 1 finite numbers, got 1 NaN/inf"):
        w.add_frame(img, [0, 1, 2], [0, 0], progress=np.nan, segment=0)
    with pytest.raises(ValueError, match=r"^extra scalar 'segment': expected one int64 value, got 'x'"):
        w.add_frame(img, [0, 1, 2], [0, 0], segment="x")
    assert w.pending_frames == 1
    w.add_frame(img, [3, 4, 5], [1, 1], progress=0.2, segment=1, done=True)
    assert w.end_episode() == 0
    w.finalize()
    ds = _load(root)
    assert len(ds) == 2 and ds[1]["observation.state"].tolist() == [3.0, 4.0, 5.0]
