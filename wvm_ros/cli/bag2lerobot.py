"""`wvm bag2lerobot BAGS... --output DIR`: rosbags (valued or plain) -> one LeRobot dataset.

Each bag is one attempt (what wvm_logger writes). Frames follow the reference camera;
other topics are matched by the maximum-age rule (see wvm_ros.core.bag2lerobot). Bags
without /wvm/progress need --checkpoint (the value model then runs offline).
"""
from __future__ import annotations

import argparse
import json
import sys

HELP = "convert (valued or plain) rosbags into a LeRobot dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", nargs="+", help="bag folders, or folders that contain bag folders")
    parser.add_argument("--output", "-o", required=True, help="dataset folder to create")
    parser.add_argument("--reference-topic", default="/camera/image_raw",
                        help="camera topic that defines the frames (default %(default)s)")
    parser.add_argument("--image-topic", action="append", default=[], metavar="TOPIC[=KEY]",
                        help="more camera topics (repeatable), e.g. /wrist/image_raw=observation.images.wrist")
    parser.add_argument("--state-topic", default="/robot/joint_states")
    parser.add_argument("--action-topic", default="/robot/action")
    parser.add_argument("--progress-topic", default="/wvm/progress")
    parser.add_argument("--max-age-s", type=float, default=0.1,
                        help="oldest a state / action / other camera message may be for a frame (default %(default)s)")
    parser.add_argument("--progress-max-age-s", type=float, default=1.5,
                        help="oldest a recorded estimate may be for a frame (default %(default)s)")
    parser.add_argument("--checkpoint", default=None,
                        help="run this value model offline instead of using recorded values (needed for plain bags)")
    parser.add_argument("--preset", default="tiny", help="preset of --checkpoint (default %(default)s)")
    parser.add_argument("--estimate-fps", type=float, default=10.0,
                        help="with --checkpoint: value estimates per second, a multiple of the model's sample_fps "
                             "(default 10, the value node's default; 0: one per sampled frame)")
    parser.add_argument("--fps", type=int, default=None, help="dataset fps (default: measured on the first bag)")
    parser.add_argument("--task", default=None, help="task text (default: from the bags)")
    parser.add_argument("--drop-failed", action="store_true", help="leave out attempts whose outcome is not success")
    parser.add_argument("--video", action="store_true",
                        help="encode cameras as videos (default: images, which keeps the output byte-stable)")
    parser.add_argument("--repo-id", default="local/wvm_bags")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def run(args: argparse.Namespace) -> int:
    from wvm_ros.core.bag2lerobot import AlignConfig, ConversionError, convert_bags, parse_image_keys

    try:
        keys = parse_image_keys([args.reference_topic, *args.image_topic])
        cfg = AlignConfig(reference_topic=args.reference_topic, image_keys=keys, state_topic=args.state_topic,
                          action_topic=args.action_topic, progress_topic=args.progress_topic,
                          max_age_s=args.max_age_s, progress_max_age_s=args.progress_max_age_s)
        rep = convert_bags(args.bags, args.output, cfg=cfg, checkpoint=args.checkpoint, preset=args.preset,
                           fps=args.fps, keep_failed=not args.drop_failed, use_videos=bool(args.video),
                           repo_id=args.repo_id, overwrite=args.overwrite, task=args.task,
                           estimate_fps=args.estimate_fps if args.estimate_fps > 0 else None)
    except (ConversionError, ValueError, FileNotFoundError) as exc:
        print(f"wvm bag2lerobot: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # model loading errors and the like: one line, named
        name = type(exc).__name__
        if name in ("ModelLoadError",):
            print(f"wvm bag2lerobot: {exc}", file=sys.stderr)
            return 1
        raise
    print(f"wrote {rep.output}: {len(rep.episodes)} episodes, {rep.frames} frames at {rep.fps} fps, values {rep.values}")
    for e in rep.episodes:
        dropped = sum(e["dropped_frames"].values())
        ignored = sum(e.get("ignored_messages", {}).values())
        print(f"  episode {e['episode_index']}: {e['bag']} outcome={e['outcome'] or '?'} frames={e['frames']}"
              + (f" (dropped {dropped}: {json.dumps(e['dropped_frames'])})" if dropped else "")
              + (f" (ignored {ignored} messages: {json.dumps(e['ignored_messages'])})" if ignored else ""))
    for s in rep.skipped:
        print(f"  skipped {s}")
    return 0
