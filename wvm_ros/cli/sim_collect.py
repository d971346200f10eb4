"""`wvm sim-collect`: scripted PushT attempts recorded as a LeRobot dataset with progress.

    wvm sim-collect --output data/pusht_wvm --episodes 60 --kinds expert,hesitation,retry \
        --seed 0 --image-size 96 --fps 10

Episode kinds (chosen in turn from --kinds):
  expert      the scripted controller, no injected behaviour
  hesitation  the agent pauses / dithers for 1-3 s somewhere in 20-60 % of the attempt
  retry       a bad push (2-3.5 s) that undoes progress, then recovery
  random      random pushes (1.5-3 s), then recovery
  stuck       from 20-60 % of the attempt on, the agent never progresses (a failure)
`progress` is the paper's ground truth (wvm_ros.core.groundtruth) for expert / hesitation /
retry; for random and stuck, which the paper does not define, it is the simulator's
coverage-based progress. The coverage-based progress is always stored as
`progress_coverage`. Attempts of the first three kinds that do not succeed within
--max-seconds are dropped and re-drawn with the next seed (counted in the summary).
--after-success-s S keeps recording S seconds past the first success while the policy keeps
acting (what a robot shows until a success detector stops it), with progress 1 there.
See docs/simulator.md for the schema.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HELP = "record simulated PushT attempts as a LeRobot dataset"
DEFAULT_TASK = "Push the T-shaped block onto the T-shaped target."
IMAGE_KEY = "observation.image"


def _kinds(text: str) -> list[str]:
    from wvm_ros.core.sim.rollout import EPISODE_KINDS

    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in EPISODE_KINDS]
    if not kinds or bad:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(EPISODE_KINDS)}, got {text!r}")
    return kinds


def _size(text: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in text.lower().replace("x", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 8:
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHTxWIDTH (>= 8 px), got {text!r}")
    return parts[0], parts[1]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", required=True, metavar="DIR", help="dataset root (created; must be empty unless --overwrite)")
    p.add_argument("--episodes", type=int, default=20, help="episodes to record (default 20)")
    p.add_argument("--kinds", type=_kinds, default=["expert", "hesitation", "retry"],
                   help="comma-separated kinds, used in turn: expert,hesitation,retry,random,stuck "
                        "(default expert,hesitation,retry)")
    p.add_argument("--seed", type=int, default=0, help="first scene seed; attempts use seed, seed+1, ...")
    p.add_argument("--image-size", type=_size, default=(96, 96), metavar="SIZE",
                   help="rendered image size, SIZE or HEIGHTxWIDTH (default 96)")
    p.add_argument("--fps", type=int, default=10,
                   help="control and recording rate; a divisor of 100 (default 10, the rate the "
                        "scripted policy was tuned and measured at)")
    p.add_argument("--difficulty", type=float, default=0.5,
                   help="start-state difficulty in (0, 1]; 1 = gym-pusht's own random starts (default 0.5)")
    p.add_argument("--max-seconds", type=float, default=30.0, help="time limit of an attempt (default 30 s)")
    p.add_argument("--min-retry-setback", type=float, default=20.0, metavar="PX",
                   help="keep a retry attempt only if its bad push moved the block at least this much "
                        "further from the goal (pose error in px, see docs/simulator.md; default 20)")
    p.add_argument("--after-success-s", type=float, default=0.0, metavar="S",
                   help="keep recording S seconds after the first success while the policy keeps acting "
                        "(progress 1 there; default 0 = stop at success, the paper's trajectories)")
    p.add_argument("--value-horizon", type=int, default=4, help="length h of the per-frame value_chunk (default 4)")
    p.add_argument("--task", default=DEFAULT_TASK, help="language instruction stored with every frame")
    p.add_argument("--repo-id", default="local/pusht_wvm", help="LeRobot repo id stored in the dataset")
    p.add_argument("--video", choices=["auto", "yes", "no"], default="auto",
                   help="encode camera frames as video (auto: when an AV1 encoder is available)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _label(ro, kind: str, min_retry_setback: float):
    """(progress, non-progress segments, None) for a usable attempt, else (None, None, reason)."""
    from wvm_ros.core.groundtruth import ground_truth_progress
    from wvm_ros.core.sim.pusht import pose_error

    segs = [sg for sg in ro.segments if sg[0] != "progress"]
    if kind in ("expert", "hesitation", "retry") and not ro.solved:
        return None, None, "not solved"
    if kind in ("random", "stuck"):
        return ro.progress_coverage.astype(np.float32), segs, None
    # the paper's curve runs from the first frame to the first solved frame; frames recorded
    # after it (--after-success-s) show the solved scene: progress 1
    T = ro.length if ro.first_success_frame is None else ro.first_success_frame + 1
    after = np.ones(ro.length - T, dtype=np.float32)
    if any(m >= T - 1 for _, m, _n in segs):
        return None, None, f"{kind} not reached before success"
    if kind == "expert":
        return np.concatenate([ground_truth_progress(T, "expert"), after]), segs, None
    if len(segs) != 1:
        return None, None, f"{kind} not reached before success"
    _, m, n = segs[0]
    change = pose_error(ro.states[n]) - pose_error(ro.states[m])
    if kind == "retry" and change < min_retry_setback:
        return None, None, "retry did not set the block back"
    if kind == "hesitation" and abs(change) > 5.0:
        return None, None, "block moved during hesitation"
    try:
        return np.concatenate([ground_truth_progress(T, kind, (m, n)), after]), segs, None
    except ValueError:
        return None, None, f"{kind} segment has no paper ground truth (T - 2x <= 0)"


def generate_attempts(sim, kinds, episodes: int, seed: int, fps: int, max_steps: int, after_steps: int = 0,
                      min_retry_setback: float = 20.0, stats: dict | None = None, reasons: dict | None = None,
                      expert: dict | None = None):
    """Yield (kind, scene seed, rollout, progress, non-progress segments) for `episodes` usable
    attempts, kinds taken in turn from `kinds`, scene seeds from `seed` on (a start the scripted
    expert cannot solve, or an attempt whose injection did not do what its kind needs, is
    dropped and drawn again with the next seed). Rendered at sim's image size. `stats`,
    `reasons` and `expert` (dicts) receive the counts that `wvm sim-collect` reports."""
    from wvm_ros.core.sim.rollout import plan_injection, rollout
    from wvm_ros.core.sim.scripted import ScriptedPushTPolicy

    stats = stats if stats is not None else {}
    reasons = reasons if reasons is not None else {}
    expert = expert if expert is not None else {}
    expert.setdefault("trials", 0)
    expert.setdefault("solved", 0)
    rng = np.random.default_rng(seed)
    for i in range(episodes):
        kind = kinds[i % len(kinds)]
        st = stats.setdefault(kind, {"kept": 0, "attempts": 0, "solved": 0, "rejected": 0})
        for _try in range(50):
            s = seed
            seed += 1
            # the expert attempt from this start (no rendering: fast) places the injection
            exp = rollout(sim, ScriptedPushTPolicy(seed=s), s, max_steps, render=False)
            expert["trials"] += 1
            expert["solved"] += exp.solved
            if not exp.solved:  # the scripted policy fails from this start: draw another
                continue
            injections = plan_injection(kind, exp.length, fps, rng)
            st["attempts"] += 1
            ro = rollout(sim, ScriptedPushTPolicy(injections, seed=s), s, max_steps, render=True,
                         steps_after_success=after_steps)
            st["solved"] += ro.solved
            progress, segs, why = _label(ro, kind, min_retry_setback)
            if progress is None:
                st["rejected"] += 1
                reasons[why] = reasons.get(why, 0) + 1
                continue
            break
        else:
            raise RuntimeError(f"no usable {kind!r} attempt in 50 tries (last seed {seed - 1}); "
                               "try a lower --difficulty or a longer --max-seconds")
        st["kept"] += 1
        yield kind, s, ro, progress, segs


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    try:  # our own bar shows the progress; the datasets library would add one per episode
        from datasets import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass

    from wvm_ros.core.dataset import ValuedDatasetWriter
    from wvm_ros.core.groundtruth import value_chunks
    from wvm_ros.core.sim.pusht import STATE_NAMES, PushTSim
    from wvm_ros.core.sim.scripted import SEGMENT_KINDS

    if args.episodes < 1:
        print(f"wvm sim-collect: --episodes: expected >= 1, got {args.episodes}", file=sys.stderr)
        return 2
    if args.max_seconds <= 0:
        print(f"wvm sim-collect: --max-seconds: expected > 0, got {args.max_seconds}", file=sys.stderr)
        return 2
    try:
        sim = PushTSim(image_size=args.image_size, difficulty=args.difficulty, control_hz=args.fps)
        writer = ValuedDatasetWriter(
            args.output, image_shapes={IMAGE_KEY: (*args.image_size, 3)}, state=list(STATE_NAMES),
            action=["target_x", "target_y"], fps=args.fps, repo_id=args.repo_id, value_horizon=args.value_horizon,
            extra_scalars={"progress_coverage": "float32", "coverage": "float32", "segment": "int64",
                           "kind": "int64", "observation.velocity_x": "float32", "observation.velocity_y": "float32"},
            use_videos={"auto": "auto", "yes": True, "no": False}[args.video], robot_type="pusht_sim",
            default_task=args.task, overwrite=args.overwrite, sarm_source="wvm_ros.sim_collect:ground_truth",
        )
    except (ValueError, FileExistsError, RuntimeError) as e:
        print(f"wvm sim-collect: {e}", file=sys.stderr)
        return 2
    from wvm_ros.core.sim.rollout import EPISODE_KINDS

    if args.after_success_s < 0:
        print(f"wvm sim-collect: --after-success-s: expected >= 0, got {args.after_success_s}", file=sys.stderr)
        return 2
    max_steps = max(1, int(round(args.max_seconds * args.fps)))
    after_steps = int(round(args.after_success_s * args.fps))
    stats = {k: {"kept": 0, "attempts": 0, "solved": 0, "rejected": 0} for k in args.kinds}
    reasons: dict[str, int] = {}
    expert = {"trials": 0, "solved": 0}
    t0 = time.perf_counter()
    bar = tqdm(total=args.episodes, desc="sim-collect", unit="ep", disable=args.quiet)
    try:
        for kind, s, ro, progress, segs in generate_attempts(
                sim, args.kinds, args.episodes, args.seed, args.fps, max_steps, after_steps,
                args.min_retry_setback, stats=stats, reasons=reasons, expert=expert):
            T = ro.length
            code = EPISODE_KINDS.index(kind)
            for t in range(T):
                writer.add_frame(
                    {IMAGE_KEY: ro.frames[t]}, ro.states[t], ro.actions[t], progress=float(progress[t]),
                    success=bool(ro.success[t]), done=t == T - 1, progress_coverage=float(ro.progress_coverage[t]),
                    coverage=float(ro.coverage[t]), segment=int(ro.segment_codes[t]), kind=code,
                    **{"observation.velocity_x": float(ro.velocities[t][0]),
                       "observation.velocity_y": float(ro.velocities[t][1])},
                )
            meta = {"kind": kind, "seed": s, "solved": ro.solved, "segments": [list(sg) for sg in segs],
                    "segment": list(segs[0][1:]) if segs else None, "start_coverage": float(ro.coverage[0]),
                    "final_coverage": float(ro.coverage[-1]), "difficulty": args.difficulty,
                    "first_success_frame": ro.first_success_frame, "after_success_s": args.after_success_s}
            writer.end_episode(overrides={"progress": progress, "value_chunk": value_chunks(progress, args.value_horizon)},
                               metadata=meta)
            bar.update(1)
            bar.set_postfix(expert_success=f"{expert['solved']}/{expert['trials']}")
        writer.finalize()
    except BaseException:
        bar.close()
        writer.finalize()
        raise
    bar.close()
    wall = time.perf_counter() - t0
    summary = {
        "output": str(Path(args.output).resolve()), "episodes": writer.num_episodes, "frames": writer.num_frames,
        "video": writer.use_videos, "video_note": writer.video_note,
        "scripted_expert_success": {"solved": expert["solved"], "attempts": expert["trials"],
                                    "rate": expert["solved"] / max(expert["trials"], 1)},
        "per_kind": stats, "rejected_because": reasons, "wall_s": round(wall, 2), "fps": args.fps, "after_success_s": args.after_success_s, "image_size": list(args.image_size),
        "difficulty": args.difficulty, "seed": args.seed, "segment_codes": list(SEGMENT_KINDS),
        "kind_codes": list(EPISODE_KINDS),
    }
    (Path(args.output) / "meta" / "wvm_sim_collect.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0
