"""Does the camera image of PushT show "almost there" vs "there"? A probe of the renderer.

gym-pusht draws the scene at 512 x 512 and resizes it to the observation size with
cv2.resize's default INTER_LINEAR, which at 512 -> 96 reads about 2 x 2 of every 5.3 x 5.3
source pixels (aliasing: sub-pixel block poses are lost). INTER_AREA averages them all. This
script renders near-success states of clean scripted attempts both ways at 96 x 96, trains the
same small single-frame CNN on each to classify "coverage >= 0.95" (the simulator's success),
and reports held-out accuracy and AUC on the frames with coverage in [0.85, 1]. Analysis only
(docs/closing_the_loop.md); nothing else in wvm_ros depends on it.

    python scripts/analysis/render_resize_probe.py --output runs/render-probe      # ~7 min, 1 core

With `--loop` it then trains the classifier on every frame of the training attempts (the
simulator's own bilinear render) and puts it in the retries experiment's calibration in place of
the value (validation seeds 2000..2099, injections as in `wvm experiment calibrate`; stall and
regression off, since the signal is a success probability): success detection from a frame
classifier with a dwell, scored like the value's.
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
LOOP_SIZE = 96  # what the experiment's simulator renders when no WVM sets the size


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
    return {"accuracy": float(np.mean((p >= 0.5) == y_te)), "auc": auc(p, y_te), "final_train_bce": float(loss.item()),
            "model": model}


class ClassifierEstimator:
    """The classifier as the experiment's estimator: progress := P(success | frame)."""

    def __init__(self, model, estimate_fps: float = 10.0):
        from wvm_ros.core.streaming import ValueEstimate

        self.model, self.estimate_fps, self._VE = model, estimate_fps, ValueEstimate

    def reset(self):
        pass

    def push(self, frame, stamp_s):
        want = tuple(self.model.config.image_size)
        if tuple(frame.shape[:2]) != want:
            raise ValueError(f"ClassifierEstimator: frame of {frame.shape[:2]}, expected {want} (the size it was trained at)")
        t0 = time.perf_counter()
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 255.0
            p = float(self.model(x)[0])
        return self._VE(progress=p, chunk=np.array([p], np.float32), stamp_s=float(stamp_s),
                        latency_s=time.perf_counter() - t0, valid=True, status="ok")


def loop(a, out: Path) -> dict:
    from wvm_ros.core.episode import EpisodeConfig
    from wvm_ros.core.experiment import DEFAULT_TASK, InjectionMix, calibrate

    if a.size != LOOP_SIZE:
        raise SystemExit(f"--loop: the experiment's camera renders {LOOP_SIZE} x {LOOP_SIZE}; got --size {a.size}")
    imgs, cov, _ = collect(700000 + np.arange(a.train_seeds), a.size, 0.0)
    y = cov >= 0.95
    print(f"loop: training on {len(y)} frames ({y.mean():.0%} success)", flush=True)
    r = train_eval(imgs["linear"], y, imgs["linear"][:256], y[:256], a.steps)
    base = EpisodeConfig.from_mapping({**EpisodeConfig().to_dict(), "stall_window_s": 1000.0,
                                       "regression_drop": 1.0, "timeout_s": 1000.0})
    grid = {"success_threshold": [0.5, 0.7, 0.8, 0.9, 0.95, 0.98],
            "success_dwell_s": [0.0, 0.2, 0.3, 0.5, 0.8, 1.0, 1.5]}
    res = calibrate(None, list(range(2000, 2000 + a.loop_episodes)), InjectionMix(), 0.5, DEFAULT_TASK,
                    grid, base=base, estimator_factory=lambda sim: ClassifierEstimator(r["model"]))
    rows = [{k: v for k, v in row.items() if k in ("success_threshold", "success_dwell_s", "median_delay_s",
                                                     "p90_delay_s", "false_success_rate", "missed")}
            for row in res["rows"]]
    for row in sorted(rows, key=lambda q: (q["false_success_rate"] > 0.02, q["median_delay_s"] or 99))[:8]:
        print("loop:", row, flush=True)
    (out / "loop_calibration.json").write_text(json.dumps({"rows": rows, "traces": res["traces"]}, default=float))
    return {"train_frames": int(len(y)), "rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--output", required=True)
    ap.add_argument("--train-seeds", type=int, default=120)
    ap.add_argument("--test-seeds", type=int, default=40)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--min-coverage", type=float, default=0.85)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--loop", action="store_true", help="also: the classifier in the calibration loop (see above)")
    ap.add_argument("--loop-episodes", type=int, default=100)
    ap.add_argument("--only-loop", action="store_true", help="skip the bilinear / area comparison")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.time()
    res = {"size": a.size, "steps": a.steps}
    if not a.only_loop:
        tr_imgs, tr_cov, _ = collect(700000 + np.arange(a.train_seeds), a.size, a.min_coverage)
        te_imgs, te_cov, _ = collect(800000 + np.arange(a.test_seeds), a.size, a.min_coverage)
        y_tr, y_te = tr_cov >= 0.95, te_cov >= 0.95
        print(f"frames: train {len(y_tr)} ({y_tr.mean():.0%} success), test {len(y_te)} ({y_te.mean():.0%}); "
              f"{time.time() - t0:.0f} s", flush=True)
        res.update({"train_frames": int(len(y_tr)), "test_frames": int(len(y_te)),
                    "test_success_fraction": float(y_te.mean()), "min_coverage": a.min_coverage, "methods": {}})
        for k in METHODS:
            r = train_eval(tr_imgs[k], y_tr, te_imgs[k], y_te, a.steps)
            r.pop("model")
            res["methods"][k] = r
            print(f"{k:7s} accuracy {r['accuracy']:.3f}  AUC {r['auc']:.3f}  ({time.time() - t0:.0f} s)", flush=True)
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    if a.loop:
        res["loop"] = loop(a, out)
    (out / "render_probe.json").write_text(json.dumps(res, indent=2))
    print(f"wrote {out / 'render_probe.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
