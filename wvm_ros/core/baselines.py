"""Single-frame progress regressor: the no-temporal-context baseline of the value benchmark.

The stand-in for a static-image VLM critic (WVM_NOTES.md, "Published numbers"): it sees one
frame and nothing else (no history, no prefix value), and regresses progress in [0, 1].
A small convolutional encoder (stages of strided 3x3 conv, GroupNorm, SiLU) with global
average pooling and an MLP head; the width is configurable so its parameter count can match the WVM preset
it is compared with.

It trains on the same episodes and the same targets as the WVM trainer (`wvm_ros.core.train`):
the dataset's per-frame `progress` column when present, else v_t = t / (T - 1):
`train_single_frame(frames_per_episode, targets=...)`.

Checkpoint format (a directory): `model.safetensors` (weights) + `config.json`
(`{"kind": "single_frame_regressor", "version": 1, "config": {...}, "training": {...}}`).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

KIND = "single_frame_regressor"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class BaselineLoadError(RuntimeError):
    """A baseline checkpoint that is missing, unreadable or does not match its config."""


@dataclass
class SingleFrameConfig:
    # defaults: 1.83M parameters, the size of the `tiny` WVM (1.83M), at its image size
    image_size: tuple[int, int] = (64, 64)  # (H, W) the frames are resized to
    channels: tuple[int, ...] = (32, 64, 128, 256, 512)  # one stage (strided conv first) per entry
    hidden: int = 512  # MLP head width
    convs_per_stage: int = 1  # 3x3 convs per stage (the first one strided)

    def __post_init__(self):
        self.image_size = tuple(int(v) for v in self.image_size)
        self.channels = tuple(int(v) for v in self.channels)
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise ValueError(f"image_size: expected (H, W) with both >= 8, got {self.image_size}")
        self.convs_per_stage = int(self.convs_per_stage)
        if self.convs_per_stage < 1:
            raise ValueError(f"convs_per_stage: expected >= 1, got {self.convs_per_stage}")
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels: expected a non-empty list of positive widths, got {self.channels}")


def _groups(c: int) -> int:
    for g in (8, 4, 2, 1):
        if c % g == 0:
            return g
    return 1


class SingleFrameRegressor(nn.Module):
    """One RGB frame -> progress in [0, 1]. No temporal context of any kind."""

    def __init__(self, config: SingleFrameConfig | None = None):
        super().__init__()
        self.config = config or SingleFrameConfig()
        layers: list[nn.Module] = []
        c_in = 3
        for c in self.config.channels:
            for j in range(self.config.convs_per_stage):
                layers += [
                    nn.Conv2d(c_in if j == 0 else c, c, 3, stride=2 if j == 0 else 1, padding=1),
                    nn.GroupNorm(_groups(c), c),
                    nn.SiLU(),
                ]
            c_in = c
        self.encoder = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(c_in, self.config.hidden), nn.SiLU(), nn.Linear(self.config.hidden, 1))
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1), persistent=False)
        self.checkpoint_id = "UNTRAINED"
        self.untrained = True

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) float in [0, 1] at config.image_size -> (B,) progress logits' sigmoid."""
        h = self.encoder((x - self.mean) / self.std)
        h = h.mean(dim=(2, 3))
        return torch.sigmoid(self.head(h).squeeze(-1))

    def preprocess(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 RGB (or one (H, W, 3) frame) -> (N, 3, h, w) float at image_size."""
        t = torch.as_tensor(np.asarray(frames))
        if t.ndim == 3:
            t = t.unsqueeze(0)
        if t.ndim != 4 or t.shape[-1] != 3:
            raise ValueError(f"frames: expected (N, H, W, 3) RGB, got shape {tuple(t.shape)}")
        x = t.permute(0, 3, 1, 2).float().div_(255.0)
        if tuple(x.shape[-2:]) != self.config.image_size:
            x = F.interpolate(x, size=self.config.image_size, mode="bilinear", antialias=True, align_corners=False)
        return x

    @torch.no_grad()
    def predict(self, frames: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Progress of each frame on its own: (N, H, W, 3) uint8 -> (N,) float32."""
        self.eval()
        dev = next(self.parameters()).device
        out = []
        for i in range(0, len(frames), batch_size):
            out.append(self(self.preprocess(frames[i : i + batch_size]).to(dev)).float().cpu())
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros(0, np.float32)


def _weights_id(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def save_single_frame(model: SingleFrameRegressor, path: str | Path, training: dict | None = None,
                      kind: str = KIND) -> Path:
    """Write `model.safetensors` + `config.json` into directory `path` (created). `kind` names what
    the network was trained for (the success classifier of wvm_ros.core.success shares it)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp), metadata={"kind": kind, "version": str(FORMAT_VERSION)})
    tmp.replace(path / WEIGHTS_FILE)
    meta = {
        "kind": kind,
        "version": FORMAT_VERSION,
        "config": asdict(model.config),
        "num_parameters": model.num_parameters(),
        "checkpoint_id": _weights_id(state),
        "training": training or {},
    }
    (path / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return path


def load_single_frame(path: str | Path, device: str = "cpu", kind: str = KIND,
                      cls: type[SingleFrameRegressor] = SingleFrameRegressor,
                      what: str = "single-frame baseline") -> SingleFrameRegressor:
    """Load a checkpoint directory written by `save_single_frame` (of this `kind`, as a `cls`);
    BaselineLoadError on any mismatch."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg_path, w_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not path.is_dir():
        raise BaselineLoadError(f"{what} checkpoint {path}: not a directory "
                                f"(expected a folder with {CONFIG_FILE} and {WEIGHTS_FILE})")
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise BaselineLoadError(f"{what} checkpoint {path}: missing {p.name}")
    try:
        meta = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BaselineLoadError(f"{cfg_path}: unreadable ({e}); expected the JSON written by save_single_frame") from e
    if meta.get("kind") != kind:
        hint = ("is this a WVM checkpoint? pass it as --checkpoint / --no-video-checkpoint"
                if meta.get("kind") is None else f"a {meta.get('kind')} checkpoint is not a {what}")
        raise BaselineLoadError(f"{cfg_path}: kind {meta.get('kind')!r}, expected {kind!r} ({hint})")
    try:
        config = SingleFrameConfig(**meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise BaselineLoadError(f"{cfg_path}: bad config ({e})") from e
    model = cls(config)
    try:
        state = load_file(str(w_path))
    except Exception as e:  # safetensors raises several types for corrupt files
        raise BaselineLoadError(f"{w_path}: unreadable safetensors file ({e})") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise BaselineLoadError(f"{w_path}: weights do not match the config in {cfg_path} "
                                f"(image_size {config.image_size}, channels {config.channels}): {e}") from e
    model.checkpoint_id = _weights_id(state)
    model.untrained = False
    return model.to(device).eval()


def time_targets(num_frames: int) -> np.ndarray:
    """v_t = t / (T - 1): the WVM trainer's target when a dataset has no `progress` column
    (wvm_ros.core.train; the end-inclusive form of the paper's t / T, see groundtruth.py)."""
    return np.arange(num_frames, dtype=np.float32) / max(num_frames - 1, 1)


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    first_loss: float
    seconds: float
    num_frames: int
    num_episodes: int
    losses: list[float] = field(default_factory=list)


def train_single_frame(
    episodes: Sequence[np.ndarray],
    *,
    targets: Sequence[np.ndarray] | None = None,
    config: SingleFrameConfig | None = None,
    steps: int = 2000,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    augment: bool = True,
    progress: bool = True,
    model: SingleFrameRegressor | None = None,
    loss: str = "mse",
    desc: str = "single-frame baseline",
) -> tuple[SingleFrameRegressor, TrainResult]:
    """Train the regressor on frames of `episodes` ((T, H, W, 3) uint8 each).

    targets: per-episode (T,) progress; default `time_targets(T)` (the WVM's target).
    AdamW, cosine decay to 0.1 x lr, MSE loss (`loss="bce"`: binary cross-entropy, for 0/1
    targets such as the success classifier's); augmentation: small random shifts
    (pad-and-crop, 4 px) and brightness jitter.
    """
    from tqdm.auto import tqdm

    if not episodes:
        raise ValueError("train_single_frame: no episodes to train on")
    if loss not in ("mse", "bce"):
        raise ValueError(f"train_single_frame: loss {loss!r}; expected 'mse' or 'bce'")
    if targets is not None and len(targets) != len(episodes):
        raise ValueError(f"train_single_frame: {len(episodes)} episodes but {len(targets)} target arrays")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = model or SingleFrameRegressor(config)
    # frames resized once, kept as uint8 to bound memory
    xs, ys = [], []
    for i, ep in enumerate(episodes):
        ep = np.asarray(ep)
        if ep.ndim != 4 or ep.shape[-1] != 3 or len(ep) == 0:
            raise ValueError(f"train_single_frame: episode {i}: expected (T, H, W, 3) frames, got shape {ep.shape}")
        y = time_targets(len(ep)) if targets is None else np.asarray(targets[i], dtype=np.float32)
        if len(y) != len(ep):
            raise ValueError(f"train_single_frame: episode {i}: {len(ep)} frames but {len(y)} targets")
        for j in range(0, len(ep), 512):
            xs.append((model.preprocess(ep[j : j + 512]) * 255).round().to(torch.uint8))
        ys.append(torch.from_numpy(y))
    X, Y = torch.cat(xs), torch.cat(ys)
    n = len(X)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1))))
    model.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc=desc, disable=not progress, unit="step")
    for step in bar:
        idx = torch.from_numpy(rng.integers(0, n, size=min(batch_size, n)))
        x = X[idx].float().div_(255.0)
        if augment:
            pad = 4
            x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
            dy, dx = rng.integers(0, 2 * pad + 1, size=2)
            x = x[:, :, dy : dy + model.config.image_size[0], dx : dx + model.config.image_size[1]]
            x = (x * torch.empty(len(x), 1, 1, 1).uniform_(0.85, 1.15)).clamp_(0, 1)
        pred = model(x)
        if loss == "bce":
            l = F.binary_cross_entropy(pred.clamp(1e-6, 1 - 1e-6), Y[idx])
        else:
            l = F.mse_loss(pred, Y[idx])
        if not torch.isfinite(l):
            raise FloatingPointError(f"{desc}: loss is {l.item()} at step {step}; stopping")
        opt.zero_grad(set_to_none=True)
        l.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(l.detach()))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", fps=f"{(step + 1) * len(idx) / (time.perf_counter() - t0):.0f}")
    model.eval()
    model.untrained = False
    res = TrainResult(steps=steps, final_loss=float(np.mean(losses[-50:])), first_loss=float(np.mean(losses[:10])),
                      seconds=time.perf_counter() - t0, num_frames=n, num_episodes=len(episodes), losses=losses)
    return model, res
