"""How the shipped tiny WVM recipe scales with data and compute (issue 3's Hesitation-RMSE).

Made for a lent GPU machine (many cores, one GPU, no video decoder, little that can be carried),
runnable anywhere the project runs (small numbers on a CPU for a check):

1. collects scripted PushT attempts in parallel processes straight into memory (the same
   `generate_attempts` that `wvm sim-collect` records; frames as rendered, not video-encoded),
   scene seeds from --seed on, one block of seeds per process;
2. writes them once as a training frame cache (the format of `wvm train --frame-cache`);
3. trains the configurations named by --run (NAME:ATTEMPTS:STEPS[:BATCH]) with the shipped
   recipe's other settings (models/wvm-tiny-pusht/README.md), on the first ATTEMPTS attempts,
   several at once, each in its own process;
4. writes OUTPUT/NAME.tar (model.safetensors, config.json, train_log.json) and summary.json.

The checkpoints are then scored where the validation data lives, e.g.
    wvm eval --checkpoint runs/scaling/C --dataset runs/data/pusht-val150 --baselines none ...

    # here: bash scripts/gpu/bundle.sh --sim; there (carrying .devbundle):
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .devbundle/whl/*.whl
    PYTHONPATH=/tmp/site WVM_DEVBUNDLE=.devbundle SDL_VIDEODRIVER=dummy python3 scripts/gpu/scaling.py \
        --attempts 2400 --workers 15 --run A:480:2400 --run B:2400:2400 --device cuda --output $OUT

Its output is printed line by line (do not pipe it through a buffering filter: a run stopped at a
time limit would lose it).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if os.environ.get("WVM_DEVBUNDLE"):   # a machine without the requirements: scripts/gpu/boot.py says how
    sys.path.insert(0, str(ROOT / "scripts" / "gpu"))
    import boot  # noqa: F401,E402  (also in every spawned worker, which re-imports this file)

KINDS = ["expert", "hesitation", "retry"]
FPS = 10
TASK = "Push the T-shaped block onto the T-shaped target."   # wvm sim-collect's default instruction
RECIPE = dict(preset="tiny", batch_size=32, lr=1e-3, warmup_steps=100, segment_weight=3.0, ema_decay=0.998,
              rewind_ratio=0.2, model_overrides={"image_size": [96, 96], "elapsed_input": True})


def _collect(job):
    """One process: `n` usable attempts from scene seed `seed` on."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from wvm_ros.cli.sim_collect import generate_attempts
    from wvm_ros.core.sim.pusht import PushTSim

    worker, n, seed, image_size = job
    sim = PushTSim(image_size=image_size, difficulty=0.5, control_hz=FPS)
    out = []
    for kind, s, ro, progress, segs in generate_attempts(sim, KINDS, n, seed, FPS, 30 * FPS):
        T = ro.length
        out.append({"frames": np.stack(ro.frames[:T]).astype(np.uint8), "values": np.clip(progress, 0, 1).astype(np.float32),
                    "mask": ro.segment_codes[:T] > 0, "kind": kind, "seed": s, "worker": worker})
    return out


