"""Does the camera image of PushT show "almost there" vs "there"? A probe of the renderer.

gym-pusht draws the scene at 512 x 512 and resizes it to the observation size with
cv2.resize's default INTER_LINEAR, which at 512 -> 96 reads about 2 x 2 of every 5.3 x 5.3
source pixels (aliasing: sub-pixel block poses are lost). INTER_AREA averages them all. This
script renders near-success states of clean scripted attempts both ways at 96 x 96, trains the
same small single-frame CNN on each to classify "coverage >= 0.95" (the simulator's success),
and reports held-out accuracy and AUC on the frames with coverage in [0.85, 1]. Analysis only
(docs/closing_the_loop.md); nothing else in wvm_ros depends on it.

    python scripts/analysis/render_resize_probe.py --output runs/render-probe      # ~10 min, 1 core
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from wvm_ros.core.baselines import SingleFrameConfig, SingleFrameRegressor
from wvm_ros.core.sim import PushTSim, ScriptedPushTPolicy

METHODS = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}


def collect(seeds, size: int, min_cov: float, after_s: float = 1.5):
    import pygame

    sim = PushTSim(image_size=(size, size), difficulty=0.5)
    imgs = {k: [] for k in METHODS}
    cov, seed_of = [], []
    for s in seeds:
        state = sim.reset(seed=int(s))
        pol = ScriptedPushTPolicy(injections=[], seed=int(s))
        t_gt = None
        for step in range(int(40 * sim.control_hz)):
            if sim.success and t_gt is None:
                t_gt = step
            if t_gt is not None and step - t_gt >= after_s * sim.control_hz:
                break
            if sim.coverage >= min_cov:
                screen = sim._env._draw()
                full = np.ascontiguousarray(np.transpose(np.array(pygame.surfarray.pixels3d(screen)), (1, 0, 2)))
                for k, interp in METHODS.items():
                    imgs[k].append(cv2.resize(full, (size, size), interpolation=interp))
                cov.append(sim.coverage)
                seed_of.append(s)
            state = sim.step(pol.act(state)).state
    sim.close()
    return {k: np.stack(v) for k, v in imgs.items()}, np.array(cov), np.array(seed_of)


def auc(scores, labels) -> float:
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]))
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def train_eval(x_tr, y_tr, x_te, y_te, steps: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = SingleFrameRegressor(SingleFrameConfig(image_size=tuple(x_tr.shape[1:3]), channels=(16, 32, 64, 128)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    xt = torch.from_numpy(x_tr).permute(0, 3, 1, 2).float() / 255.0
    yt = torch.from_numpy(y_tr.astype(np.float32))
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(xt), 64))
        p = model(xt[idx]).clamp(1e-6, 1 - 1e-6)
        loss = torch.nn.functional.binary_cross_entropy(p, yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        xe = torch.from_numpy(x_te).permute(0, 3, 1, 2).float() / 255.0
        p = torch.cat([model(xe[i:i + 256]) for i in range(0, len(xe), 256)]).numpy()
    return {"accuracy": float(np.mean((p >= 0.5) == y_te)), "auc": auc(p, y_te), "final_train_bce": float(loss.item())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--output", required=True)
    ap.add_argument("--train-seeds", type=int, default=120)
    ap.add_argument("--test-seeds", type=int, default=40)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--min-coverage", type=float, default=0.85)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.time()
    tr_imgs, tr_cov, _ = collect(700000 + np.arange(a.train_seeds), a.size, a.min_coverage)
    te_imgs, te_cov, _ = collect(800000 + np.arange(a.test_seeds), a.size, a.min_coverage)
    y_tr, y_te = tr_cov >= 0.95, te_cov >= 0.95
    print(f"frames: train {len(y_tr)} ({y_tr.mean():.0%} success), test {len(y_te)} ({y_te.mean():.0%}); "
          f"{time.time() - t0:.0f} s", flush=True)
    res = {"size": a.size, "train_frames": int(len(y_tr)), "test_frames": int(len(y_te)),
           "test_success_fraction": float(y_te.mean()), "min_coverage": a.min_coverage, "steps": a.steps, "methods": {}}
    for k in METHODS:
        r = train_eval(tr_imgs[k], y_tr, te_imgs[k], y_te, a.steps)
        res["methods"][k] = r
        print(f"{k:7s} accuracy {r['accuracy']:.3f}  AUC {r['auc']:.3f}  ({time.time() - t0:.0f} s)", flush=True)
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "render_probe.json").write_text(json.dumps(res, indent=2))
    print(f"wrote {out / 'render_probe.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
