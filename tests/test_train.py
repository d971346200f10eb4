"""Training: transforms, a short run lowers the loss, resume, NaN stop, dataset errors."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from wvm_ros.core.model import load_value_model, read_checkpoint_config
from wvm_ros.core.train import (
    DESCEND, PLATEAU, RISE, EpisodeStore, TrainConfig, TrainDataError, TrainingDiverged, choose_rewind_mode,
    clip_indices, load_training_data, randomize_prefix, rewind_indices, train,
)

TINY = {"num_layers": 1, "video_hidden": 64, "num_heads": 2, "video_ffn": 128, "value_hidden": 32,
        "value_ffn": 64, "encoder_channels": [8, 16, 32], "latent_channels": 8, "image_size": [32, 32]}


def test_clip_indices_clamp():
    idx = clip_indices(end=2, T=20, h=4, stride=2)
    assert idx.tolist() == [0, 0, 0, 0, 2, 4, 6, 8, 10]         # prefix + 4 current + 4 future
    assert clip_indices(end=19, T=20, h=4, stride=2).tolist()[-1] == 19


def test_rewind_modes():
    idx = np.array([3, 5, 7, 9, 11])
    assert rewind_indices(idx, RISE).tolist() == [3, 5, 7, 9, 11]
    assert rewind_indices(idx, PLATEAU).tolist() == [3] * 5
    assert rewind_indices(idx, DESCEND).tolist() == [11, 9, 7, 5, 3]
    with pytest.raises(ValueError, match="rewind mode"):
        rewind_indices(idx, "sideways")
    rng = random.Random(0)
    modes = [choose_rewind_mode(rng, 0.5, 0.1) for _ in range(20000)]
    assert modes.count(DESCEND) / 20000 == pytest.approx(0.5, abs=0.015)
    assert modes.count(PLATEAU) / 20000 == pytest.approx(0.1, abs=0.01)
    assert all(choose_rewind_mode(rng, 0.0, 0.0) == RISE for _ in range(100))


def test_prefix_randomization():
    rng = random.Random(1)
    out = [randomize_prefix(0.3, rng, 0.5) for _ in range(20000)]
    replaced = [v for v, r in out if r]
    assert len(replaced) / 20000 == pytest.approx(0.5, abs=0.015)
    assert all(v == 0.3 for v, r in out if not r)
    assert 0.0 <= min(replaced) and max(replaced) <= 1.0 and np.std(replaced) == pytest.approx(12 ** -0.5, abs=0.01)
    assert all(not r for _, r in (randomize_prefix(0.3, rng, 0.0) for _ in range(100)))


def test_prefix_noise():
    """A prefix value that is not randomised gets N(0, sigma^2), clipped to [0, 1]; randomised
    ones are U[0, 1] as before; noise 0 draws nothing more (old runs stay reproducible)."""
    rng = random.Random(2)
    out = [randomize_prefix(0.5, rng, 0.5, noise=0.05) for _ in range(20000)]
    kept = np.array([v for v, r in out if not r])
    assert len(kept) / 20000 == pytest.approx(0.5, abs=0.015)
    assert kept.mean() == pytest.approx(0.5, abs=0.003) and kept.std() == pytest.approx(0.05, rel=0.05)
    edge = np.array([v for v, r in (randomize_prefix(0.98, rng, 0.0, noise=0.2) for _ in range(2000))])
    assert edge.min() >= 0.0 and edge.max() == 1.0 and (edge == 1.0).mean() > 0.4
    a, b = random.Random(3), random.Random(3)
    assert [randomize_prefix(0.3, a, 0.5) for _ in range(50)] == \
        [randomize_prefix(0.3, b, 0.5, noise=0.0) for _ in range(50)]
    assert a.random() == b.random()
    with pytest.raises(ValueError, match="prefix_noise"):
        TrainConfig(datasets=["x"], output="y", prefix_noise=-0.1)


def synthetic_store(n_eps=6, T=40, size=32, stride=2) -> EpisodeStore:
    """A white square moving left to right; progress = t / (T - 1)."""
    frames, values, starts = [], [], []
    for e in range(n_eps):
        for t in range(T):
            im = np.zeros((size, size, 3), np.uint8)
            x = int(round(t / (T - 1) * (size - 6)))
            y = 4 + (e * 5) % (size - 10)
            im[y:y + 6, x:x + 6] = 255
            frames.append(im)
            values.append(t / (T - 1))
        starts.append(e * T)
    return EpisodeStore(frames=torch.from_numpy(np.stack(frames)), values=np.array(values, np.float32),
                        starts=np.array(starts), lengths=np.full(n_eps, T), text_ids=np.zeros(n_eps, int),
                        texts=["move the square to the right"], stride=stride)


def cfg(tmp_path, **kw):
    d = dict(datasets=["synthetic"], output=str(tmp_path / "ck"), preset="tiny", model_overrides=TINY, steps=8,
             batch_size=8, lr=3e-3, warmup_steps=2, save_every=0, log_every=1, progress_bar=False, threads=1)
    d.update(kw)
    return TrainConfig(**d)


def test_short_run_lowers_loss(tmp_path):
    res = train(cfg(tmp_path, steps=60, lambda_video=0.5), store=synthetic_store(), log=lambda *a: None)
    losses = [r["loss_value"] for r in res["history"]]
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10]), losses
    model = load_value_model(tmp_path / "ck", "tiny")
    assert model.checkpoint_id == res["checkpoint_id"]
    meta = read_checkpoint_config(tmp_path / "ck")["meta"]
    assert meta["step"] == 60 and meta["train_config"]["lambda_video"] == 0.5


def test_resume_continues_exactly(tmp_path, monkeypatch):
    """A run killed after its step-3 checkpoint and resumed matches an uninterrupted run."""
    from wvm_ros.core.model.wvm import WorldValueModel

    store = synthetic_store()
    full = train(cfg(tmp_path / "a", steps=6), store=store, log=lambda *a: None)
    real = WorldValueModel.training_loss
    calls = {"n": 0}

    def crash_at_4(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(WorldValueModel, "training_loss", crash_at_4)
    with pytest.raises(KeyboardInterrupt):
        train(cfg(tmp_path / "b", steps=6, save_every=3), store=store, log=lambda *a: None)
    monkeypatch.setattr(WorldValueModel, "training_loss", real)
    assert read_checkpoint_config(tmp_path / "b" / "ck")["meta"]["step"] == 3
    resumed = train(cfg(tmp_path / "b", steps=6, resume=True), store=store, log=lambda *a: None)
    assert resumed["steps"] == 6 and len(resumed["history"]) == 6
    assert [r["loss"] for r in resumed["history"]] == pytest.approx([r["loss"] for r in full["history"]], rel=1e-4)
    a = load_value_model(tmp_path / "a" / "ck", "tiny").state_dict()
    b = load_value_model(tmp_path / "b" / "ck", "tiny").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_nan_loss_stops_without_saving(tmp_path, monkeypatch):
    from wvm_ros.core.model.wvm import WorldValueModel

    real = WorldValueModel.training_loss
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        out = real(self, *a, **k)
        if calls["n"] == 5:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(WorldValueModel, "training_loss", flaky)
    c = cfg(tmp_path, steps=8, save_every=2)
    with pytest.raises(TrainingDiverged, match="step 5") as ei:
        train(c, store=synthetic_store(), log=lambda *a: None)
    assert ei.value.step == 5
    # the step-4 checkpoint is intact and loads
    meta = read_checkpoint_config(tmp_path / "ck")["meta"]
    assert meta["step"] == 4
    load_value_model(tmp_path / "ck", "tiny")
    assert not list((tmp_path / "ck").glob("*.tmp"))


def test_dataset_errors(tmp_path):
    with pytest.raises(TrainDataError, match="not a LeRobot dataset"):
        load_training_data([str(tmp_path)], (32, 32), 4, 2.0)
    with pytest.raises(TrainDataError, match="camera key 'observation.nope' not found"):
        load_training_data(["data/pusht-heldout"], (32, 32), 4, 2.0, camera_key="observation.nope", max_episodes=1)
    logs = []
    # a 0.25 Hz window needs 4 x 40 + 1 frames: shorter episodes are skipped and counted
    store = load_training_data(["data/pusht-heldout"], (32, 32), 4, 0.25, max_episodes=4, log=logs.append)
    assert store.skipped_short >= 1 and store.num_episodes == 4 - store.skipped_short
    assert any("skipped" in m for m in logs)
    assert store.frames.shape[1:] == (32, 32, 3) and store.frames.dtype == np.uint8
    with pytest.raises(TrainDataError, match="no usable episodes"):
        load_training_data(["data/pusht-heldout"], (32, 32), 4, 0.05, max_episodes=2, log=logs.append)


def test_cli_config_file_and_flags(tmp_path):
    from wvm_ros.cli.main import _build_parser
    from wvm_ros.cli.train import build_config

    f = tmp_path / "t.yaml"
    f.write_text("steps: 77\nlr: 0.0005\nlambda_video: 0.0\nmodel_overrides: {num_layers: 2}\n")
    args = _build_parser("train").parse_args(["train", "--config", str(f), "--dataset", "d1", "--output", "o",
                                              "--steps", "11", "--model-set", "sample_fps=3"])
    c = build_config(args)
    assert (c.steps, c.lr, c.lambda_video, c.datasets, c.output) == (11, 0.0005, 0.0, ["d1"], "o")
    assert c.model_overrides == {"num_layers": 2, "sample_fps": 3}
    assert (c.device, c.frame_cache) == ("cpu", None)
    args = _build_parser("train").parse_args(["train", "--dataset", "d1", "--output", "o", "--device", "cuda:1",
                                              "--frame-cache", "runs/fc", "--segment-weight", "3",
                                              "--segment-loss", "uniform"])
    c = build_config(args)
    assert (c.device, c.frame_cache, c.segment_weight, c.segment_loss) == ("cuda:1", "runs/fc", 3.0, "uniform")
    assert c.segment_loss == "uniform" and TrainConfig().segment_loss == "sampled"
    with pytest.raises(ValueError, match="invalid training hyper-parameters"):
        TrainConfig(steps=0)
    # each bad value is named with what was expected, NaN included, and nothing else is dumped
    with pytest.raises(ValueError) as e:
        TrainConfig(steps=0, lr=float("nan"), rewind_ratio=0.8, plateau_ratio=0.3)
    msg = str(e.value)
    assert "steps: expected >= 1, got 0" in msg and "lr: expected > 0, got nan" in msg
    assert "rewind_ratio + plateau_ratio: expected each >= 0, sum <= 1, got 0.8 + 0.3" in msg
    assert "TrainConfig(" not in msg and "batch_size" not in msg


def test_cli_resume_keeps_the_runs_settings(tmp_path):
    from wvm_ros.cli.main import _build_parser
    from wvm_ros.cli.train import build_config
    from wvm_ros.core.model import build_model, preset_config, save_checkpoint

    prev = cfg(tmp_path, batch_size=5, lr=0.002, lambda_video=0.0, steps=10).to_dict()
    save_checkpoint(build_model(preset_config("tiny", **TINY)), tmp_path / "ck", meta={"train_config": prev})
    args = _build_parser("train").parse_args(["train", "--output", str(tmp_path / "ck"), "--resume", "--steps", "20"])
    c = build_config(args)
    assert (c.batch_size, c.lr, c.lambda_video, c.steps, c.resume) == (5, 0.002, 0.0, 20, True)
    assert c.datasets == ["synthetic"] and c.model_overrides == TINY


def test_segment_weighting_draws_segment_clips_more_often():
    from wvm_ros.core.train import ClipSampler, clip_end_weights

    store = synthetic_store(n_eps=2, T=40, stride=2)
    mask = np.zeros(80, bool)
    mask[10:15] = True                       # a labelled segment in episode 0, frames 10..14
    store.segment_mask = mask
    assert clip_end_weights(store, h=4, segment_weight=1.0) is None        # uniform: the paper's sampling
    p = clip_end_weights(store, h=4, segment_weight=5.0)
    # clip ends whose current frames (end - 6 .. end) touch frames 10..14: ends 10..20
    touched = np.zeros(80, bool)
    touched[10:21] = True
    assert np.allclose(p[touched], 5 * p[~touched][0]) and np.allclose(p[~touched], p[~touched][0])
    assert p.sum() == pytest.approx(1.0)
    sampler = ClipSampler(store, 4, cfg(Path("/nonexistent"), segment_weight=5.0), seed=0)
    _, _, targets, _, _ = sampler.sample(4000)
    # the newest current frame's value says where the clip ended (rewinding reverses some clips)
    frac = np.mean([(10 / 39 - 1e-6 <= t.max() <= 20 / 39 + 1e-6) for t in targets.numpy()])
    expected = p[touched].sum()               # 55 / 124 = 0.44 (uniform would be 11 / 80 = 0.14)
    assert frac == pytest.approx(expected, abs=0.05) and frac > 2 * 11 / 80


def test_segment_loss_uniform_gives_importance_weights():
    """segment_loss "uniform": a boosted clip's value loss weighs 1 / segment_weight, so the value
    is fit as under uniform sampling; "sampled" and uniform sampling weigh every clip 1."""
    from wvm_ros.core.train import ClipSampler

    store = synthetic_store(n_eps=2, T=40, stride=2)
    mask = np.zeros(80, bool)
    mask[10:15] = True
    store.segment_mask = mask
    sampler = ClipSampler(store, 4, cfg(Path("/nonexistent"), segment_weight=5.0, segment_loss="uniform",
                                         rewind_ratio=0.0, plateau_ratio=0.0), seed=0)   # clips as recorded
    batch = sampler.sample(4000, with_weights=True)
    targets, w = batch[2].numpy(), batch[5].numpy()
    assert np.allclose(np.unique(w), [0.2, 1.0])
    boosted = w < 1
    # clips ending at frames 10..20 of either episode (the boosted ones are episode 0's): drawn
    # (5 * 11 + 11) / 124 = 0.53 of the time, weighted back to their uniform share 22 / 80 = 0.275
    in_reach = np.array([10 / 39 - 1e-6 <= t[-1] <= 20 / 39 + 1e-6 for t in targets])   # newest = the end
    assert in_reach[boosted].all() and in_reach.mean() == pytest.approx(66 / 124, abs=0.03)
    assert (w * in_reach).sum() / w.sum() == pytest.approx(22 / 80, abs=0.03)
    for kw in ({"segment_weight": 5.0, "segment_loss": "sampled"}, {"segment_weight": 1.0, "segment_loss": "uniform"}):
        s = ClipSampler(store, 4, cfg(Path("/nonexistent"), **kw), seed=0)
        assert np.all(s.sample(64, with_weights=True)[5].numpy() == 1.0)
    assert len(sampler.sample(8)) == 5          # without with_weights: the batch as before
    with pytest.raises(ValueError, match="segment_loss"):
        cfg(Path("/nonexistent"), segment_loss="importance")


def test_ema_weights_are_saved_and_resume_matches(tmp_path, monkeypatch):
    from wvm_ros.core.model.wvm import WorldValueModel
    from wvm_ros.core.train import WeightEMA

    lin = torch.nn.Linear(2, 1)
    ema = WeightEMA(lin, 0.9)
    start = lin.weight.detach().clone()
    with torch.no_grad():
        lin.weight.add_(1.0)
    ema.update(lin, step=100)                 # rate min(0.9, 101/110) = 0.9
    assert torch.allclose(ema.shadow["weight"], start + 0.1)
    with ema.applied(lin):
        assert torch.allclose(lin.weight, start + 0.1)
    assert torch.allclose(lin.weight, start + 1.0)       # raw weights back

    store = synthetic_store()
    full = train(cfg(tmp_path / "a", steps=6, ema_decay=0.9), store=store, log=lambda *a: None)
    real = WorldValueModel.training_loss
    calls = {"n": 0}

    def crash_at_4(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(WorldValueModel, "training_loss", crash_at_4)
    with pytest.raises(KeyboardInterrupt):
        train(cfg(tmp_path / "b", steps=6, save_every=3, ema_decay=0.9), store=store, log=lambda *a: None)
    monkeypatch.setattr(WorldValueModel, "training_loss", real)
    resumed = train(cfg(tmp_path / "b", steps=6, ema_decay=0.9, resume=True), store=store, log=lambda *a: None)
    assert [r["loss"] for r in resumed["history"]] == pytest.approx([r["loss"] for r in full["history"]], rel=1e-4)
    a = load_value_model(tmp_path / "a" / "ck", "tiny").state_dict()
    b = load_value_model(tmp_path / "b" / "ck", "tiny").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    raw = torch.load(tmp_path / "a" / "ck" / "training_state.pt", weights_only=False)["model_raw"]
    assert any(not torch.allclose(a[k], raw[k]) for k in a)  # the file holds the average, not the raw weights
    assert "EMA" in read_checkpoint_config(tmp_path / "a" / "ck")["meta"]["weights"]


def test_validation_keeps_the_best_checkpoint(tmp_path, monkeypatch):
    """Validation runs the streaming benchmark on a held-out split every val_every steps and
    keeps the best step (by VAL_SCORE) in <output>/best."""
    import wvm_ros.core.evaluation as E
    from wvm_ros.core.train import validation_score

    store = synthetic_store()
    T = 40
    frames = store.frames[:T].numpy()
    gt = np.r_[np.linspace(0, 0.6, 20), np.linspace(0.6, 0.4, 10), np.linspace(0.4, 1, 10)]
    eps = [E.EvalEpisode(episode_index=0, task="move the square to the right", kind="expert", frames=frames,
                         timestamps=np.arange(T) * 0.25, gt=np.linspace(0, 1, T)),
           E.EvalEpisode(episode_index=1, task="move the square to the right", kind="retry",
                         frames=np.concatenate([frames[:20], frames[20:10:-1], frames[10:20]]),
                         timestamps=np.arange(T) * 0.25, gt=gt)]
    monkeypatch.setattr(E, "load_lerobot_episodes", lambda root, **k: eps if root == "val" else [])
    res = train(cfg(tmp_path, steps=9, val_dataset="val", val_every=3), store=store, log=lambda *a: None)
    hist = res["val_history"]
    assert [v["step"] for v in hist] == [3, 6, 9]
    assert all(v["score"] == pytest.approx(validation_score(v), abs=1e-3) for v in hist)
    best = max(hist, key=lambda v: v["score"])
    assert res["best"]["step"] == best["step"]
    meta = read_checkpoint_config(tmp_path / "ck" / "best")["meta"]
    assert meta["step"] == best["step"] and meta["val"]["score"] == best["score"]
    model = load_value_model(tmp_path / "ck" / "best", "tiny")
    # the kept weights reproduce the validation score they were kept for
    again = E.evaluate(eps, [E.streaming_method(model)], progress=False).results["wvm"].aggregate.overall
    assert validation_score(again) == pytest.approx(best["score"], abs=1e-3)
    log = json.loads((tmp_path / "ck" / "train_log.json").read_text())
    assert log["best"]["step"] == best["step"] and len(log["val_history"]) == 3


def test_clips_carry_the_elapsed_time_of_their_newest_frame(tmp_path):
    """elapsed = (index of the newest current frame) / fps, whatever rewinding did to the frames;
    a model with the elapsed-time input trains on it, and needs a frame rate."""
    from wvm_ros.core.train import ClipSampler

    store = synthetic_store()
    store.fps = 10.0
    c = cfg(tmp_path, rewind_ratio=0.5, plateau_ratio=0.2)
    sampler = ClipSampler(store, 4, c, seed=0)
    frames, prefix, targets, tids, elapsed = sampler.sample(64)
    assert elapsed.shape == (64,) and torch.all(elapsed >= 0) and torch.all(elapsed <= 3.9 + 1e-6)
    # replay the sampler's draws: end index -> elapsed, for every rewind mode
    sampler2 = ClipSampler(store, 4, c, seed=0)
    eps = sampler2.np_rng.choice(store.num_episodes, size=64, p=sampler2.weights)
    for b, e in enumerate(eps):
        end = sampler2.rng.randrange(int(store.lengths[e]))
        choose_rewind_mode(sampler2.rng, c.rewind_ratio, c.plateau_ratio)
        randomize_prefix(0.0, sampler2.rng, c.prefix_random_p)
        assert float(elapsed[b]) == pytest.approx(end / 10.0)
    res = train(cfg(tmp_path, steps=30, model_overrides={**TINY, "elapsed_input": True}, lambda_video=0.5),
                store=store, log=lambda *a: None)
    model = load_value_model(tmp_path / "ck", "tiny")
    assert model.config.elapsed_input and model.elapsed_embedding[2].weight.abs().sum() > 0
    assert all(np.isfinite(r["loss"]) for r in res["history"])
    store.fps = None
    with pytest.raises(TrainDataError, match="no frame rate"):
        train(cfg(tmp_path, output=str(tmp_path / "ck2"), model_overrides={**TINY, "elapsed_input": True}),
              store=store, log=lambda *a: None)


def test_frame_cache_is_memory_mapped_equal_and_reused(tmp_path, monkeypatch):
    """--frame-cache: the frames land in a memory-mapped file equal to the in-memory copy; a second
    run with the same data and settings decodes nothing; other settings get their own cache."""
    import wvm_ros.core.evaluation as ev
    from wvm_ros.core.train import ClipSampler

    args = (["data/pusht-heldout"], (32, 32), 4, 2.0)
    mem = load_training_data(*args, max_episodes=3, log=lambda *a: None)
    logs = []
    cached = load_training_data(*args, max_episodes=3, log=logs.append, frame_cache=tmp_path / "fc")
    assert isinstance(cached.frames, np.memmap) and cached.frames.shape == mem.frames.shape
    assert np.array_equal(np.asarray(cached.frames), mem.frames)
    for k in ("values", "starts", "lengths", "text_ids", "segment_mask"):
        assert np.array_equal(getattr(cached, k), getattr(mem, k)), k
    assert (cached.texts, cached.stride, cached.fps) == (mem.texts, mem.stride, mem.fps)
    assert [p.name for p in (tmp_path / "fc").iterdir() if p.name.startswith(".")] == []   # no temp folder left
    # the sampler draws the same clips from either
    c = TrainConfig(datasets=["x"], output="o")
    a, b = ClipSampler(mem, 4, c, seed=3).sample(16), ClipSampler(cached, 4, c, seed=3).sample(16)
    assert all(torch.equal(x, y) for x, y in zip(a, b))

    def no_decoding(*a, **k):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(ev, "load_lerobot_episodes", no_decoding)
    logs.clear()
    again = load_training_data(*args, max_episodes=3, log=logs.append, frame_cache=tmp_path / "fc")
    assert np.array_equal(np.asarray(again.frames), mem.frames) and any("from the cache" in m for m in logs)
    with pytest.raises(AssertionError, match="decoded again"):     # other settings: another key
        load_training_data(*args, max_episodes=2, log=lambda *a: None, frame_cache=tmp_path / "fc")
    assert len([p for p in (tmp_path / "fc").iterdir() if not p.name.startswith(".")]) == 1


def test_frame_cache_failures_leave_nothing_half_written(tmp_path, monkeypatch):
    import shutil as sh

    import wvm_ros.core.evaluation as ev

    args = (["data/pusht-heldout"], (32, 32), 4, 2.0)
    real = ev.load_lerobot_episodes
    calls = []

    def fails_second_batch(*a, **k):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ev, "load_lerobot_episodes", fails_second_batch)
    with pytest.raises(KeyboardInterrupt):
        load_training_data(*args, max_episodes=20, log=lambda *a: None, frame_cache=tmp_path / "fc")
    assert list((tmp_path / "fc").iterdir()) == []
    monkeypatch.setattr(ev, "load_lerobot_episodes", real)
    # a cache whose frame file was cut short is rebuilt, not read
    logs = []
    st = load_training_data(*args, max_episodes=2, log=logs.append, frame_cache=tmp_path / "fc")
    want = np.array(st.frames)
    del st   # (a mapped file must not be cut short under a live mapping: reading it would fault)
    (key_dir,) = list((tmp_path / "fc").iterdir())
    with open(key_dir / "frames.u8", "r+b") as f:
        f.truncate(1000)
    st2 = load_training_data(*args, max_episodes=2, log=logs.append, frame_cache=tmp_path / "fc")
    assert any("rebuilding" in m for m in logs) and np.array_equal(np.asarray(st2.frames), want)
    # a partial cache of a run that was killed (its pid is gone) is removed; a live one is kept
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / "fc" / f".{key_dir.name}.tmp-{int(gone.stdout)}"
    not_a_pid = tmp_path / "fc" / f".{key_dir.name}.tmp-{os.getpid()}x"   # not a pid: also removed
    mine = tmp_path / "fc" / f".{key_dir.name}.tmp-1"                 # pid 1 is alive
    for d in (stale, not_a_pid, mine):
        d.mkdir()
    import shutil as _sh
    _sh.rmtree(key_dir)
    logs.clear()
    load_training_data(*args, max_episodes=2, log=logs.append, frame_cache=tmp_path / "fc")
    assert not stale.exists() and not not_a_pid.exists() and mine.exists()
    assert any("left by a run that stopped" in m for m in logs)
    # not enough disk: a clear error naming the folder, before decoding
    monkeypatch.setattr(sh, "disk_usage", lambda p: sh._ntuple_diskusage(10**9, 10**9, 1000))
    with pytest.raises(TrainDataError, match=r"frame cache .*fc2.* GB free"):
        load_training_data(*args, max_episodes=2, log=lambda *a: None, frame_cache=tmp_path / "fc2")


def test_training_from_the_frame_cache(tmp_path):
    c = cfg(tmp_path, datasets=["data/pusht-heldout"], max_episodes=3, steps=4, frame_cache=str(tmp_path / "fc"))
    res = train(c, log=lambda *a: None)
    assert res["steps"] == 4 and (tmp_path / "fc").is_dir()
    assert read_checkpoint_config(tmp_path / "ck")["meta"]["train_config"]["frame_cache"] == str(tmp_path / "fc")


def test_device_errors(tmp_path):
    from wvm_ros.core.train import training_device

    assert training_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="expected cpu, cuda or cuda:N"):
        training_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            train(cfg(tmp_path, device="cuda"), store=synthetic_store(), log=lambda *a: None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (runs on the lent GPU machine)")
def test_short_run_on_cuda_lowers_loss_and_loads_on_cpu(tmp_path):
    store = synthetic_store()
    store.fps = 10.0
    res = train(cfg(tmp_path, steps=60, lambda_video=0.5, device="cuda", ema_decay=0.9,
                    model_overrides={**TINY, "elapsed_input": True}), store=store, log=lambda *a: None)
    losses = [r["loss_value"] for r in res["history"]]
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10]), losses
    model = load_value_model(tmp_path / "ck", "tiny")
    assert next(model.parameters()).device.type == "cpu" and model.checkpoint_id == res["checkpoint_id"]
    # resume on the GPU continues from the saved state
    res2 = train(cfg(tmp_path, steps=70, lambda_video=0.5, device="cuda", ema_decay=0.9, resume=True,
                     model_overrides={**TINY, "elapsed_input": True}), store=store, log=lambda *a: None)
    assert res2["steps"] == 70


def test_flip_frames_maps_pixels():
    """Each mirror moves a marked pixel where it should; anti-transpose is an involution; a bad
    name or a non-square image for a transpose is a clear error."""
    from wvm_ros.core.train import FLIPS, flip_frames

    im = torch.zeros(2, 5, 5, 3, dtype=torch.uint8)
    im[:, 1, 3, 0] = 255                                   # y = 1, x = 3
    where = {"none": (1, 3), "horizontal": (1, 1), "vertical": (3, 3), "transpose": (3, 1),
             "anti-transpose": (1, 3)}                      # x -> 4 - y = 3, y -> 4 - x = 1
    im[:, 0, 2, 1] = 255                                   # a second mark: y = 0, x = 2
    second = {"none": (0, 2), "horizontal": (0, 2), "vertical": (4, 2), "transpose": (2, 0),
              "anti-transpose": (2, 4)}
    assert set(where) == set(FLIPS)
    for f in FLIPS:
        out = flip_frames(im, f)
        assert out.shape == im.shape
        assert out[1, where[f][0], where[f][1], 0] == 255 and int(out[..., 0].sum()) == 2 * 255, f
        assert out[0, second[f][0], second[f][1], 1] == 255 and int(out[..., 1].sum()) == 2 * 255, f
        assert torch.equal(flip_frames(out, f), im) if f != "none" else torch.equal(out, im)
    with pytest.raises(ValueError, match="flip: expected one of"):
        flip_frames(im, "diagonal")
    with pytest.raises(ValueError, match="needs square images, got H x W = 5 x 4"):
        flip_frames(im[:, :, :4], "anti-transpose")
    assert flip_frames(im[:, :, :4], "horizontal").shape == (2, 5, 4, 3)
    with pytest.raises(ValueError, match="flip: expected one of 'none', 'horizontal'"):
        TrainConfig(datasets=["x"], output="y", flip="mirror")


def test_sampler_flips_whole_clips_half_the_time():
    """With flip on, a clip is mirrored as a whole (all 1 + 2h frames) about half the time, its
    targets unchanged; with flip "none" the sampler draws exactly as before."""
    from wvm_ros.core.train import ClipSampler

    store = synthetic_store(n_eps=3, T=40, size=32, stride=2)
    base = cfg(Path("/nonexistent"), rewind_ratio=0.0, plateau_ratio=0.0)
    on = cfg(Path("/nonexistent"), rewind_ratio=0.0, plateau_ratio=0.0, flip="horizontal")
    frames, _, targets, _, _ = ClipSampler(store, 4, on, seed=0).sample(400)
    # the square moves left to right in the store: its x position rises with the target
    bright = frames[:, :, 0] > 0                                   # [B, 9, H, W]
    xs = bright.float().sum(dim=2).argmax(dim=-1).numpy()          # leftmost column of the square
    cols = np.arange(32)
    xc = np.array([[cols[bright[b, i].any(0).numpy()].mean() for i in range(9)] for b in range(len(xs))])
    expected = np.array([[t * (32 - 6) + 2.5 for t in row] for row in targets.numpy()])
    plain = np.all(np.abs(xc[:, 1:5] - expected) < 1.01, axis=1)
    mirrored = np.all(np.abs(xc[:, 1:5] - (31 - expected)) < 1.01, axis=1)
    assert np.all(plain ^ mirrored)                               # every clip is one or the other
    # the prefix and future frames follow their clip (a mirrored square's x is 31 - x)
    assert np.all((xc[mirrored] > 0).all(axis=1)) and mirrored.mean() == pytest.approx(0.5, abs=0.08)
    a = ClipSampler(store, 4, base, seed=3).sample(64)
    b = ClipSampler(store, 4, cfg(Path("/nonexistent"), rewind_ratio=0.0, plateau_ratio=0.0, flip="none"),
                    seed=3).sample(64)
    # (elapsed is NaN here: the synthetic store has no fps)
    assert all(torch.allclose(x, y, rtol=0, atol=0, equal_nan=True) for x, y in zip(a, b))
    wide = EpisodeStore(frames=store.frames[:, :, :30].contiguous(), values=store.values, starts=store.starts,
                        lengths=store.lengths, text_ids=store.text_ids, texts=store.texts, stride=2)
    with pytest.raises(ValueError, match="needs square training frames, got H x W = 32 x 30"):
        ClipSampler(wide, 4, cfg(Path("/nonexistent"), flip="anti-transpose"), seed=0)


def test_pusht_anti_transpose_symmetry():
    """Why `--flip anti-transpose` is sound for PushT data: mirroring the start about the goal's
    axis (x, y, theta) -> (512 - y, 512 - x, pi/2 - theta) gives the mirrored trajectory of the
    scripted expert, to the bit, and the rendered frames are the anti-transposed ones (up to the
    rasteriser's half-pixel at edges)."""
    import math

    from wvm_ros.core.sim.pusht import PushTSim
    from wvm_ros.core.sim.scripted import ScriptedPushTPolicy
    from wvm_ros.core.train import flip_frames

    sim = PushTSim(image_size=(96, 96), difficulty=0.5, control_hz=10)

    def run(seed, mirror):
        s = sim.reset(seed)
        if mirror:
            sim.reset_to([512 - s[1], 512 - s[0]], [512 - s[3], 512 - s[2], math.pi / 2 - s[4]])
        pol = ScriptedPushTPolicy(seed=seed)
        states, images = [sim.state.copy()], [sim.render()]
        for _ in range(30):
            sim.step(pol.act(sim.state))
            states.append(sim.state.copy())
            images.append(sim.render())
        return np.array(states), np.stack(images)

    for seed in (3, 7):
        a, ia = run(seed, False)
        b, ib = run(seed, True)
        m = np.column_stack([512 - a[:, 1], 512 - a[:, 0], 512 - a[:, 3], 512 - a[:, 2], math.pi / 2 - a[:, 4]])
        d = b - m
        d[:, 4] = (d[:, 4] + math.pi) % (2 * math.pi) - math.pi
        assert np.abs(d).max() < 1e-6
        assert np.abs(a[0] - a[-1]).max() > 5                       # it did move
        flipped = flip_frames(torch.from_numpy(ia), "anti-transpose").numpy().astype(int)
        differ = (np.abs(flipped - ib.astype(int)).sum(-1) > 60).mean()
        assert differ < 0.01
        assert (np.abs(ia.astype(int) - ib.astype(int)).sum(-1) > 60).mean() > 3 * differ   # not trivially equal
