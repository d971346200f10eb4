"""`wvm bench node`: image stamp -> Progress publish, end to end through real DDS.

    publisher process (30 Hz, stamped at publish) -> the real value node process -> this
    process subscribes to /wvm/progress and measures

* end-to-end latency of every NEW estimate: receive time - header.stamp (the stamp of the
  image the estimate used; both on this machine's clock). p50 / p95 / p99.
* sustained rate: Progress messages per second (the node publishes one per processed frame;
  frames it could not keep up with are dropped, never queued), and the fraction of frames
  that got a Progress.

Baseline (same run): the value node has no naive mode, so the naive estimator
(per-frame full-window torch eager) runs in this process in a 30 Hz loop with the node's
latest-frame semantics (a frame that arrives while inference is busy replaces the waiting
one); its latency is frame arrival -> estimate done. The streaming estimator runs in the
same loop too, so the DDS overhead of the node measurement can be read off.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import numpy as np

from . import percentiles, write_result

TASK = "push the T-shaped block onto the target"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=10.0, help="seconds of measurement through DDS")
    p.add_argument("--baseline-duration", type=float, default=5.0, help="seconds of the in-process baseline loops")
    p.add_argument("--rate", type=float, default=30.0, help="camera rate (Hz)")
    p.add_argument("--frame-size", default="480x640", help="HxW of the published rgb8 images")
    p.add_argument("--checkpoint", default="", help="value node checkpoint ('' = the node's default)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of the value node / the baseline (OMP_NUM_THREADS)")
    p.add_argument("--node-args", default="", help="extra --ros-args for the value node, e.g. '-p backend:=onnxruntime'")
    p.add_argument("--startup-timeout", type=float, default=120.0, help="seconds to wait for the node's first Progress")
    p.add_argument("--target-p99-ms", type=float, default=50.0)
    p.add_argument("--no-baseline", action="store_true", help="skip the in-process baseline loops")


def _hw(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--frame-size must be HxW like 480x640, got {text!r}")
    return h, w


def synthetic_frames(n: int, hw: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (*hw, 3), dtype=np.uint8)
    return [np.ascontiguousarray(np.roll(base, 11 * i, axis=1)) for i in range(n)]


# ------------------------------------------------------------------ publisher process
def publisher_main(argv: list[str] | None = None) -> int:
    """A camera stand-in: rgb8 images at --rate Hz, stamped with the wall clock at publish."""
    ap = argparse.ArgumentParser(prog="wvm_ros.bench.node publisher")
    ap.add_argument("--topic", default="/bench/image_raw")
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--frame-size", default="480x640")
    a = ap.parse_args(argv)
    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from wvm_ros.ros.images import array_to_image_msg
    from wvm_ros.ros.qos import reliable
    from wvm_ros.ros.stamps import sec_to_stamp

    rclpy.init()
    node = Node("bench_camera")
    pub = node.create_publisher(Image, a.topic, reliable(5))
    msgs = [array_to_image_msg(f, "rgb8", frame_id="bench_camera") for f in synthetic_frames(30, _hw(a.frame_size))]
    period = 1.0 / a.rate
    t_next = time.monotonic()
    i = 0
    try:
        while rclpy.ok():
            m = msgs[i % len(msgs)]
            m.header.stamp = sec_to_stamp(time.time())
            pub.publish(m)
            i += 1
            t_next += period
            delay = t_next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                t_next = time.monotonic()  # fell behind: do not burst
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        try:
            rclpy.shutdown()
        except Exception:  # noqa: BLE001
            pass
    return 0


# ------------------------------------------------------------------ baseline loop
def realtime_loop(est, frames, rate: float, duration: float) -> dict:
    """Frames arrive every 1/rate s; one worker infers on the newest waiting frame
    (latest-frame semantics, like the value node). Latency = arrival -> estimate done."""
    slot: list = [None]
    cv = threading.Condition()
    lat: list[float] = []
    new_lat: list[float] = []
    done = {"n": 0, "dropped": 0, "stop": False}
    last = [None]

    def worker():
        while True:
            with cv:
                while slot[0] is None and not done["stop"]:
                    cv.wait(0.1)
                if slot[0] is None:
                    return
                (f, stamp, t_arr), slot[0] = slot[0], None
            e = est.push(f, stamp)
            t = time.perf_counter()
            lat.append(t - t_arr)
            if e is not None and e is not last[0]:
                new_lat.append(t - t_arr)
            last[0] = e
            done["n"] += 1

    th = threading.Thread(target=worker, daemon=True)
    th.start()
    period = 1.0 / rate
    n = int(duration * rate)
    t0 = time.perf_counter()
    for i in range(n):
        t_arr = t0 + i * period
        wait = t_arr - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        with cv:
            if slot[0] is not None:
                done["dropped"] += 1
            slot[0] = (frames[i % len(frames)], i * period, time.perf_counter())
            cv.notify()
    with cv:
        done["stop"] = True
        cv.notify()
    th.join(timeout=60)
    elapsed = time.perf_counter() - t0
    return {"latency_all_frames": percentiles(lat), "latency_new_estimates": percentiles(new_lat),
            "frames_in": n, "frames_out": done["n"], "dropped": done["dropped"],
            "output_rate_hz": done["n"] / elapsed, "fraction_processed": done["n"] / max(n, 1)}


# ------------------------------------------------------------------ DDS measurement
def measure_node(args, hw) -> dict:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from wvm_msgs.msg import Progress

    from wvm_ros.proc import ProcessGroup, ros_test_env
    from wvm_ros.ros.qos import reliable
    from wvm_ros.ros.stamps import stamp_to_sec

    env = ros_test_env()
    for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "RMW_IMPLEMENTATION"):
        os.environ[k] = env[k]
    node_env = dict(env, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    topic = "/bench/image_raw"
    node_cmd = [sys.executable, "-m", "wvm_ros.nodes.value_node", "--ros-args",
                "-p", f"image_topics:=[{topic}]", "-p", f"preset:={args.preset}", "-p", "overlay_every:=0",
                "-p", f"task:={TASK}"]
    if args.checkpoint:
        node_cmd += ["-p", f"checkpoint:={args.checkpoint}"]
    if args.node_args:
        node_cmd += args.node_args.split()
    log_dir = os.path.join(args.output, "bench_node_logs")
    ctx = Context()
    rclpy.init(context=ctx)
    recv: list[tuple[float, float, bool, float]] = []   # (receive wall time, header stamp, valid, inference_latency)
    with ProcessGroup(log_dir=log_dir) as group:
        node_proc = group.start("value_node", node_cmd, env=node_env)
        node = Node("bench_progress_listener", context=ctx)
        node.create_subscription(Progress, "/wvm/progress",
                                 lambda m: recv.append((time.time(), stamp_to_sec(m.header.stamp), bool(m.valid),
                                                        float(m.inference_latency))),
                                 reliable(50))
        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(node)
        group.start("camera", [sys.executable, "-m", "wvm_ros.bench.node", "--rate", str(args.rate),
                               "--frame-size", args.frame_size, "--topic", topic], env=node_env)
        try:
            deadline = time.monotonic() + args.startup_timeout
            while not any(r[2] for r in recv):
                ex.spin_once(timeout_sec=0.1)
                if not node_proc.alive():
                    raise RuntimeError(f"value node exited with code {node_proc.popen.poll()}:\n{node_proc.log_tail(30)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no valid Progress within {args.startup_timeout:.0f} s; value node log:\n"
                                       f"{node_proc.log_tail(30)}")
            t_settle = time.monotonic() + 1.0  # let start-up transients pass (spinning, so nothing queues)
            while time.monotonic() < t_settle:
                ex.spin_once(timeout_sec=0.05)
            recv.clear()
            t_start = time.time()
            t_end = time.monotonic() + args.duration
            while time.monotonic() < t_end:
                ex.spin_once(timeout_sec=0.05)
            elapsed = time.time() - t_start
        finally:
            ex.shutdown()
            node.destroy_node()
            try:
                rclpy.shutdown(context=ctx)
            except Exception:  # noqa: BLE001
                pass
    seen: set[float] = set()
    new_lat, infer_lat = [], []
    for t_recv, stamp, valid, inf in recv:
        if valid and stamp not in seen:
            seen.add(stamp)
            new_lat.append(t_recv - stamp)
            infer_lat.append(inf)
    return {"latency_new_estimates": percentiles(new_lat),
            "node_reported_inference_latency": percentiles(infer_lat), "progress_msgs": len(recv),
            "valid_msgs": sum(1 for r in recv if r[2]), "output_rate_hz": len(recv) / elapsed,
            "input_rate_hz": args.rate, "fraction_processed": len(recv) / max(1.0, elapsed * args.rate),
            "duration_s": elapsed, "logs": log_dir}


def run(args: argparse.Namespace) -> int:
    hw = _hw(args.frame_size)
    os.makedirs(args.output, exist_ok=True)
    print(f"[bench node] {args.rate:g} Hz {hw[0]}x{hw[1]} rgb8 -> value node ({args.preset}) -> /wvm/progress, "
          f"{args.duration:g} s")
    try:
        node_res = measure_node(args, hw)
    except RuntimeError as exc:
        print(f"wvm bench node: {exc}", file=sys.stderr)
        return 1
    result = {"node": node_res, "rate_hz": args.rate, "frame_size": list(hw), "preset": args.preset,
              "threads": args.threads, "target_p99_ms": args.target_p99_ms}
    p99 = node_res["latency_new_estimates"]["p99_ms"]
    sustained = node_res["fraction_processed"] >= 0.95
    result["meets_target"] = bool(p99 <= args.target_p99_ms and sustained)
    print(f"value node through DDS: p50 {node_res['latency_new_estimates']['p50_ms']:.1f} ms, p99 {p99:.1f} ms "
          f"(new estimates, n={node_res['latency_new_estimates']['n']}), Progress at "
          f"{node_res['output_rate_hz']:.1f} Hz of {args.rate:g} ({100 * node_res['fraction_processed']:.0f} % of frames); "
          f"node-reported inference p50 {node_res['node_reported_inference_latency']['p50_ms']:.1f} ms")
    if not args.no_baseline:
        import torch

        from wvm_ros.core.backends.wvm import NaiveValueEstimator
        from wvm_ros.core.model import load_value_model
        from wvm_ros.core.streaming import StreamingValueEstimator
        from wvm_ros.nodes.value_node import resolve_checkpoint

        torch.set_num_threads(args.threads)
        model = load_value_model(resolve_checkpoint(args.checkpoint), preset=args.preset)
        frames = synthetic_frames(30, hw)
        with torch.inference_mode():
            naive = realtime_loop(NaiveValueEstimator(model, TASK), frames, args.rate, args.baseline_duration)
            stream = realtime_loop(StreamingValueEstimator(model, TASK), frames, args.rate, args.baseline_duration)
        result.update(baseline="naive estimator, in-process 30 Hz loop (the value node has no naive mode)",
                      naive_in_process=naive, streaming_in_process=stream)
        loops = [("naive (in-process)", naive), ("streaming (in-process)", stream)]
        from wvm_ros.core.backends import BackendError, BackendOptions
        from wvm_ros.core.backends.wvm import build_estimator

        try:  # what the node would do with `backend: onnxruntime`
            est = build_estimator(model, TASK, BackendOptions(backend="onnxruntime", strict=True, threads=args.threads))
            with torch.inference_mode():
                ort_loop = realtime_loop(est, frames, args.rate, args.baseline_duration)
            result["streaming_onnxruntime_in_process"] = ort_loop
            loops.append(("streaming onnxruntime (in-process)", ort_loop))
        except BackendError as exc:
            print(f"[bench node] onnxruntime loop skipped: {exc}")
        r = naive["latency_new_estimates"]["p99_ms"] / max(p99, 1e-6)
        result["ratio"] = r
        result["ratio_definition"] = "naive p99 latency (in-process) / value node p99 latency (through DDS)"
        for name, res in loops:
            print(f"{name}: p50 {res['latency_new_estimates']['p50_ms']:.1f} ms, p99 "
                  f"{res['latency_new_estimates']['p99_ms']:.1f} ms, {res['output_rate_hz']:.1f} Hz "
                  f"({100 * res['fraction_processed']:.0f} % of frames, {res['dropped']} dropped)")
        print(f"ratio (naive p99 / node p99): {r:.1f}x")
    print(f"target (p99 <= {args.target_p99_ms:g} ms and >= 95 % of frames at {args.rate:g} Hz): "
          f"{'met' if result['meets_target'] else 'NOT met'}")
    out = write_result(args.output, "node", result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(publisher_main())
