"""The WVM on inference backends: exportable parts, a backend-driven model adapter that the
StreamingValueEstimator uses unchanged, multi-camera batching, and the naive baseline.

    est = build_estimator(model, task, BackendOptions(backend="auto"))   # value node
    est.push(frame, stamp_s) -> ValueEstimate | None                     # as before

Parts (each exported / run on its own):
  * ``encode_frames``: float frames [N, 3, H, W] in [-1, 1] at config.image_size -> latents
    [N, C, h, w]. Resizing / scaling of camera frames (``frames_to_tensor``) stays in torch
    on the host, identical to the model's own path.
  * ``predict_chunk``: latent_window [B, 1 + h, C, h, w], prefix_value [B], text_emb [B, L, D]
    -> chunk [B, h] (video-KV-cache path + one Euler step, the model's own code).
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import BackendError, InferenceBackend, InferenceError
from .select import BackendOptions, Selection, create_part_backend

log = logging.getLogger(__name__)

PARTS_VERSION = "wvm-parts-2"  # bump when the exported graphs change shape or meaning


class EncodeFramesPart(nn.Module):
    """model.encode_tensor with static shapes (exportable with a dynamic batch)."""

    def __init__(self, model):
        super().__init__()
        if model.frame_encoder is None:
            raise BackendError(f"preset {model.config.name!r} encodes frames with the frozen Wan VAE, which is "
                               "not exported; its frames are encoded by torch")
        self.net = model.frame_encoder.net
        self.latent_shape = tuple(int(v) for v in model.config.latent_shape)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        z = self.net(frames)
        return F.layer_norm(z, self.latent_shape)  # ConvFrameEncoder.forward, shape made static


class PredictChunkPart(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, latent_window, prefix_value, text_emb, elapsed_s=None):
        """elapsed_s: an input of the exported graph only for models with config.elapsed_input."""
        m = self.model
        if not torch.jit.is_tracing():
            return m.predict_chunk(latent_window, prefix_value, text_emb, elapsed_s=elapsed_s)
        orig = m._rope
        # RoPE tables are cached by shape; under the ONNX tracer shapes are traced values,
        # so key them by plain ints to hit the cache (the tables then trace as constants)
        m._rope = lambda kind, *shape, device: orig(kind, *(int(s) for s in shape), device=device)
        try:
            return m.predict_chunk(latent_window, prefix_value, text_emb, elapsed_s=elapsed_s)
        finally:
            del m._rope


def model_hash(model) -> str:
    """Content hash of the weights, config and part layout (keys ONNX files and engines)."""
    h = hashlib.sha256(PARTS_VERSION.encode())
    h.update(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def wvm_parts(model, batch: int = 1, seed: int = 0):
    """[encode_frames part (None for a VAE preset), predict_chunk part] with example inputs."""
    from ..export import ModelPart

    c = model.config
    g = torch.Generator().manual_seed(seed)
    model = model.eval()
    parts = []
    try:
        enc = EncodeFramesPart(model)
        frames = torch.rand(batch, 3, *c.image_size, generator=g) * 2 - 1
        parts.append(ModelPart("encode_frames", enc, {"frames": frames}, ["latents"]))
        dev = next(model.parameters()).device  # example inputs stay on the CPU; the encoder runs where it is
        with torch.no_grad():
            lat = torch.stack([enc((torch.rand(c.window_frames, 3, *c.image_size, generator=g) * 2 - 1).to(dev)).cpu()
                               for _ in range(batch)])
    except BackendError:
        parts.append(None)
        lat = torch.randn(batch, c.window_frames, *c.latent_shape, generator=g)
    text = torch.randn(batch, 1, c.text_dim, generator=g)
    inputs = {"latent_window": lat, "prefix_value": torch.rand(batch, generator=g),
              "text_emb": text / text.norm(dim=-1, keepdim=True)}
    if c.elapsed_input:
        inputs["elapsed_s"] = torch.rand(batch, generator=g) * 20.0
    parts.append(ModelPart("predict_chunk", PredictChunkPart(model), inputs, ["chunk"],
                           dynamic_axes={"text_emb": {1: ("text_len", 1, int(c.text_max_len))}}))
    return parts


class MicroBatcher:
    """Calls from several threads that arrive within ``max_wait_s`` of each other (or as soon as
    ``expected`` are waiting) run as ONE backend call, concatenated along axis 0."""

    def __init__(self, backend: InferenceBackend, max_wait_s: float = 0.003):
        self.backend = backend
        self.max_wait_s = max_wait_s
        self.expected = 1
        self._cv = threading.Condition()
        self._queue: list[dict] = []
        self._leader: dict | None = None
        self.calls = 0
        self.items = 0

    def __call__(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if self.expected <= 1:
            self.calls += 1
            self.items += 1
            return self.backend.run(inputs)
        req = {"inputs": inputs, "done": False, "out": None, "err": None}
        with self._cv:
            self._queue.append(req)
            self._cv.notify_all()
            if self._leader is not None:  # a leader is gathering: it runs us too
                while not req["done"]:
                    self._cv.wait(timeout=1.0)
                return self._result(req)
            self._leader = req
            deadline = time.monotonic() + self.max_wait_s
            while len(self._queue) < self.expected and time.monotonic() < deadline:
                self._cv.wait(timeout=max(0.0, deadline - time.monotonic()))
            batch, self._queue, self._leader = self._queue, [], None
        self._run_batch(batch)
        with self._cv:
            self._cv.notify_all()
        return self._result(req)

    def _run_batch(self, batch: list[dict]) -> None:
        sizes = [int(next(iter(r["inputs"].values())).shape[0]) for r in batch]
        try:
            cat = {}
            for n in self.backend.input_names:
                vals = [r["inputs"][n] for r in batch]
                cat[n] = torch.cat(vals) if isinstance(vals[0], torch.Tensor) else np.concatenate(vals)
            out = self.backend.run(cat)
            self.calls += 1
            self.items += len(batch)
            off = 0
            for r, s in zip(batch, sizes):
                r["out"] = {k: v[off:off + s] for k, v in out.items()}
                off += s
        except BackendError as exc:
            for r in batch:
                r["err"] = exc
        except Exception as exc:  # noqa: BLE001
            for r in batch:
                r["err"] = InferenceError(f"batched {self.backend.describe()} failed: {exc}")
        for r in batch:
            r["done"] = True

    @staticmethod
    def _result(req: dict) -> dict[str, np.ndarray]:
        if req["err"] is not None:
            raise req["err"]
        return req["out"]


def preprocess_frames(frames, image_size) -> torch.Tensor:
    """What ``frames_to_tensor`` computes (uint8 RGB [N, H, W, 3] -> float [N, 3, H', W'] in
    [-1, 1], "area" resize), with the resize done BEFORE the scaling: both are linear, so the
    result is the same up to float rounding, but the scaling then touches H' x W' pixels
    instead of the camera's H x W (about 2.5 ms less per 480x640 frame on these CPUs)."""
    from ..model.encoders import frames_to_tensor

    if not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim in (3, 4)
            and frames.shape[-1] == 3):
        return frames_to_tensor(frames, image_size, torch.device("cpu"))  # its checks and messages
    if frames.ndim == 3:
        frames = frames[None]
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    if tuple(x.shape[-2:]) != tuple(image_size):
        x = F.interpolate(x, size=tuple(image_size), mode="area")
    return x / 127.5 - 1.0


