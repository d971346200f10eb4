"""How much data does Hesitation-RMSE <= 0.05 take, even with the simulator's exact state?

`wvm experiment state-oracle` fits regressors on the exact PushT state of the training
datasets (480 attempts for the shipped model) and scores them with the value benchmark. This
script asks what more attempts would buy: it rolls out N attempts of the scripted policy
without rendering (the same recipe as `wvm sim-collect`: expert / hesitation / retry in turn,
difficulty 0.5, the paper's ground truth; about 0.13 s per attempt on one core), fits the
same kind of regressor (scikit-learn's HistGradientBoostingRegressor, 1000 iterations,
leaves of >= 200 frames) on the first n of them for each n in --sizes, for the WVM's context
with and without the elapsed time (wvm_ros.core.state_oracle: state_window,
state_window_elapsed), and scores each on a recorded split (default: the shipped held-out
split) with the benchmark code of `wvm eval`. Analysis only (docs/model.md, "Where the tiny
model's errors come from"); nothing else in wvm_ros depends on it.

    python scripts/analysis/oracle_scaling.py --output runs/oracle-scaling       # ~12 min, 1 core
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from wvm_ros.cli.sim_collect import _label
from wvm_ros.core import evaluation as E
from wvm_ros.core import state_oracle as S
from wvm_ros.core.sim.pusht import PushTSim
from wvm_ros.core.sim.rollout import plan_injection, rollout
from wvm_ros.core.sim.scripted import ScriptedPushTPolicy

KINDS = ("expert", "hesitation", "retry")
FPS = 10.0


def collect(n: int, seed: int, max_seconds: float = 30.0, min_retry_setback: float = 20.0) -> list[dict]:
    """n labelled attempts (state + coverage per frame, ground truth) without rendering."""
    from tqdm import tqdm

    sim = PushTSim(image_size=(96, 96), difficulty=0.5, control_hz=FPS)
    rng = np.random.default_rng(seed)
    s = seed
    max_steps = int(round(max_seconds * FPS))
    out = []
    for i in tqdm(range(n), desc="rollouts", unit="ep"):
        kind = KINDS[i % len(KINDS)]
        for _try in range(50):
            this = s
            s += 1
            exp = rollout(sim, ScriptedPushTPolicy(seed=this), this, max_steps, render=False)
            if not exp.solved:
                continue
            ro = rollout(sim, ScriptedPushTPolicy(plan_injection(kind, exp.length, FPS, rng), seed=this), this,
                         max_steps, render=False)
            progress, _segs, _why = _label(ro, kind, min_retry_setback)
            if progress is not None:
                break
        else:
            raise RuntimeError(f"no usable {kind} attempt in 50 tries (last seed {s - 1})")
        out.append({"x": np.concatenate([ro.states, ro.coverage[:, None]], axis=1), "gt": np.asarray(progress)})
    sim.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", required=True, help="folder for scaling.json")
    ap.add_argument("--dataset", default="data/pusht-heldout", help="recorded split to score on (with "
                    "observation.state and coverage columns)")
    ap.add_argument("--sizes", default="480,1000,2000,4000", help="training attempts per fit (comma-separated)")
    ap.add_argument("--seed", type=int, default=500000, help="first scene seed of the rollouts")
    args = ap.parse_args()
    sizes = sorted({int(v) for v in args.sizes.split(",")})
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    from sklearn.ensemble import HistGradientBoostingRegressor

    t0 = time.perf_counter()
    eps = collect(max(sizes), args.seed)
    evals = E.load_lerobot_episodes(args.dataset, extra_keys=[S.STATE_KEY, S.COVERAGE_KEY], decode_frames=False)
    rows = []
    for name in ("state_window", "state_window_elapsed"):
        spec = S.spec_by_name(name)
        for n in sizes:
            feats = [S.features(e["x"], np.arange(len(e["x"])) / FPS, spec, coverage_col=e["x"].shape[1] - 1)
                     for e in eps[:n]]
            reg = HistGradientBoostingRegressor(learning_rate=0.05, max_iter=1000, min_samples_leaf=200,
                                                random_state=0)
            reg.fit(np.concatenate(feats), np.concatenate([e["gt"] for e in eps[:n]]))
            reg.wvm_spec = spec
            reg.wvm_training = {"episodes": n, "coverage_key": S.COVERAGE_KEY}
            res = E.evaluate(evals, [S.oracle_method(reg)], progress=False).results[name].summary()
            row = {"context": name, "attempts": n,
                   **{k: res[k] for k in ("expert_voc", "retry_voc", "hesitation_rmse")}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    doc = {"dataset": args.dataset, "seed": args.seed, "rows": rows, "wall_s": round(time.perf_counter() - t0, 1)}
    (out / "scaling.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out / 'scaling.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
