"""Policy-extraction weights from values (WVM_NOTES.md, "Using the values for policy learning").

For the action chunk that starts at frame t of an episode of T frames, with chunk length H:

    t_tail  = min(t + H - 1, T - 1)
    delta_t = V(t_tail) - V(t)                       (chunk advantage)

    filtered-binary:      w = 1[delta >= 0]
    filtered-percentile:  w = 1 for the top `keep` (default 70 %) of chunks by delta, else 0
                          (exactly round(keep * N) chunks; ties broken by frame index)
    awr:                  w = min(exp(tau * delta), 2.0), renormalised to batch mean 1
                          (tau = 10 in sim, 2 on the real arm)

    weighted BC loss = sum(w_i * l_i) / (sum(w_i) + 1e-6)

V is a per-frame value column of the dataset (`progress` by default: the WVM's estimate;
`ground_truth_progress` gives the simulator's oracle for comparison).

The weights go to a sidecar parquet next to the dataset (`wvm_weights.parquet`: index,
episode_index, frame_index, t_tail, value, delta, weight; the method and its parameters in
the schema metadata). `WVMSampleWeighter` implements lerobot's `SampleWeighter` on it, and
`install_lerobot_hook()` teaches `lerobot-train` the `--sample_weighting.type=wvm` option:

    python -m wvm_ros.core.weights --dataset.repo_id=local/x --dataset.root=DATA \\
        --policy.type=pi05 --sample_weighting.type=wvm ...     # = lerobot-train + the hook

(lerobot 0.6.1 weights samples only for policies whose forward takes reduction="none":
pi0, pi05, smolvla, evo1, molmoact2; not act or diffusion.)

lerobot-train then computes exactly the weighted BC loss above (lerobot_train.update_policy:
(per_sample_loss * w).sum() / (w.sum() + eps)); AWR weights are renormalised to mean 1 in
every batch by the weighter.
"""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

METHODS = ("filtered-binary", "filtered-percentile", "awr")
SIDECAR = "wvm_weights.parquet"
AWR_CLIP = 2.0
EPS = 1e-6


class WeightsError(ValueError):
    """Bad dataset or parameters for weights; the message names what and what was expected."""


# ----------------------------------------------------------------------------- the maths

def chunk_advantages(values: np.ndarray, episode_index: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """delta_t = V(min(t + H - 1, T - 1)) - V(t) within each episode.

    `values` and `episode_index` are per frame, frames of an episode contiguous and in time
    order. Returns (delta, tail position in the arrays)."""
    try:
        whole = int(horizon) == horizon
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole or int(horizon) < 1:
        raise WeightsError(f"horizon: expected an action-chunk length (a whole number >= 1), got {horizon!r}")
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    ep = np.asarray(episode_index).reshape(-1)
    if v.shape != ep.shape:
        raise WeightsError(f"values ({v.shape[0]}) and episode_index ({ep.shape[0]}) differ in length")
    if not np.all(np.isfinite(v)):
        raise WeightsError(f"values: {int(np.sum(~np.isfinite(v)))} are not finite numbers")
    n = len(v)
    tail = np.empty(n, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, ep[1:] != ep[:-1]]) if n else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], n] if n else np.zeros(0, np.int64)
    if len(np.unique(ep)) != len(starts):
        raise WeightsError("episode_index: the frames of each episode must be contiguous")
    for s, e in zip(starts, ends):
        t = np.arange(s, e)
        tail[s:e] = np.minimum(t + int(horizon) - 1, e - 1)
    delta = v[tail] - v if n else np.zeros(0)
    return delta, tail


def _finite_delta(delta) -> np.ndarray:
    d = np.asarray(delta, dtype=np.float64).reshape(-1)
    bad = int(np.sum(~np.isfinite(d)))
    if bad:
        raise WeightsError(f"delta: expected finite chunk advantages, {bad} of {len(d)} are NaN or inf")
    return d


