"""`wvm bench logger`: can wvm_logger keep up with two 640x480 cameras at 30 Hz plus Progress?

    this process (publishers: N cameras rgb8 + Progress at --rate, START / END events)
        --real DDS (reliable)--> the real wvm_logger process --> one MCAP bag

For each writer the same attempt is published and the bag is read back: recorded /
published per topic (target: zero dropped), the logger's time spent writing per message
and its CPU time. The baseline, measured in the same run, is the same node with
`writer_mode: naive` (no chunks; every message written and flushed on its own, the
straightforward way to be crash safe). `ratio` = baseline write time per message / ours.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from . import write_result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=10.0, help="seconds of publishing per writer")
    p.add_argument("--rate", type=float, default=30.0, help="camera and Progress rate (Hz)")
    p.add_argument("--frame-size", default="480x640", help="HxW of the rgb8 images")
    p.add_argument("--cameras", type=int, default=2, help="number of camera topics")
    p.add_argument("--compression", default="none", help="MCAP chunk compression of the logger (none|zstd|lz4)")
    p.add_argument("--drain-s", type=float, default=3.5,
                   help="wait between the last message and END (reliable repairs take up to one heartbeat, 3 s)")
    p.add_argument("--no-baseline", action="store_true", help="skip the naive-writer run")
    p.add_argument("--stream", action="store_true",
                   help="also measure the logger's writer_mode stream (unchunked, periodic flush)")
    p.add_argument("--keep-bags", action="store_true", help="keep the recorded bags under OUTPUT/bench_logger_bags")


def _camera_topics(n: int) -> list[str]:
    return ["/camera/image_raw"] + [f"/camera{i + 1}/image_raw" for i in range(1, n)]


def _measure(node, pubs, msgs, cam_topics, args, procs, env, out_dir: Path, mode: str) -> dict:
    from wvm_msgs.msg import EpisodeEvent

    from wvm_ros.core.bag import count_messages_mcap, count_messages_rosbags

    bags = out_dir / f"bags_{mode}"
    shutil.rmtree(bags, ignore_errors=True)
    stats_file = out_dir / f"logger_stats_{mode}.json"
    topics = cam_topics + ["/wvm/progress", "/wvm/episode_event"]
    argv = [sys.executable, "-m", "wvm_ros.nodes.data_logger_node", "--ros-args",
            "-p", f"output_dir:={bags}", "-p", f"topics:=[{','.join(repr(t) for t in topics)}]",
            "-p", f"writer_mode:={mode}", "-p", f"stats_file:={stats_file}", "-p", "min_free_mb:=256.0",
            "-p", f"compression:={args.compression}", "-p", "qos_depth:=100"]
    child = procs.start(f"logger_{mode}", argv, env=env)
    deadline = time.monotonic() + 60
    while not all(p.get_subscription_count() > 0 for p in pubs.values()):
        if not child.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"wvm_logger ({mode}) did not subscribe to every topic:\n{child.log_tail()}")
        time.sleep(0.05)
    time.sleep(1.0)  # discovery completes on the reader side too

    def event(kind, outcome=""):
        e = EpisodeEvent()
        e.header.stamp = node.get_clock().now().to_msg()
        e.episode_id, e.attempt, e.kind, e.outcome, e.task = "bench", 1, kind, outcome, "bench"
        e.progress = float("nan")
        pubs["/wvm/episode_event"].publish(e)

    event(EpisodeEvent.START)
    time.sleep(0.3)
    published = {t: 0 for t in topics}
    published["/wvm/episode_event"] = 1
    n = int(args.duration * args.rate)
    period = 1.0 / args.rate
    t_start = time.monotonic()
    late = 0
    for i in range(n):
        target = t_start + i * period
        now = time.monotonic()
        if now < target:
            time.sleep(target - now)
        elif now - target > period:
            late += 1
        stamp = node.get_clock().now().to_msg()
        for t in cam_topics:
            m = msgs[t][i % len(msgs[t])]
            m.header.stamp = stamp
            pubs[t].publish(m)
            published[t] += 1
        pm = msgs["/wvm/progress"]
        pm.header.stamp = stamp
        pm.progress = float(i / n)
        pubs["/wvm/progress"].publish(pm)
        published["/wvm/progress"] += 1
    pub_elapsed = time.monotonic() - t_start
    # let the last messages arrive: a reliable sample lost on the way is repaired after the
    # writer's next heartbeat (Fast DDS: every 3 s), so END waits longer than that
    time.sleep(args.drain_s)
    event(EpisodeEvent.END, "success")
    published["/wvm/episode_event"] += 1
    deadline = time.monotonic() + 60
    while not list(bags.glob("*/metadata.yaml")):
        if not child.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"wvm_logger ({mode}) did not close the bag:\n{child.log_tail()}")
        time.sleep(0.1)
    procs.stop(child)
    bag = sorted(bags.glob("*/metadata.yaml"))[0].parent
    a, b = count_messages_rosbags(bag), count_messages_mcap(bag)
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    recorded = {t: int(a.get(t, 0)) for t in topics}
    dropped = {t: published[t] - recorded[t] for t in topics}
    writes = max(1, int(stats.get("write_calls", sum(recorded.values()))))
    size = sum(f.stat().st_size for f in bag.glob("*.mcap"))
    res = {
        "writer_mode": mode,
        "published": published, "recorded": recorded, "dropped": dropped,
        "dropped_total": int(sum(dropped.values())),
        "recorded_over_published": float(sum(recorded.values()) / max(1, sum(published.values()))),
        "readers_agree": a == b,
        "write_time_s": float(stats.get("write_time_s", float("nan"))),
        "write_us_per_msg": float(stats.get("write_time_s", float("nan")) / writes * 1e6),
        "logger_cpu_s": float(stats.get("cpu_s", float("nan"))),
        "publish_elapsed_s": pub_elapsed, "publisher_late_ticks": late,
        "bag_mb": size / 2**20, "bag_mb_per_s": size / 2**20 / max(1e-9, pub_elapsed),
    }
    if not args.keep_bags:
        shutil.rmtree(bags, ignore_errors=True)
    return res


def run(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from wvm_msgs.msg import EpisodeEvent, Progress

    from wvm_ros.proc import ProcessGroup, ros_test_env

    try:
        h, w = (int(v) for v in str(args.frame_size).lower().split("x"))
    except ValueError:
        print(f"wvm bench logger: --frame-size {args.frame_size!r}: expected HxW, e.g. 480x640", file=sys.stderr)
        return 2
    if args.cameras < 1 or args.rate <= 0 or args.duration <= 0:
        print("wvm bench logger: --cameras >= 1, --rate > 0 and --duration > 0 expected", file=sys.stderr)
        return 2
    out = Path(args.output)
    work = out / "bench_logger_work"
    work.mkdir(parents=True, exist_ok=True)
    env = ros_test_env()           # own DDS domain, localhost discovery
    import os
    for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "RMW_IMPLEMENTATION"):
        os.environ[k] = env[k]
    ctx = Context()
    rclpy.init(context=ctx)
    cam_topics = _camera_topics(args.cameras)
    results = {}
    try:
        node = Node("bench_logger_pub", context=ctx)
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        pubs = {t: node.create_publisher(Image, t, qos) for t in cam_topics}
        pubs["/wvm/progress"] = node.create_publisher(Progress, "/wvm/progress", qos)
        pubs["/wvm/episode_event"] = node.create_publisher(EpisodeEvent, "/wvm/episode_event", qos)
        rng = np.random.default_rng(0)
        msgs = {}
        for ci, t in enumerate(cam_topics):
            frames = []
            for k in range(4):   # a few distinct frames, reused (the content does not matter to the writer)
                m = Image()
                m.header.frame_id = f"camera{ci}"
                m.height, m.width, m.encoding, m.step = h, w, "rgb8", w * 3
                m.data = rng.integers(0, 256, h * w * 3, dtype=np.uint8).tobytes()
                frames.append(m)
            msgs[t] = frames
        pm = Progress()
        pm.valid, pm.chunk, pm.task, pm.episode_id, pm.attempt = True, [0.0] * 4, "bench", "bench", 1
        pm.model_name, pm.checkpoint_id = "tiny", "bench"
        msgs["/wvm/progress"] = pm
        with ProcessGroup(log_dir=work / "logs") as procs:
            modes = ["chunked"] + (["stream"] if args.stream else []) + ([] if args.no_baseline else ["naive"])
            for mode in modes:
                print(f"wvm bench logger: {mode} writer, {args.cameras} x {w}x{h} rgb8 + Progress at "
                      f"{args.rate:g} Hz for {args.duration:g} s ...", flush=True)
                results[mode] = _measure(node, pubs, msgs, cam_topics, args, procs, env, work, mode)
                r = results[mode]
                print(f"  recorded/published {r['recorded_over_published']:.4f}, dropped {r['dropped_total']}, "
                      f"{r['write_us_per_msg']:.0f} us/msg writing, logger CPU {r['logger_cpu_s']:.1f} s", flush=True)
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
    result = {
        "config": {"cameras": args.cameras, "frame_size": [h, w], "rate_hz": args.rate, "duration_s": args.duration,
                   "compression": args.compression, "transport": "DDS (rmw_fastrtps_cpp), reliable, depth 100"},
        "wvm_logger": results["chunked"],
        "target": "zero dropped messages",
        "target_met": results["chunked"]["dropped_total"] == 0,
    }
    if "stream" in results:
        result["wvm_logger_stream"] = results["stream"]
    if "naive" in results:
        result["baseline"] = results["naive"]
        result["baseline_definition"] = "same node, writer_mode naive: unchunked MCAP, one write + flush per message"
        ours = results["chunked"]["write_us_per_msg"]
        result["ratio"] = float(results["naive"]["write_us_per_msg"] / ours) if ours > 0 else float("nan")
        result["ratio_definition"] = "baseline write time per message / wvm_logger write time per message"
        if "stream" in results and results["stream"]["write_us_per_msg"] > 0:
            result["ratio_stream"] = float(results["naive"]["write_us_per_msg"] / results["stream"]["write_us_per_msg"])
    path = write_result(out, "logger", result)
    if not args.keep_bags:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {path}" + (f" (ratio {result['ratio']:.2f}x)" if "ratio" in result else ""))
    return 0 if result["target_met"] else 1
