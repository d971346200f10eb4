"""The World Value Model (WVM) on LeRobot's FastWAM parts: presets, model, checkpoints.

    from wvm_ros.core.model import load_value_model, ModelLoadError
    model = load_value_model("models/wvm-tiny-pusht", preset="tiny", device="cpu")
    latents = model.encode_frames(frames_uint8)            # [N, C, h, w], per frame (cacheable)
    chunk = model.predict_chunk(window, prefix_value, model.embed_text("push the T"))  # [B, h]

See docs/model.md.
"""
from .checkpoint import (
    CONFIG,
    TRAINING_STATE,
    WEIGHTS,
    ModelLoadError,
    build_model,
    file_hash,
    load_value_model,
    read_checkpoint_config,
    save_checkpoint,
)
from .config import PRESETS, WVMConfig, parse_overrides, preset_config
from .wvm import WorldValueModel

__all__ = [
    "CONFIG", "TRAINING_STATE", "WEIGHTS", "ModelLoadError", "PRESETS", "WVMConfig", "WorldValueModel",
    "build_model", "file_hash", "load_value_model", "parse_overrides", "preset_config", "read_checkpoint_config", "save_checkpoint",
]
