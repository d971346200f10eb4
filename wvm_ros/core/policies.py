"""Policies the policy node can run, behind one small interface. ROS-free.

    policy = load_policy("scripted", hesitation=0.2, failure=0.1, seed=0)
    policy = load_policy("lerobot", checkpoint="path/to/pretrained_model", device="cpu")
    policy.reset(seed)                                     # new attempt
    action = policy.act(state, images)                     # np.ndarray (action_dim,), float64

`act` raises PolicyInputError for observations that do not fit (wrong size, NaN / inf state)
and PolicyOutputError when the action it computed is not finite (never to be sent).

`state` is the robot's state vector (np.ndarray); `images` maps a camera name to an RGB
uint8 array (H, W, 3). Policies say what they need: `needs_images` (camera names / feature
keys) and `state_dim`.

* `ScriptedSimPolicy` wraps the scripted PushT controller of `wvm_ros.core.sim` (state
  only, with injected hesitation / failure).
* `LeRobotPolicy` loads any policy that lerobot 0.6.1 saves with `save_pretrained`
  (ACT, Diffusion, SmolVLA, ...) from a local directory, offline: `config.json`,
  `model.safetensors`, and the processor pipelines (`policy_preprocessor.json`,
  `policy_postprocessor.json` with their state files) when present. Images are resized to
  the feature's shape and scaled to float [0, 1] CHW; the state is padded / cut to the
  feature's size only if `strict_state=False`, otherwise a mismatch is an error.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np


class PolicyLoadError(RuntimeError):
    """A policy that cannot be loaded (names the path and what was expected)."""


class PolicyInputError(ValueError):
    """Observations that do not fit the policy (names the input and what was expected)."""


class PolicyOutputError(RuntimeError):
    """An action the policy computed that must not be sent to a robot (names the policy and
    what was expected), e.g. NaN / inf values from a diverged or badly normalised model."""


def _nonfinite_entries(values: np.ndarray, limit: int = 8) -> str:
    """"[1]=nan, [3]=inf" for the entries of a 1-D array that are not finite numbers."""
    bad = np.flatnonzero(~np.isfinite(values))
    text = ", ".join(f"[{int(i)}]={float(values[i])}" for i in bad[:limit])
    return text + (f", ... ({len(bad)} in all)" if len(bad) > limit else "")


def check_action(action: np.ndarray, who: str) -> np.ndarray:
    """`action` as a float64 vector; PolicyOutputError when any value is NaN or inf."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(a)):
        raise PolicyOutputError(f"{who} returned a non-finite action ({_nonfinite_entries(a)} of {a.tolist()}); "
                                f"expected {len(a)} finite numbers: not sent to the robot")
    return a