class BackendValueModel:
    """Looks like the WVM to the StreamingValueEstimator (``encode_frames``, ``predict_chunk``,
    ``embed_text``, ``config``, ...), but runs the two parts on inference backends.
    Errors in inference are :class:`InferenceError` (the node catches them)."""

    def __init__(self, model, encoder: InferenceBackend | None, predictor: InferenceBackend,
                 max_wait_s: float = 0.003):
        self._model = model
        self.encoder = encoder
        self.predictor = predictor
        self._enc_batcher = MicroBatcher(encoder, max_wait_s) if encoder is not None else None
        self._pred_batcher = MicroBatcher(predictor, max_wait_s)

    def __getattr__(self, name: str):  # config, name, checkpoint_id, untrained, embed_text, ...
        return getattr(self._model, name)

    @property
    def backend_description(self) -> str:
        enc = self.encoder.describe() if self.encoder is not None else "torch[encode_frames, VAE]"
        return f"{enc} + {self.predictor.describe()}"

    def set_expected_batch(self, n: int) -> None:
        for b in (self._enc_batcher, self._pred_batcher):
            if b is not None:
                b.expected = max(1, int(n))

    def encode_frames(self, frames) -> torch.Tensor:
        if self._enc_batcher is None:
            return self._model.encode_frames(frames)
        x = preprocess_frames(frames, self._model.config.image_size)
        return torch.from_numpy(self._enc_batcher({"frames": x})["latents"])

    def predict_chunk(self, latent_window, prefix_value, text_emb, text_mask=None, elapsed_s=None) -> torch.Tensor:
        if text_mask is not None:
            raise InferenceError("predict_chunk on a backend: text_mask is not supported (exported without it)")
        b = latent_window.shape[0]
        prefix_value = prefix_value.reshape(-1).float()
        if text_emb.shape[0] != b:
            text_emb = text_emb.expand(b, -1, -1)
        inputs = {"latent_window": latent_window.float().cpu(), "prefix_value": prefix_value.cpu(),
                  "text_emb": text_emb.float().cpu()}
        if "elapsed_s" in self.predictor.input_names:  # a model with the elapsed-time input
            if elapsed_s is None:
                raise InferenceError("predict_chunk: this model has an elapsed-time input; pass elapsed_s [B] seconds")
            inputs["elapsed_s"] = torch.as_tensor(elapsed_s).reshape(-1).float().expand(b).cpu()
        out = self._pred_batcher(inputs)
        return torch.from_numpy(out["chunk"])


