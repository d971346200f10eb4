"""`wvm experiment retries --output DIR`: success detection and retries on the simulator.

Runs the real value model through the streaming estimator and the episode state machine
in-process on PushT with injected failures, every seed with retries on and off, and writes
retries.json (median_detection_delay_s, false_success_rate, success_rate_with_retries,
success_rate_without_retries, ...), retries.md (tables), retries.png and attempts.jsonl.
See docs/closing_the_loop.md.

`wvm experiment state-oracle --train-dataset A --dataset B --output DIR`: the value benchmark
of regressors on the simulator's exact state instead of pixels, with the WVM's temporal
context and with more (wvm_ros.core.state_oracle; docs/model.md).

`--state-oracle NAME` (with `--train-dataset`) runs `retries` or `calibrate` with such a
regressor reading the simulator's exact state in place of the WVM: success detection with
perfect perception and the same value target (docs/closing_the_loop.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "experiments, e.g. `wvm experiment retries`"
EXPERIMENTS = ("retries", "calibrate", "state-oracle")


def default_checkpoint() -> Path:
    return Path(__file__).resolve().parents[2] / "models" / "wvm-tiny-pusht"


def default_success_checkpoint() -> Path:
    return Path(__file__).resolve().parents[2] / "models" / "success-pusht"


def _oracle_specs():
    from wvm_ros.core.state_oracle import SPECS

    return SPECS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from wvm_ros.core.episode import EpisodeConfig

    parser.add_argument("experiment", choices=EXPERIMENTS,
                        help="retries: the experiment; calibrate: record one attempt per seed without decisions and "
                             "score a grid of state-machine settings by replay (how the defaults were chosen); "
                             "state-oracle: the value benchmark of regressors on the simulator's state, no pixels")
    parser.add_argument("--output", required=True,
                        help="folder for retries.json / .md / .png / attempts.jsonl (state-oracle: metrics.json / .md, "
                             "plots/)")
    parser.add_argument("--checkpoint", default=None,
                        help=f"WVM checkpoint directory (default: the shipped {default_checkpoint()})")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--success-checkpoint", default=None,
                        help="success classifier directory (`wvm train-success`) whose probability goes to the state "
                             f"machine beside the value (default: the shipped {default_success_checkpoint()}; "
                             "'none': no classifier, then `either` is the progress rule alone; `calibrate` scores the "
                             "classifier's rule when one is given, the progress rule's otherwise)")
    parser.add_argument("--untrained", action="store_true",
                        help="use randomly initialised weights (only to check the pipeline; numbers are meaningless)")
    parser.add_argument("--episodes", type=int, default=30, help="seeds (each run with and without retries)")
    parser.add_argument("--seed", type=int, default=1000, help="first seed")
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--difficulty", type=float, default=0.5, help="PushTSim start-state difficulty in (0, 1]")
    parser.add_argument("--p-stuck", type=float, default=0.3, help="per-attempt probability of a stuck policy")
    parser.add_argument("--p-random", type=float, default=0.15, help="per-attempt probability of random pushes")
    parser.add_argument("--p-hesitation", type=float, default=0.15, help="per-attempt probability of a hesitation")
    parser.add_argument("--estimate-fps", type=float, default=10.0,
                        help="estimates per second, a multiple of the model's sample_fps (default 10, the value "
                             "node's default estimate_fps; 0: one estimate per sampled frame)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: far faster than torch's default on a shared CPU; 0: torch's default)")
    o = parser.add_argument_group("state-oracle")
    o.add_argument("--train-dataset", action="append", default=[],
                   help="LeRobot dataset the oracles are fitted on (repeatable; e.g. the WVM's training data)")
    o.add_argument("--dataset", default=None, help="LeRobot dataset they are scored on (e.g. a validation split)")
    o.add_argument("--state-key", default="observation.state", help="per-frame state column")
    o.add_argument("--coverage-key", default="coverage",
                   help="per-frame task-coverage column, or 'none' (PushT: the block's overlap with the goal)")
    o.add_argument("--gt-key", default="progress", help="ground-truth progress column")
    o.add_argument("--state-oracle", default=None, choices=[sp.name for sp in _oracle_specs()],
                   help="retries / calibrate: use this oracle (fitted on --train-dataset) on the simulator's exact "
                        "state instead of the WVM on camera frames")
    d = EpisodeConfig()
    g = parser.add_argument_group("episode state machine (defaults as in config/wvm.yaml wvm_policy)")
    for name, val in d.to_dict().items():
        if name in ("max_attempts", "retries"):
            continue
        if name == "success_source":
            from wvm_ros.core.episode import SUCCESS_SOURCES

            g.add_argument("--success-source", choices=SUCCESS_SOURCES, default=val, dest=name,
                           help="what ends an attempt as a success: the progress rule, the success classifier's "
                                "probability, or either (default %(default)s)")
            continue
        g.add_argument(f"--{name.replace('_', '-')}", type=type(val), default=val, dest=name)


def run(args: argparse.Namespace) -> int:
    from wvm_ros.core.episode import EpisodeConfig
    from wvm_ros.core.experiment import ExperimentConfig, InjectionMix, run_experiment, write_report
    from wvm_ros.core.model import ModelLoadError, load_value_model

    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        print(f"wvm experiment: output folder {out} is not writable: {e}", file=sys.stderr)
        return 2
    if args.experiment == "state-oracle":
        return _state_oracle(args, out)
    if args.episodes < 1:
        print(f"wvm experiment: --episodes {args.episodes}; expected >= 1", file=sys.stderr)
        return 2
    try:
        ecfg = EpisodeConfig.from_mapping({k: getattr(args, k) for k in EpisodeConfig().to_dict()
                                           if k not in ("max_attempts", "retries")})
        mix = InjectionMix(p_stuck=args.p_stuck, p_random=args.p_random, p_hesitation=args.p_hesitation)
        cfg = ExperimentConfig(episodes=args.episodes, seed=args.seed, max_attempts=args.max_attempts,
                               difficulty=args.difficulty, episode=ecfg, injections=mix,
                               estimate_fps=args.estimate_fps if args.estimate_fps > 0 else None)
    except ValueError as e:
        print(f"wvm experiment: {e}", file=sys.stderr)
        return 2
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    try:
        success_model = _success_model(args)
    except Exception as e:  # SuccessLoadError, and any other reason the directory cannot be used
        print(f"wvm experiment: {e}", file=sys.stderr)
        return 2
    if ecfg.success_source == "classifier" and success_model is None:
        print(f"wvm experiment: --success-source {ecfg.success_source} needs a success classifier "
              "(--success-checkpoint DIR; train one with `wvm train-success`)", file=sys.stderr)
        return 2
    if args.state_oracle:
        return _with_oracle(args, cfg, out, success_model)
    try:
        if args.untrained:
            model = load_value_model(None, args.preset)
        else:
            ck = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
            model = load_value_model(str(ck), args.preset)
    except ModelLoadError as e:
        print(f"wvm experiment: {e}\n(train one with `wvm train`, or pass --untrained to check the pipeline only)",
              file=sys.stderr)
        return 2
    if args.experiment == "calibrate":
        return _calibrate(model, cfg, out, success_model=success_model)
    result = run_experiment(model, cfg, success_model=success_model)
    paths = write_report(result, out)
    print(paths["md"].read_text())
    print(f"wrote {paths['json']}, {paths['md']}, {paths['png']}, {paths['attempts']}")
    return 0


CAL_GRID = {"success_threshold": [0.8, 0.88, 0.9, 0.92, 0.95, 0.98, 1.0],
            "success_dwell_s": [0.0, 0.5, 1.0, 1.5, 1.8, 2.0, 2.2, 2.5],
            "stall_window_s": [4.0, 6.0, 8.0]}
# with a success classifier: its rule alone, and beside the progress rule (as set by the flags)
CAL_GRID_CLASSIFIER = {"success_source": ["classifier", "either"],
                       "success_prob_threshold": [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99],
                       "success_prob_dwell_s": [0.0, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0],
                       "stall_window_s": [6.0]}


def _success_model(args):
    """The success classifier named by --success-checkpoint (default: the shipped one, if present)."""
    from wvm_ros.core.success import load_success

    name = args.success_checkpoint
    if name is not None and str(name).lower() == "none":
        return None
    if name is None:
        if not default_success_checkpoint().is_dir():
            return None
        name = default_success_checkpoint()
    return load_success(name)


def _with_oracle(args: argparse.Namespace, cfg, out: Path, success_model=None) -> int:
    """retries / calibrate with a state oracle in place of the WVM."""
    import numpy as np

    from wvm_ros.core import evaluation as E
    from wvm_ros.core import state_oracle as S
    from wvm_ros.core.experiment import run_experiment, write_report

    if not args.train_dataset:
        print(f"wvm experiment {args.experiment}: --state-oracle needs --train-dataset (one or more)", file=sys.stderr)
        return 2
    cov = None if str(args.coverage_key).lower() == "none" else args.coverage_key
    keys = [args.state_key] + ([cov] if cov else [])
    try:
        train = [ep for root in args.train_dataset
                 for ep in E.load_lerobot_episodes(root, gt_key=args.gt_key, extra_keys=keys, decode_frames=False)]
    except E.DatasetError as e:
        print(f"wvm experiment {args.experiment}: {e}", file=sys.stderr)
        return 2
    spec = S.spec_by_name(args.state_oracle)
    print(f"fitting {spec.name} on {len(train)} attempts ...", flush=True)
    reg = S.fit_oracle(train, spec, state_key=args.state_key, coverage_key=cov)
    fps = cfg.estimate_fps or 2.0

    def factory(sim):
        read = (lambda: np.r_[sim.state, sim.coverage]) if cov else (lambda: np.asarray(sim.state))
        return S.StateOracleEstimator(reg, read, estimate_fps=fps)

    info = {"name": f"state-oracle:{spec.name}", "checkpoint_id": None, "untrained": False,
            "train_datasets": [str(r) for r in args.train_dataset], **reg.wvm_training}
    if args.experiment == "calibrate":
        return _calibrate(None, cfg, out, estimator_factory=factory, info=info, success_model=success_model)
    result = run_experiment(None, cfg, estimator_factory=factory, estimator_info=info, success_model=success_model)
    paths = write_report(result, out)
    print(paths["md"].read_text())
    print(f"wrote {paths['json']}, {paths['md']}, {paths['png']}, {paths['attempts']}")
    return 0


def _calibrate(model, cfg, out: Path, estimator_factory=None, info: dict | None = None, success_model=None) -> int:
    import json

    from wvm_ros.core.experiment import calibrate

    grid = CAL_GRID if success_model is None else CAL_GRID_CLASSIFIER
    res = calibrate(model, [cfg.seed + i for i in range(cfg.episodes)], cfg.injections, cfg.difficulty, cfg.task,
                    grid, base=cfg.episode, estimate_fps=cfg.estimate_fps, estimator_factory=estimator_factory,
                    success_model=success_model)
    res["estimator"] = info if info is not None else {
        "name": model.name, "checkpoint_id": model.checkpoint_id, "untrained": bool(model.untrained)}
    res["success_classifier"] = None if success_model is None else {"checkpoint_id": success_model.checkpoint_id}
    res["estimate_fps"] = cfg.estimate_fps
    (out / "calibration.json").write_text(json.dumps(res, indent=1, default=float))
    cols = list(grid) + ["median_delay_s", "p90_delay_s", "false_success_rate", "missed", "stuck_caught",
                             "false_failures_clean", "random_caught"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in res["rows"]:
        lines.append("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    (out / "calibration.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out / 'calibration.json'}, {out / 'calibration.md'}")
    return 0


def _state_oracle(args: argparse.Namespace, out: Path) -> int:
    from wvm_ros.core import evaluation as E
    from wvm_ros.core import state_oracle as S

    if not args.train_dataset or not args.dataset:
        print("wvm experiment state-oracle: needs --train-dataset (one or more) and --dataset", file=sys.stderr)
        return 2
    cov = None if str(args.coverage_key).lower() == "none" else args.coverage_key
    keys = [args.state_key] + ([cov] if cov else [])
    try:
        train = [ep for root in args.train_dataset
                 for ep in E.load_lerobot_episodes(root, gt_key=args.gt_key, extra_keys=keys, decode_frames=False)]
        evals = E.load_lerobot_episodes(args.dataset, gt_key=args.gt_key, extra_keys=keys, decode_frames=False)
    except E.DatasetError as e:
        print(f"wvm experiment state-oracle: {e}", file=sys.stderr)
        return 2
    methods = []
    for spec in S.SPECS:
        print(f"fitting {spec.name} on {len(train)} attempts ...", flush=True)
        reg = S.fit_oracle(train, spec, state_key=args.state_key, coverage_key=cov)
        methods.append(S.oracle_method(reg, state_key=args.state_key, coverage_key=cov))
    report = E.evaluate(evals, [*methods, E.clock_method()])
    report.dataset = {"root": str(args.dataset), "train_datasets": [str(r) for r in args.train_dataset],
                      "state_key": args.state_key, "coverage_key": cov}
    E.write_report(report, out, primary=S.SPECS[0].name)
    print((out / "metrics.md").read_text())
    print(f"wrote {out / 'metrics.json'}, {out / 'metrics.md'} and {out / 'plots'}/")
    return 0
