"""The shipped checkpoint models/wvm-tiny-pusht loads offline and estimates progress."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wvm_ros.core.model import file_hash, load_value_model

CKPT = Path(__file__).resolve().parents[1] / "models" / "wvm-tiny-pusht"


@pytest.mark.skipif(not (CKPT / "model.safetensors").is_file(), reason="shipped checkpoint not present")
def test_shipped_checkpoint_loads_and_estimates():
    from wvm_ros.core.streaming import StreamingValueEstimator

    size = sum(f.stat().st_size for f in CKPT.iterdir())
    assert size < 50e6
    model = load_value_model(CKPT, "tiny")
    assert not model.untrained and model.checkpoint_id == file_hash(CKPT / "model.safetensors")
    card = (CKPT / "README.md").read_text()
    assert model.checkpoint_id in card
    metrics = json.loads((CKPT / "eval_metrics.json").read_text())["model"]
    assert f"{metrics['retry_voc']:.3f}" in card and f"{metrics['hesitation_rmse']:.3f}" in card
    est = StreamingValueEstimator(model, "Push the T-shaped block onto the T-shaped target.")
    rng = np.random.default_rng(0)
    outs = [est.push(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8), i * 0.5) for i in range(6)]
    assert outs[0] is None and all(0.0 <= o.progress <= 1.0 for o in outs[1:])


SUCC = Path(__file__).resolve().parents[1] / "models" / "success-pusht"


@pytest.mark.skipif(not (SUCC / "model.safetensors").is_file(), reason="shipped success classifier not present")
def test_shipped_success_classifier_loads_and_tells_done_from_not_done():
    """Its card names its id and validation metrics; on a live scripted attempt (a scene seed in
    neither its data nor the experiment's seeds) it says 'not done' at the start and 'done' on
    the solved scene."""
    from wvm_ros.core.sim import PushTSim, ScriptedPushTPolicy
    from wvm_ros.core.success import SuccessEstimator, load_success

    assert sum(f.stat().st_size for f in SUCC.iterdir()) < 5e6
    model = load_success(SUCC)
    card = (SUCC / "README.md").read_text()
    assert model.checkpoint_id in card
    val = json.loads((SUCC / "metrics.json").read_text())
    assert f"{val['near_success']['auc']:.3f}" in card and f"{val['all']['accuracy']:.3f}" in card
    est = SuccessEstimator(model)
    sim = PushTSim(image_size=(96, 96), difficulty=0.5)
    try:
        state = sim.reset(seed=424242)
        pol = ScriptedPushTPolicy(injections=[], seed=424242)
        start = est.push(sim.render())[0]
        after, t_success = [], None
        for step in range(int(40 * sim.control_hz)):
            if sim.success and t_success is None:
                t_success = step
            if t_success is not None:
                after.append(est.push(sim.render())[0])
                if len(after) >= 10:
                    break
            state = sim.step(pol.act(state)).state
    finally:
        sim.close()
    assert t_success is not None, "the scripted policy did not solve scene 424242"
    assert start < 0.1 and np.median(after) > 0.9, (start, after)


NOCLOCK = Path(__file__).resolve().parents[1] / "models" / "wvm-tiny-pusht-noclock"


@pytest.mark.skipif(not ((CKPT / "model.safetensors").is_file() and (NOCLOCK / "model.safetensors").is_file()),
                    reason="shipped checkpoints not present")
def test_shipped_checkpoint_uses_the_clock_and_the_noclock_one_does_not():
    """The default checkpoint has the elapsed-time input: the same frames give different values
    early and late in an attempt. The one with the paper's inputs only (models/wvm-tiny-pusht-noclock)
    loads, is named in its card with its metrics, and ignores the clock."""
    import torch

    model = load_value_model(CKPT, "tiny")
    assert model.config.elapsed_input
    noclock = load_value_model(NOCLOCK, "tiny")
    assert not noclock.config.elapsed_input and noclock.checkpoint_id == file_hash(NOCLOCK / "model.safetensors")
    assert sum(f.stat().st_size for f in NOCLOCK.iterdir()) < 50e6
    card = (NOCLOCK / "README.md").read_text()
    assert noclock.checkpoint_id in card
    metrics = json.loads((NOCLOCK / "eval_metrics.json").read_text())["model"]
    assert f"{metrics['retry_voc']:.3f}" in card and f"{metrics['hesitation_rmse']:.3f}" in card

    rng = np.random.default_rng(0)
    text = model.embed_text("Push the T-shaped block onto the T-shaped target.")
    for m, uses_clock in ((model, True), (noclock, False)):
        lat = m.encode_frames(rng.integers(0, 255, (5, 96, 96, 3), dtype=np.uint8))[None]
        with torch.no_grad():
            early = m.predict_chunk(lat, torch.tensor([0.2]), text, elapsed_s=torch.tensor([2.0]))
            late = m.predict_chunk(lat, torch.tensor([0.2]), text, elapsed_s=torch.tensor([20.0]))
        assert ((early - late).abs().max() > 1e-3) == uses_clock


OLD_DEFAULT = Path(__file__).resolve().parents[1] / "models" / "wvm-tiny-pusht-480"


@pytest.mark.skipif(not ((CKPT / "model.safetensors").is_file() and (OLD_DEFAULT / "model.safetensors").is_file()),
                    reason="shipped checkpoints not present")
def test_shipped_checkpoint_card_states_its_recipe_and_the_default_before_loads():
    """The default's card states the validation record that training wrote into its config (the
    split and step it was chosen on) and its recipe (2,400 attempts in ten datasets, 4800 steps);
    the default before it (480 attempts) still loads and is named in its own card."""
    meta = json.loads((CKPT / "config.json").read_text())["meta"]
    val = meta["val"]
    assert val["dataset"] == "runs/data/pusht-val" and meta["step"] == val["step"]
    card = (CKPT / "README.md").read_text()
    assert f"{val['expert_voc']:.3f} / {val['retry_voc']:.3f} / {val['hesitation_rmse']:.3f}" in card
    assert len(meta["train_config"]["datasets"]) == 10 and meta["train_config"]["steps"] == 4800
    old = load_value_model(OLD_DEFAULT, "tiny")
    assert not old.untrained and old.config.elapsed_input and tuple(old.config.image_size) == (96, 96)
    assert old.checkpoint_id != load_value_model(CKPT, "tiny").checkpoint_id
    assert old.checkpoint_id in (OLD_DEFAULT / "README.md").read_text()
    assert sum(f.stat().st_size for f in OLD_DEFAULT.iterdir()) < 50e6


@pytest.mark.skipif(not (CKPT / "model.safetensors").is_file(), reason="shipped checkpoint not present")
def test_shipped_value_offsets_were_fitted_on_validation_splits_for_these_weights():
    """The shipped WVMs' value offsets (docs/model.md, "Value offset"): fitted for exactly these
    weights, on the two validation splits only (never the held-out one), stated in the cards,
    and what the streaming estimator adds to the published value."""
    from wvm_ros.core.streaming import StreamingValueEstimator

    for ck, offset in ((CKPT, 0.0212), (CKPT.parent / "wvm-tiny-pusht-novideo", 0.0317)):
        model = load_value_model(ck, "tiny")
        cal = json.loads((ck / "config.json").read_text())["calibration"]
        assert model.value_offset == pytest.approx(offset) == pytest.approx(cal["value_offset"])
        assert cal["checkpoint_id"] == model.checkpoint_id
        assert [c["split"] for c in cal["fitted_on"]] == ["runs/data/pusht-val", "runs/data/pusht-val150"]
        assert not any("heldout" in c["split"] for c in cal["fitted_on"])
        assert f"{offset:+.4f}" in (ck / "README.md").read_text()
        assert StreamingValueEstimator(model, "t").value_offset == pytest.approx(offset)