def create_value_backends(model, opts: BackendOptions) -> tuple[BackendValueModel, dict[str, Selection]]:
    """Backends for both parts of ``model`` as ``opts`` asks (auto / named / fallback / strict)."""
    mh = model_hash(model)
    enc_part, pred_part = wvm_parts(model)
    sels: dict[str, Selection] = {}
    if enc_part is not None:
        sels["encode_frames"] = create_part_backend(enc_part, opts, mh)
    sels["predict_chunk"] = create_part_backend(pred_part, opts, mh)
    vm = BackendValueModel(model, sels["encode_frames"].backend if enc_part is not None else None,
                           sels["predict_chunk"].backend)
    log.info("WVM inference: %s", vm.backend_description)
    return vm, sels


def build_estimator(model, task: str = "", opts: BackendOptions | None = None, **kw):
    """A StreamingValueEstimator whose model parts run on the backends ``opts`` chooses
    (``kw`` are BackendOptions fields). ``est.model.backend_description`` says which."""
    from ..streaming import StreamingValueEstimator

    opts = opts or BackendOptions(**kw)
    vm, _ = create_value_backends(model, opts)
    return StreamingValueEstimator(vm, task)


class MultiCameraEstimator:
    """One streaming estimator per camera over ONE shared backend model; frames of several
    cameras pushed together are encoded and predicted as one batched call each."""

    def __init__(self, value_model: BackendValueModel, cameras: list[str], task: str = ""):
        from ..streaming import StreamingValueEstimator

        if not cameras or len(set(cameras)) != len(cameras):
            raise ValueError(f"cameras must be distinct names, got {cameras}")
        self.value_model = value_model
        self.estimators = {c: StreamingValueEstimator(value_model, task) for c in cameras}
        self._pool = ThreadPoolExecutor(max_workers=len(cameras), thread_name_prefix="wvm-cam")

    def set_task(self, text: str) -> None:
        for e in self.estimators.values():
            e.set_task(text)

    def reset(self) -> None:
        for e in self.estimators.values():
            e.reset()

    def push_many(self, frames: Mapping[str, tuple[np.ndarray, float]]) -> dict[str, Any]:
        """{camera: (frame, stamp_s)} -> {camera: ValueEstimate | None}; exceptions are raised
        per camera as InferenceError after all cameras finished."""
        unknown = set(frames) - set(self.estimators)
        if unknown:
            raise ValueError(f"unknown camera(s) {sorted(unknown)}; configured: {sorted(self.estimators)}")
        self.value_model.set_expected_batch(len(frames))
        try:
            futs = {c: self._pool.submit(self.estimators[c].push, f, s) for c, (f, s) in frames.items()}
            return {c: fut.result() for c, fut in futs.items()}
        finally:
            self.value_model.set_expected_batch(1)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class NaiveValueEstimator:
    """The baseline: every camera frame is an estimate computed from scratch in torch eager:
    the last 1 + h sampled frames are re-encoded and the chunk predicted again (no latent
    cache, no reuse between overlapping windows). Same sampling grid as the streaming
    estimator, so both see the same windows."""

    def __init__(self, model, task: str = ""):
        from ..streaming import StreamingValueEstimator

        self.model = model
        self.h = int(model.config.h)
        self._grid = StreamingValueEstimator.__new__(StreamingValueEstimator)
        self._grid.period = 1.0 / float(model.config.sample_fps)
        self._text = model.embed_text(task)
        self.reset()

    def reset(self) -> None:
        from collections import deque

        self._frames: deque = deque(maxlen=1 + self.h)
        self._first = None
        self._first_stamp = None
        self._grid._grid_t = None
        self._prefix = 0.0

    @torch.no_grad()
    def push(self, frame: np.ndarray, stamp_s: float):
        from ..streaming import StreamingValueEstimator, ValueEstimate

        t0 = time.perf_counter()
        if StreamingValueEstimator._take(self._grid, float(stamp_s)):
            self._frames.append(frame)
            if self._first is None:
                self._first = frame
                self._first_stamp = float(stamp_s)
        if len(self._frames) < self.model.config.min_frames:
            return None
        fr = list(self._frames)
        window_frames = np.stack([self._first] * ((1 + self.h) - len(fr)) + fr)
        lat = self.model.encode_frames(window_frames)[None]  # re-encode the whole window
        chunk = self.model.predict_chunk(lat, torch.tensor([self._prefix]), self._text,
                                         elapsed_s=torch.tensor([float(stamp_s) - self._first_stamp]))
        chunk = chunk[0].float().cpu().numpy()
        return ValueEstimate(progress=float(np.clip(chunk[-1], 0, 1)), chunk=chunk.astype(np.float32),
                             stamp_s=float(stamp_s), latency_s=time.perf_counter() - t0, valid=True, status="naive")
