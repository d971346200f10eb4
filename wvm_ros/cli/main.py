"""`wvm`: the command line of wvm_ros.

Each sub-command lives in its own module that defines

    HELP = "one line"
    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...

and is listed in COMMANDS below. Only the chosen command's module is imported, so
`wvm up` starts without importing torch.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Keep sorted by workflow, not alphabet.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("wvm_ros.cli.demo", "run the whole graph on the PushT simulator, headless, and summarise"),
    "up": ("wvm_ros.cli.up", "start the node graph (same as launch/bringup.launch.py) without ros2 launch"),
    "sim-collect": ("wvm_ros.cli.sim_collect", "record simulated PushT attempts as a LeRobot dataset"),
    "train": ("wvm_ros.cli.train", "train a WVM on local LeRobot datasets"),
    "train-success": ("wvm_ros.cli.train_success", "train the success classifier the value node publishes beside progress"),
    "calibrate-value": ("wvm_ros.cli.calibrate_value",
                        "fit a WVM checkpoint's value offset on validation splits (written to its config.json)"),
    "eval": ("wvm_ros.cli.eval", "value benchmark: Expert-VOC, Retry-VOC, Hesitation-RMSE vs baselines"),
    "model-info": ("wvm_ros.cli.model_info", "build a preset on the meta device and print parameter counts"),
    "export": ("wvm_ros.cli.export", "export to ONNX (with numerical check) and build TensorRT engines"),
    "bench": ("wvm_ros.cli.bench", "benchmarks: model | chunk | node | logger | train, each against its baseline"),
    "experiment": ("wvm_ros.cli.experiment", "experiments, e.g. `wvm experiment retries`"),
    "bag2lerobot": ("wvm_ros.cli.bag2lerobot", "convert (valued or plain) rosbags into a LeRobot dataset"),
    "weights": ("wvm_ros.cli.weights", "policy-extraction weights (filtered BC, AWR) from a valued dataset"),
    "report": ("wvm_ros.cli.report", "per-episode outcomes and progress curves of a dataset"),
    "calibrate": ("wvm_ros.cli.calibrate", "camera intrinsics calibration to camera_info YAML"),
}


def _build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wvm",
        description="World Value Model tools for ROS 2: demo, graph, training, evaluation, data.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == only:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
            parser.set_defaults(_subparser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    if chosen is not None and chosen not in COMMANDS:
        _build_parser().print_usage(sys.stderr)
        print(f"wvm: unknown command {chosen!r}; expected one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    parser = _build_parser(chosen)
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported with the command's own usage, not the top-level one
        (getattr(args, "_subparser", None) or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0 if not argv else 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("\nwvm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