def collect(attempts: int, workers: int, seed: int, seed_block: int, image_size, log) -> list[dict]:
    per = [attempts // workers + (1 if w < attempts % workers else 0) for w in range(workers)]
    jobs = [(w, per[w], seed + w * seed_block, tuple(image_size)) for w in range(workers) if per[w]]
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(len(jobs)) as pool:
        parts = pool.map(_collect, jobs)
    # interleave the processes' attempts, so that every prefix mixes all seed blocks and kinds
    eps = [p[i] for i in range(max(map(len, parts))) for p in parts if i < len(p)]
    log(f"collected {len(eps)} attempts, {sum(len(e['values']) for e in eps)} frames, "
        f"in {time.perf_counter() - t0:.0f} s with {len(jobs)} processes")
    return eps


def write_cache(eps: list[dict], folder: Path) -> None:
    """The frame-cache layout of wvm_ros.core.train (frames.u8, index.npz, meta.json)."""
    from wvm_ros.core.train import FRAME_CACHE_FORMAT

    folder.mkdir(parents=True, exist_ok=True)
    lengths = np.array([len(e["values"]) for e in eps])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    with open(folder / "frames.u8", "wb") as f:
        for e in eps:
            f.write(np.ascontiguousarray(e["frames"]).tobytes())
    np.savez(folder / "index.npz", values=np.concatenate([e["values"] for e in eps]), starts=starts, lengths=lengths,
             text_ids=np.zeros(len(eps), dtype=np.int64), segment_mask=np.concatenate([e["mask"] for e in eps]))
    H, W = eps[0]["frames"].shape[1:3]
    meta = {"format": FRAME_CACHE_FORMAT, "frames_shape": [int(lengths.sum()), int(H), int(W), 3], "texts": [TASK],
            "stride": 5, "skipped_short": 0, "fps": float(FPS),
            "sources": [{"root": "scripts/gpu/scaling.py (in memory)", "episodes": len(eps), "fps": FPS,
                         "targets": "progress"}]}
    (folder / "meta.json").write_text(json.dumps(meta) + "\n")


def subset(store, n: int):
    """The first n attempts of a store (contiguous rows), sharing its frames."""
    from wvm_ros.core.train import EpisodeStore

    n = min(n, store.num_episodes)
    rows = int(store.starts[n - 1] + store.lengths[n - 1])
    return EpisodeStore(frames=store.frames[:rows], values=store.values[:rows], starts=store.starts[:n],
                        lengths=store.lengths[:n], text_ids=store.text_ids[:n], texts=store.texts, stride=store.stride,
                        skipped_short=0, sources=[{**store.sources[0], "episodes": n}],
                        segment_mask=store.segment_mask[:rows], fps=store.fps)


def _train(job):
    name, n_att, steps, batch, cache, out, device, threads, seed = job
    import torch

    torch.set_num_threads(threads)
    from wvm_ros.core.train import TrainConfig, _open_frame_cache, train

    store = subset(_open_frame_cache(Path(cache), print), n_att)
    lines = []
    cfg = TrainConfig(datasets=[f"scaling:{n_att}"], output=str(out), steps=steps, save_every=0, log_every=50,
                      progress_bar=False, device=device, threads=threads, seed=seed, **{**RECIPE, "batch_size": batch})
    t0 = time.perf_counter()
    res = train(cfg, store=store, log=lines.append)
    return {"name": name, "attempts": store.num_episodes, "frames": len(store.values), "steps": steps,
            "batch_size": batch, "wall_s": round(time.perf_counter() - t0, 1), "checkpoint_id": res["checkpoint_id"],
            "final_loss": res["history"][-1] if res["history"] else None, "log_tail": lines[-3:]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--attempts", type=int, required=True, help="attempts to collect (kinds expert/hesitation/retry in turn)")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--seed", type=int, default=600000, help="first scene seed (default 600000: clear of every split)")
    p.add_argument("--seed-block", type=int, default=10000, help="scene seeds per collecting process")
    p.add_argument("--run", action="append", required=True, metavar="NAME:ATTEMPTS:STEPS[:BATCH]")
    p.add_argument("--parallel", type=int, default=3, help="trainings at once")
    p.add_argument("--threads", type=int, default=2, help="torch threads per training")
    p.add_argument("--device", default="cuda")
    p.add_argument("--cache", default="/tmp/wvm_scaling_cache")
    p.add_argument("--output", required=True)
    a = p.parse_args(argv)
    runs = []
    for r in a.run:
        parts = r.split(":")
        if len(parts) not in (3, 4) or not all(x.isdigit() for x in parts[1:]):
            p.error(f"--run: expected NAME:ATTEMPTS:STEPS[:BATCH], got {r!r}")
        runs.append((parts[0], int(parts[1]), int(parts[2]), int(parts[3]) if len(parts) == 4 else 32))
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(a.cache)

    def log(msg):
        print(f"[scaling {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    if a.device.startswith("cuda"):
        import torch

        log(f"device {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    eps = collect(a.attempts, a.workers, a.seed, a.seed_block, (96, 96), log)
    kinds = {k: sum(e["kind"] == k for e in eps) for k in KINDS}
    shutil.rmtree(work, ignore_errors=True)
    write_cache(eps, work / "all")
    del eps
    log(f"frame cache written: {work / 'all'}; kinds {kinds}")
    jobs = [(name, n, steps, batch, str(work / "all"), str(work / name), a.device, a.threads, 0)
            for name, n, steps, batch in runs]
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(min(a.parallel, len(jobs))) as pool:
        results = []
        for res in pool.imap_unordered(_train, jobs):
            log(f"run {res['name']}: {res['attempts']} attempts, {res['steps']} steps x {res['batch_size']} in "
                f"{res['wall_s']} s, checkpoint {res['checkpoint_id']}")
            with tarfile.open(out / f"{res['name']}.tar", "w") as tf:
                for f in ("model.safetensors", "config.json", "train_log.json"):
                    tf.add(work / res["name"] / f, arcname=f"{res['name']}/{f}")
            results.append(res)
    summary = {"attempts": a.attempts, "kinds": kinds, "seed": a.seed, "seed_block": a.seed_block,
               "recipe": RECIPE, "runs": sorted(results, key=lambda r: r["name"]),
               "train_wall_s": round(time.perf_counter() - t0, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
