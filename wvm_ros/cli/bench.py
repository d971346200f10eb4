"""`wvm bench model|chunk|node|logger|train`: dispatches to ``wvm_ros.bench.<kind>``."""
from __future__ import annotations

import argparse
import importlib
import sys

HELP = "benchmarks: model | chunk | node | logger | train, each against its baseline"

KINDS = {
    "model": "per-estimate latency / throughput / memory per backend vs naive full-window torch eager",
    "chunk": "latency of one value chunk (video KV cache + one Euler step) of a preset, random weights, vs fp32 eager",
    "node": "image stamp -> Progress publish through real DDS at 30 Hz vs the naive estimator",
    "logger": "data logger throughput vs its baseline",
    "train": "training steps per second of a preset (random weights and frames) vs the previous training step",
}


def _chosen_kind(argv: list[str]) -> str | None:
    try:
        i = argv.index("bench")
    except ValueError:
        return None
    return next((a for a in argv[i + 1:] if not a.startswith("-")), None)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_kind", metavar="KIND")
    chosen = _chosen_kind(sys.argv[1:])
    for kind, help_text in KINDS.items():
        p = sub.add_parser(kind, help=help_text, description=help_text)
        p.add_argument("--output", default="runs/bench", help="directory for bench_<kind>.json")
        if chosen not in (None, kind):
            continue  # import only the chosen benchmark (each pulls in torch / rclpy)
        try:
            module = importlib.import_module(f"wvm_ros.bench.{kind}")
        except ImportError as exc:
            p.set_defaults(_bench_error=f"wvm bench {kind} is not available: {exc}")
            continue
        module.add_arguments(p)
        p.set_defaults(_bench_run=module.run)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "_bench_error", None):
        print(args._bench_error, file=sys.stderr)
        return 2
    if not getattr(args, "bench_kind", None):
        print(f"wvm bench: choose one of {', '.join(KINDS)}", file=sys.stderr)
        return 2
    if not getattr(args, "_bench_run", None):  # parser built without this kind's module (argv given directly)
        module = importlib.import_module(f"wvm_ros.bench.{args.bench_kind}")
        parser = argparse.ArgumentParser(prog=f"wvm bench {args.bench_kind}")
        parser.add_argument("--output", default="runs/bench")
        module.add_arguments(parser)
        defaults = vars(parser.parse_args([]))
        for k, v in defaults.items():
            if not hasattr(args, k):
                setattr(args, k, v)
        return int(module.run(args) or 0)
    return int(args._bench_run(args) or 0)