def _positive_finite(name: str, value, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise WeightsError(f"{name}: expected {what} (a finite number > 0), got {value!r}")
    return v


def filtered_binary(delta: np.ndarray) -> np.ndarray:
    return (_finite_delta(delta) >= 0).astype(np.float32)


def filtered_percentile(delta: np.ndarray, keep: float = 0.7) -> np.ndarray:
    try:
        k_ok = 0.0 < float(keep) <= 1.0        # False for NaN
    except (TypeError, ValueError):
        k_ok = False
    if not k_ok:
        raise WeightsError(f"keep: expected a fraction in (0, 1], got {keep!r}")
    keep = float(keep)
    d = _finite_delta(delta)
    n = len(d)
    k = int(round(keep * n))
    order = np.lexsort((np.arange(n), -d))      # delta descending, then index ascending
    w = np.zeros(n, dtype=np.float32)
    w[order[:k]] = 1.0
    return w


def awr(delta: np.ndarray, tau: float = 10.0, clip: float = AWR_CLIP) -> np.ndarray:
    """Unnormalised AWR weights min(exp(tau * delta), clip)."""
    tau = _positive_finite("tau", tau, "a temperature")
    clip = _positive_finite("clip", clip, "a maximum weight")
    d = _finite_delta(delta)
    with np.errstate(over="ignore"):          # exp overflow -> inf, clipped just below
        return np.minimum(np.exp(tau * d), clip).astype(np.float32)


def normalise_batch_mean(w) -> np.ndarray:
    """Scale a batch of weights to mean 1 (AWR); an all-zero batch stays zero."""
    w = np.asarray(w, dtype=np.float64)
    m = w.mean() if len(w) else 0.0
    return (w / m if m > 0 else w).astype(np.float32)


def weighted_bc_loss(losses, w) -> float:
    losses = np.asarray(losses, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    return float(np.sum(w * losses) / (np.sum(w) + EPS))


def compute_weights(delta: np.ndarray, method: str, *, keep: float = 0.7, tau: float = 10.0) -> np.ndarray:
    if method == "filtered-binary":
        return filtered_binary(delta)
    if method == "filtered-percentile":
        return filtered_percentile(delta, keep)
    if method == "awr":
        return awr(delta, tau)
    raise WeightsError(f"method {method!r}: expected one of {', '.join(METHODS)}")


# ----------------------------------------------------------------------------- datasets

def read_frames(dataset: str | os.PathLike, value_column: str = "progress"):
    """index, episode_index, frame_index and the value column of a LeRobot v3 dataset, sorted."""
    import pandas as pd

    root = Path(dataset)
    files = sorted((root / "data").rglob("*.parquet")) if (root / "data").is_dir() else []
    if not files:
        raise WeightsError(f"{str(root)!r} is not a LeRobot dataset: no data/**/*.parquet")
    cols = ["index", "episode_index", "frame_index", value_column]
    frames = []
    for f in files:
        import pyarrow.parquet as pq

        names = pq.read_schema(f).names
        if value_column not in names:
            raise WeightsError(f"value column {value_column!r} not in dataset {str(root)!r} "
                               f"(columns: {', '.join(n for n in names if not n.startswith('observation.'))})")
        frames.append(pd.read_parquet(f, columns=cols))
    df = pd.concat(frames, ignore_index=True).sort_values("index", kind="stable").reset_index(drop=True)
    v = df[value_column].map(lambda x: float(np.asarray(x).reshape(-1)[0]) if np.ndim(x) else float(x))
    return (df["index"].to_numpy(np.int64), df["episode_index"].to_numpy(np.int64),
            df["frame_index"].to_numpy(np.int64), v.to_numpy(np.float64))


@dataclass
class WeightsSummary:
    path: Path
    method: str
    frames: int
    episodes: int
    kept_fraction: float      # weight > 0
    mean_weight: float
    params: dict


def write_weights(dataset: str | os.PathLike, method: str, *, horizon: int = 10, keep: float = 0.7,
                  tau: float = 10.0, value_column: str = "progress",
                  output: str | os.PathLike | None = None) -> WeightsSummary:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if method not in METHODS:
        raise WeightsError(f"method {method!r}: expected one of {', '.join(METHODS)}")
    compute_weights(np.zeros(0), method, keep=keep, tau=tau)   # bad keep / tau: say so before reading
    index, ep, frame, values = read_frames(dataset, value_column)
    delta, tail = chunk_advantages(values, ep, horizon)
    w = compute_weights(delta, method, keep=keep, tau=tau)
    params = {"method": method, "horizon": int(horizon), "value_column": value_column}
    if method == "filtered-percentile":
        params["keep"] = float(keep)
    if method == "awr":
        params.update(tau=float(tau), clip=AWR_CLIP, batch_normalise="mean 1")
    out = Path(output) if output else Path(dataset) / SIDECAR
    table = pa.table({
        "index": index, "episode_index": ep, "frame_index": frame,
        "t_tail": frame + (tail - np.arange(len(tail))),
        "value": values.astype(np.float32), "delta": delta.astype(np.float32), "weight": w.astype(np.float32),
    }).replace_schema_metadata({b"wvm_weights": json.dumps(params, sort_keys=True).encode()})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, out)
    return WeightsSummary(out, method, len(w), int(len(np.unique(ep))),
                          float(np.mean(w > 0)) if len(w) else 0.0, float(np.mean(w)) if len(w) else 0.0, params)


def read_weights(path: str | os.PathLike) -> tuple[dict, "object"]:
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    meta = json.loads((t.schema.metadata or {}).get(b"wvm_weights", b"{}"))
    return meta, t.to_pandas()


# ----------------------------------------------------------------------------- lerobot training

def _sample_weighter_base():
    try:
        from lerobot.utils.sample_weighting import SampleWeighter
        return SampleWeighter
    except ImportError:  # pragma: no cover - lerobot is a requirement
        return object


class WVMSampleWeighter(_sample_weighter_base()):
    """lerobot `SampleWeighter` over a wvm_weights.parquet: weights by the batch's `index`."""

    def __init__(self, path: str | os.PathLike, device="cpu"):
        import torch

        p = Path(path)
        if not p.is_file():
            raise WeightsError(f"weights sidecar {str(p)!r} does not exist; create it with `wvm weights DATASET`")
        self.meta, df = read_weights(p)
        self.method = self.meta.get("method", "")
        n = int(df["index"].max()) + 1 if len(df) else 0
        self.table = np.zeros(n, dtype=np.float32)       # frames missing from the sidecar weigh 0
        self.table[df["index"].to_numpy(np.int64)] = df["weight"].to_numpy(np.float32)
        self.device = torch.device(device) if not isinstance(device, torch.device) else device

    def compute_batch_weights(self, batch: dict):
        import torch

        idx = batch.get("index")
        if idx is None:
            raise WeightsError("batch has no 'index' key: cannot look up per-frame weights")
        idx = idx.detach().cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)
        idx = idx.astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.table)):
            raise WeightsError(f"batch index {int(idx.max())} is outside the weights sidecar "
                               f"({len(self.table)} frames): was it computed for this dataset?")
        w = self.table[idx]
        if self.method == "awr":
            w = normalise_batch_mean(w)
        stats = {"mean_weight": float(np.mean(w)) if len(w) else 0.0,
                 "num_zero_weight": int(np.sum(w == 0))}
        return torch.as_tensor(w, dtype=torch.float32, device=self.device), stats

    def get_stats(self) -> dict:
        return {"method": self.method, "kept_fraction": float(np.mean(self.table > 0)) if len(self.table) else 0.0}


