"""`wvm up`: start the node graph (the same nodes, parameters and remappings as
`ros2 launch wvm_ros bringup.launch.py`) as plain processes; Ctrl-C stops them all."""
from __future__ import annotations

import argparse
import sys

HELP = "start the node graph (same as launch/bringup.launch.py) without ros2 launch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from wvm_ros.graph import LAUNCH_ARGUMENTS, MODES

    parser.add_argument("--mode", choices=MODES, default=LAUNCH_ARGUMENTS["mode"][0],
                        help=LAUNCH_ARGUMENTS["mode"][1])
    for name in ("checkpoint", "success_checkpoint", "task", "params_file", "output_dir", "preset", "device", "image_topics"):
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=LAUNCH_ARGUMENTS[name][0],
                            help=LAUNCH_ARGUMENTS[name][1])
    parser.add_argument("--record", default=LAUNCH_ARGUMENTS["record"][0], metavar="true|false",
                        help=LAUNCH_ARGUMENTS["record"][1])
    parser.add_argument("--log-dir", default=None,
                        help="write each node's output to LOG_DIR/<node>.log (default: OUTPUT_DIR/logs "
                             "when --output-dir is given, else the terminal)")
    parser.add_argument("--print", action="store_true", dest="print_only",
                        help="print the node command lines and exit")
    parser.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")


def run(args: argparse.Namespace) -> int:
    from wvm_ros.graph import GraphError, build_graph
    from wvm_ros.runner import GraphRunner, log_dir_for

    try:
        specs = build_graph(mode=args.mode, checkpoint=args.checkpoint, task=args.task, record=args.record,
                            params_file=args.params_file, output_dir=args.output_dir,
                            preset=args.preset, device=args.device, image_topics=args.image_topics,
                            success_checkpoint=args.success_checkpoint)
    except GraphError as e:
        print(f"wvm up: {e}", file=sys.stderr)
        return 2
    if args.print_only:
        import shlex

        for s in specs:
            print(shlex.join([s.executable, *s.ros_args()]))
        return 0
    log_dir = args.log_dir or log_dir_for(args.output_dir)
    runner = GraphRunner(specs, log_dir=log_dir)
    try:
        runner.start()
        print(f"[wvm up] {len(specs)} nodes running ({', '.join(s.name for s in specs)}); Ctrl-C stops them",
              file=sys.stderr)
        rc = runner.wait(timeout_s=args.timeout)
    finally:
        codes = runner.stop()
    bad = {n: c for n, c in codes.items() if c not in (0, None, -2, 130)}
    if bad and rc == 0:
        print(f"[wvm up] stopped; exit codes: {bad}", file=sys.stderr)
    return rc
