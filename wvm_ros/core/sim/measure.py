"""Measure the scripted PushT policy: success rate and time to success over seeds.

    python -m wvm_ros.core.sim.measure --seeds 200 --difficulty 0.25 0.5 0.75 1.0

Prints one JSON line per difficulty (the numbers in docs/simulator.md come from this).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from wvm_ros.core.sim.pusht import PushTSim
from wvm_ros.core.sim.rollout import rollout
from wvm_ros.core.sim.scripted import ScriptedPushTPolicy


def measure(difficulty: float, seeds: range, max_seconds: float = 30.0, control_hz: int = 10) -> dict:
    sim = PushTSim(difficulty=difficulty, control_hz=control_hz)
    max_steps = int(round(max_seconds * control_hz))
    times, solved, steps = [], 0, 0
    t0 = time.perf_counter()
    for s in seeds:
        r = rollout(sim, ScriptedPushTPolicy(seed=s), s, max_steps, render=False)
        solved += r.solved
        steps += r.length - 1
        if r.solved:
            times.append((r.length - 1) / control_hz)
    wall = time.perf_counter() - t0
    n = len(seeds)
    return {
        "difficulty": difficulty, "attempts": n, "solved": solved, "success_rate": solved / max(n, 1),
        "time_to_success_s_median": float(np.median(times)) if times else None,
        "time_to_success_s_p90": float(np.percentile(times, 90)) if times else None,
        "max_seconds": max_seconds, "control_hz": control_hz, "steps_per_s": steps / max(wall, 1e-9),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=100, help="attempts per difficulty (seeds 0..N-1)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--difficulty", type=float, nargs="+", default=[0.5])
    p.add_argument("--max-seconds", type=float, default=30.0)
    p.add_argument("--control-hz", type=int, default=10)
    a = p.parse_args(argv)
    for d in a.difficulty:
        print(json.dumps(measure(d, range(a.first_seed, a.first_seed + a.seeds), a.max_seconds, a.control_hz)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