def install_lerobot_hook() -> None:
    """Make lerobot's `make_sample_weighter` accept `type: wvm` (progress_path = the sidecar,
    default <dataset.root>/wvm_weights.parquet). Other types go to lerobot unchanged."""
    import lerobot.utils.sample_weighting as sw

    if getattr(sw.make_sample_weighter, "_wvm_hook", False):
        return
    original = sw.make_sample_weighter

    def make_sample_weighter(config, policy, device, dataset_root=None, dataset_repo_id=None):
        if config is not None and config.type == "wvm":
            path = config.progress_path or (str(Path(dataset_root) / SIDECAR) if dataset_root else None)
            if path is None:
                raise WeightsError("sample_weighting.type=wvm needs --sample_weighting.progress_path "
                                   "or --dataset.root (to find wvm_weights.parquet)")
            return WVMSampleWeighter(path, device)
        return original(config, policy, device, dataset_root=dataset_root, dataset_repo_id=dataset_repo_id)

    make_sample_weighter._wvm_hook = True
    sw.make_sample_weighter = make_sample_weighter


def main() -> None:
    """`python -m wvm_ros.core.weights ARGS...` = `lerobot-train ARGS...` with type=wvm known."""
    install_lerobot_hook()
    from lerobot.scripts.lerobot_train import main as lerobot_train_main

    sys.argv[0] = "lerobot-train"
    lerobot_train_main()


if __name__ == "__main__":
    main()
