"""WVM checkpoints: a directory with `model.safetensors` + `config.json` (+ `training_state.pt`
when saved by the trainer, for resuming).

`config.json` may hold a `calibration` object, written by `wvm calibrate-value` after training:
`{"value_offset": float, ...}` (with what it was fitted on). The loaded model carries it as
`model.value_offset` (0.0 without one) and `model.calibration`; the streaming estimator adds
the offset to the values it publishes (wvm_ros.core.streaming). It does not change the
weights or the checkpoint id (the hash of `model.safetensors`).

`load_value_model(checkpoint, preset, device)` is the one entry point the nodes use.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import PRESETS, WVMConfig, preset_config
from .wvm import WorldValueModel

FORMAT = "wvm-checkpoint"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TRAINING_STATE = "training_state.pt"


class ModelLoadError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not match the expected preset / shapes."""


def build_model(config: WVMConfig | str, device: str | torch.device = "cpu", seed: int | None = None) -> WorldValueModel:
    cfg = preset_config(config) if isinstance(config, str) else config
    if seed is not None:
        torch.manual_seed(seed)
    if str(device) == "meta":
        with torch.device("meta"):
            return WorldValueModel(cfg)
    model = WorldValueModel(cfg).to(device)
    if model._vae is not None:
        model._vae.device = torch.device(device)
    return model


def file_hash(path: str | Path, n: int = 12) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:n]


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(model: WorldValueModel, path: str | Path, meta: dict[str, Any] | None = None,
                    training_state: dict[str, Any] | None = None) -> str:
    """Write model.safetensors + config.json (+ training_state.pt) into `path`, each file
    atomically (written to a temporary name, then renamed). Returns the checkpoint id."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    for k, v in state.items():
        if not torch.isfinite(v).all():
            raise ValueError(f"refusing to save a checkpoint with non-finite weights ({k}) to {path}")
    _atomic_write(path / WEIGHTS, lambda tmp: save_file(state, tmp, metadata={"format": FORMAT}))
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "preset": model.config.name,
           "config": model.config.to_dict(), "meta": meta or {}}
    _atomic_write(path / CONFIG, lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=2) + "\n"))
    if training_state is not None:
        _atomic_write(path / TRAINING_STATE, lambda tmp: torch.save(training_state, tmp))
    return file_hash(path / WEIGHTS)


def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    cfg_path = path / CONFIG
    try:
        doc = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"checkpoint {path}: {CONFIG} is missing") from None
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"checkpoint {path}: cannot read {CONFIG}: {e}") from e
    if doc.get("format") != FORMAT or "config" not in doc:
        raise ModelLoadError(f"checkpoint {path}: {CONFIG} is not a WVM checkpoint config (format={doc.get('format')!r})")
    return doc


def read_calibration(doc: dict[str, Any], path: str | Path = "?") -> tuple[dict[str, Any], float]:
    """The `calibration` object of a checkpoint config and its value offset ({} and 0.0 if none).
    A malformed one is a ModelLoadError naming the checkpoint and what was expected."""
    from wvm_ros.core.streaming import MAX_VALUE_OFFSET

    cal = doc.get("calibration")
    if cal is None:
        return {}, 0.0
    if not isinstance(cal, dict) or "value_offset" not in cal:
        raise ModelLoadError(f"checkpoint {path}: {CONFIG} 'calibration' must be an object with 'value_offset', "
                             f"got {cal!r}")
    off = cal["value_offset"]
    if isinstance(off, bool) or not isinstance(off, (int, float)) or not abs(float(off)) <= MAX_VALUE_OFFSET:
        raise ModelLoadError(f"checkpoint {path}: {CONFIG} calibration.value_offset must be a finite number within "
                             f"+-{MAX_VALUE_OFFSET:g}, got {off!r}")
    return dict(cal), float(off)


def write_calibration(path: str | Path, calibration: dict[str, Any] | None) -> None:
    """Set (or, with None, remove) the `calibration` object of checkpoint `path`'s config.json,
    atomically; the weights are not touched."""
    path = Path(path)
    doc = read_checkpoint_config(path)
    if calibration is None:
        doc.pop("calibration", None)
    else:
        read_calibration({"calibration": calibration}, path)   # validate before writing
        doc["calibration"] = calibration
    _atomic_write(path / CONFIG, lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=2) + "\n"))


def load_value_model(checkpoint: str | os.PathLike | None, preset: str | None = "tiny",
                     device: str | torch.device = "cpu") -> WorldValueModel:
    """Build the model of `preset` and load `checkpoint` into it.

    checkpoint None -> randomly initialised (model.untrained True, checkpoint_id "UNTRAINED").
    preset None -> the checkpoint's own preset. Missing / unreadable / mismatched checkpoint ->
    ModelLoadError naming the path, the expected preset and the offending shapes.
    """
    if preset is not None and preset not in PRESETS:
        raise ModelLoadError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    if checkpoint is None:
        if preset is None:
            raise ModelLoadError("load_value_model: give a checkpoint or a preset")
        model = build_model(preset, device)
        model.eval()
        return model

    path = Path(checkpoint).expanduser()
    if path.is_file() and path.name == WEIGHTS:
        path = path.parent
    want = f"preset {preset!r}" if preset else "a WVM checkpoint"
    if not path.exists():
        raise ModelLoadError(f"checkpoint {path} does not exist (expected a directory with {WEIGHTS} and {CONFIG} "
                             f"for {want})")
    if not path.is_dir():
        raise ModelLoadError(f"checkpoint {path} is not a directory (expected {WEIGHTS} + {CONFIG} for {want})")
    weights = path / WEIGHTS
    if not weights.is_file():
        raise ModelLoadError(f"checkpoint {path}: {WEIGHTS} is missing (expected weights for {want})")
    doc = read_checkpoint_config(path)
    ck_preset = doc.get("preset")
    if preset is not None and ck_preset != preset:
        raise ModelLoadError(f"checkpoint {path} holds preset {ck_preset!r} but preset {preset!r} was expected")
    try:
        cfg = WVMConfig.from_dict(doc["config"])
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"checkpoint {path}: invalid config for preset {ck_preset!r}: {e}") from e
    if ck_preset not in PRESETS:
        raise ModelLoadError(f"checkpoint {path}: unknown preset {ck_preset!r}; expected one of {sorted(PRESETS)}")
    model = build_model(cfg, device)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"checkpoint {path}: cannot read {WEIGHTS}: {e}") from e
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append("shape mismatch: " + "; ".join(f"{k} expected {expected[k]} got {got[k]}" for k in wrong[:5]))
        if missing:
            parts.append(f"{len(missing)} missing tensors (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[:3]})")
        raise ModelLoadError(f"checkpoint {path} does not match preset {cfg.name!r} "
                             f"(latent {cfg.latent_shape}, video hidden {cfg.video_hidden}, value hidden "
                             f"{cfg.value_hidden}, {cfg.num_layers} layers): " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    model.eval()
    model.calibration, model.value_offset = read_calibration(doc, path)
    model.untrained = False
    model.checkpoint_id = file_hash(weights)
    fitted_for = model.calibration.get("checkpoint_id")
    if fitted_for not in (None, "?", model.checkpoint_id):
        raise ModelLoadError(f"checkpoint {path}: its calibration was fitted for weights {fitted_for} but "
                             f"{WEIGHTS} is {model.checkpoint_id} (run `wvm calibrate-value` again, or "
                             f"`wvm calibrate-value --remove`)")
    model.checkpoint_path = str(path)
    return model