class Policy:
    kind = "base"
    needs_images: tuple[str, ...] = ()
    state_dim: int | None = None
    action_dim: int | None = None
    description = ""

    def reset(self, seed: int | None = None, attempt: int = 1) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def act(self, state: np.ndarray, images: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover - interface


# ---------------------------------------------------------------------------------- scripted
class ScriptedSimPolicy(Policy):
    """The scripted PushT controller from `wvm_ros.core.sim`, acting on the state vector
    [agent_x, agent_y, block_x, block_y, block_theta]; action = target (x, y) in sim pixels.

    `injections` (list of `Injection` or dicts {kind, start, duration}, steps counted from the
    attempt's first action) are applied to the attempts listed in `inject_on_attempts`
    (empty: every attempt), each with probability `inject_probability` (seeded), so that a
    stuck first attempt can be followed by a clean retry. Other keyword arguments go to
    `ScriptedPushTPolicy` (standoff, max_push, ...)."""

    kind = "scripted"
    state_dim = 5
    action_dim = 2

    def __init__(self, seed: int | None = None, injections=(), inject_on_attempts=(1,),
                 inject_probability: float = 1.0, **options: Any):
        try:
            from wvm_ros.core.sim import Injection, ScriptedPushTPolicy
        except ImportError as e:  # the sim package is another part of the project
            raise PolicyLoadError(f"the scripted PushT policy (wvm_ros.core.sim.ScriptedPushTPolicy) "
                                  f"is not available: {e}") from e
        if not 0.0 <= float(inject_probability) <= 1.0:
            raise PolicyLoadError(f"inject_probability={inject_probability!r}; expected a number in [0, 1]")
        try:
            self.injections = [i if isinstance(i, Injection) else Injection(**dict(i)) for i in injections]
        except (TypeError, ValueError) as e:
            raise PolicyLoadError(f"injections {injections!r}: {e} (expected a list of "
                                  f"{{kind, start, duration}} with kind in hesitation/retry/stuck/random)") from e
        self.inject_on_attempts = {int(a) for a in inject_on_attempts}
        self.inject_probability = float(inject_probability)
        self._cls = ScriptedPushTPolicy
        self._options = dict(options)
        self._seed = seed
        try:
            self._impl = ScriptedPushTPolicy(seed=seed, **self._options)
        except TypeError as e:
            raise PolicyLoadError(f"ScriptedPushTPolicy does not accept options {sorted(self._options)}: {e}") from e
        self.active_injections: list = []
        inj = ", ".join(f"{i.kind}@{i.start}+{i.duration}" for i in self.injections) or "none"
        self.description = (f"scripted PushT (injections {inj} on attempts "
                            f"{sorted(self.inject_on_attempts) or 'all'} p={self.inject_probability:g})")

    def reset(self, seed: int | None = None, attempt: int = 1) -> None:
        rng = np.random.default_rng(None if seed is None else (int(seed) * 7919 + 17))
        chosen = (not self.inject_on_attempts or int(attempt) in self.inject_on_attempts) \
            and rng.random() < self.inject_probability
        self.active_injections = list(self.injections) if chosen else []
        self._impl = self._cls(injections=self.active_injections, seed=seed, **self._options)

    def act(self, state: np.ndarray, images: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        s = np.asarray(state, dtype=np.float64).reshape(-1)
        if s.shape != (5,) or not np.all(np.isfinite(s)):
            raise PolicyInputError(f"scripted PushT policy: state must be 5 finite numbers "
                                   f"[agent_x, agent_y, block_x, block_y, block_theta], got {state!r}")
        return check_action(self._impl.act(s), "scripted PushT policy")


# ---------------------------------------------------------------------------------- lerobot
def _resize_chw(img: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    import cv2

    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise PolicyInputError(f"image: expected an RGB uint8 array (H, W, 3), got {img.dtype} {img.shape}")
    c, h, w = shape
    if c != 3:
        raise PolicyInputError(f"image feature expects {c} channels; only RGB (3) images are supported")
    if img.shape[:2] != (h, w):
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / 255.0


class LeRobotPolicy(Policy):
    """A LeRobot policy from a local checkpoint directory (offline)."""

    kind = "lerobot"

    def __init__(self, checkpoint: str | os.PathLike, device: str = "cpu",
                 image_map: Mapping[str, str] | None = None, task: str = "",
                 strict_state: bool = True):
        path = Path(checkpoint).expanduser()
        # a training run's output: accept the run folder and find its pretrained_model
        for cand in (path, path / "pretrained_model", path / "checkpoints" / "last" / "pretrained_model"):
            if (cand / "config.json").is_file():
                path = cand
                break
        else:
            raise PolicyLoadError(f"LeRobot policy checkpoint {str(checkpoint)!r}: no config.json found "
                                  f"(expected a directory written by PreTrainedPolicy.save_pretrained)")
        if not any((path / f).is_file() for f in ("model.safetensors",)):
            raise PolicyLoadError(f"LeRobot policy checkpoint {str(path)!r}: model.safetensors is missing")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from lerobot.configs.policies import PreTrainedConfig
        from lerobot.configs.types import FeatureType
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors

        try:
            with open(path / "config.json") as f:
                ptype = json.load(f).get("type", "?")
            cfg = PreTrainedConfig.from_pretrained(str(path))
            cfg.device = device
            cls = get_policy_class(cfg.type)
            policy = cls.from_pretrained(str(path), config=cfg)
        except Exception as e:  # noqa: BLE001 - report what failed, with the path
            raise PolicyLoadError(f"LeRobot policy checkpoint {str(path)!r} (type {ptype!r}) failed to load: "
                                  f"{type(e).__name__}: {e}") from e
        policy.eval()
        policy.to(device)
        has_processors = (path / "policy_preprocessor.json").is_file() and (path / "policy_postprocessor.json").is_file()
        try:
            if has_processors:
                self.pre, self.post = make_pre_post_processors(
                    cfg, pretrained_path=str(path),
                    preprocessor_overrides={"device_processor": {"device": device}})
            else:
                self.pre, self.post = make_pre_post_processors(cfg)
        except Exception as e:  # noqa: BLE001
            raise PolicyLoadError(f"LeRobot policy checkpoint {str(path)!r}: processors failed to load: "
                                  f"{type(e).__name__}: {e}") from e
        self.torch = torch
        self.policy = policy
        self.config = cfg
        self.path = path
        self.device = device
        self.task = task
        self.strict_state = strict_state
        self.policy_type = cfg.type
        self.image_features = {k: tuple(v.shape) for k, v in cfg.input_features.items()
                               if v.type == FeatureType.VISUAL}
        state = [(k, v) for k, v in cfg.input_features.items() if v.type == FeatureType.STATE]
        self.state_key = state[0][0] if state else None
        self.state_dim = int(state[0][1].shape[0]) if state else None
        act = cfg.output_features.get("action")
        self.action_dim = int(act.shape[0]) if act is not None else None
        # camera name -> feature key; default: features by their own names, and a single
        # image feature also answers to any single camera
        self.image_map = dict(image_map or {})
        self.needs_images = tuple(self.image_features)
        self.description = (f"lerobot {cfg.type} from {path} (images {list(self.image_features)}, "
                            f"state {self.state_dim}, action {self.action_dim})")

    def reset(self, seed: int | None = None, attempt: int = 1) -> None:
        if seed is not None:
            self.torch.manual_seed(int(seed))
        self.policy.reset()
        for pipe in (self.pre, self.post):
            if hasattr(pipe, "reset"):
                pipe.reset()

    def _image_for(self, key: str, images: Mapping[str, np.ndarray]) -> np.ndarray:
        for cam, feat in self.image_map.items():
            if feat == key and cam in images:
                return images[cam]
        if key in images:
            return images[key]
        if len(self.image_features) == 1 and len(images) == 1:
            return next(iter(images.values()))
        raise PolicyInputError(f"LeRobot policy needs image feature {key!r}; got cameras {sorted(images)} "
                               f"(map them with image_map, e.g. {{'/camera/image_raw': {key!r}}})")

    def act(self, state: np.ndarray, images: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        torch = self.torch
        images = dict(images or {})
        obs: dict[str, Any] = {}
        if self.state_key is not None:
            s64 = np.asarray(state, dtype=np.float64).reshape(-1)
            if not np.all(np.isfinite(s64)):
                raise PolicyInputError(f"LeRobot policy {self.policy_type}: state for feature {self.state_key!r} "
                                       f"has non-finite values ({_nonfinite_entries(s64)}); expected "
                                       f"{self.state_dim} finite numbers")
            with np.errstate(over="ignore"):
                s = s64.astype(np.float32)
            if not np.all(np.isfinite(s)):
                raise PolicyInputError(f"LeRobot policy {self.policy_type}: state {s64.tolist()} for feature "
                                       f"{self.state_key!r} overflows float32; expected {self.state_dim} finite "
                                       f"numbers within float32 range")
            if s.shape[0] != self.state_dim:
                if self.strict_state:
                    raise PolicyInputError(f"LeRobot policy {self.policy_type}: state has {s.shape[0]} values, "
                                           f"feature {self.state_key!r} expects {self.state_dim}")
                s = np.pad(s, (0, max(0, self.state_dim - s.shape[0])))[: self.state_dim]
            obs[self.state_key] = torch.from_numpy(s)
        for key, shape in self.image_features.items():
            obs[key] = torch.from_numpy(_resize_chw(np.asarray(self._image_for(key, images)), shape))
        if self.task:
            obs["task"] = self.task
        with torch.inference_mode():
            batch = self.pre(obs)
            action = self.policy.select_action(batch)
            action = self.post(action)
        a = action.detach().to("cpu").numpy().astype(np.float64).reshape(-1)
        if self.action_dim is not None and a.shape[0] != self.action_dim:
            raise PolicyInputError(f"LeRobot policy returned {a.shape[0]} action values, expected {self.action_dim}")
        return check_action(a, f"LeRobot policy {self.policy_type} ({self.path})")


def load_policy(kind: str, **kwargs: Any) -> Policy:
    """`kind`: "scripted" (kwargs: seed, injections, inject_on_attempts, inject_probability and
    ScriptedPushTPolicy's options) or "lerobot"
    (kwargs: checkpoint, device, image_map, task, strict_state)."""
    kind = (kind or "").strip().lower()
    if kind == "scripted":
        return ScriptedSimPolicy(**kwargs)
    if kind == "lerobot":
        if not kwargs.get("checkpoint"):
            raise PolicyLoadError("policy 'lerobot' needs a checkpoint directory (parameter policy_checkpoint)")
        return LeRobotPolicy(**kwargs)
    raise PolicyLoadError(f"unknown policy kind {kind!r}; expected 'scripted' or 'lerobot'")
