"""`wvm demo`: the whole graph on the PushT simulator, headless.

    wvm demo --output runs/demo --attempts 2

Starts the graph of `wvm_ros.graph` (sim robot, value node, policy node, data logger) as
separate processes over DDS (same as `wvm up`), follows the attempts live in the terminal
(this process subscribes to Progress, episode events and the simulator's ground truth),
stops after N attempts and writes under OUTPUT:
  bags/<episode>_att<NNN>/   one valued MCAP bag per attempt (the data logger)
  logs/<node>.log            every node's output
  progress.png               predicted vs ground-truth progress (and the success classifier's
                             P(done) when the value node has one), one panel per attempt
  summary.json               attempts, outcomes, deciding events, bags
Exit 0 when N attempts finished; 1 with the failing node's log tail when a node dies;
3 when the attempts did not finish within --timeout.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HELP = "run the whole graph on the PushT simulator, headless, and summarise"

OUTCOME_KINDS = ("SUCCESS", "FAILURE", "STALL", "REGRESSION", "TIMEOUT", "ABORT", "HUMAN_LABEL")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", default="wvm_demo", help="folder for bags, logs, plot and summary")
    parser.add_argument("--attempts", "-n", type=int, default=2, help="stop after this many attempts")
    parser.add_argument("--attempt-timeout", type=float, default=20.0,
                        help="policy: an attempt without success ends with TIMEOUT after this many seconds")
    parser.add_argument("--max-attempts", type=int, default=2,
                        help="policy: attempts per episode (retries after a failure)")
    parser.add_argument("--checkpoint", default="", help="WVM checkpoint; empty: shipped models/wvm-tiny-pusht "
                                                          "when present, else UNTRAINED random weights")
    parser.add_argument("--task", default="", help="task instruction (default: config/wvm.yaml)")
    parser.add_argument("--params-file", default="", help="parameter YAML (default: config/wvm.yaml)")
    parser.add_argument("--size", type=int, default=96, help="rendered image width = height (pixels)")
    parser.add_argument("--rate", type=float, default=10.0, help="simulator / camera rate (Hz)")
    parser.add_argument("--record", default="true", metavar="true|false", help="run the data logger")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                        help="extra parameter override (YAML value), e.g. wvm_policy.inject_failure=stuck")
    parser.add_argument("--timeout", type=float, default=0.0,
                        help="give up after this many seconds (default: attempts x (attempt timeout + 15) + 60)")
    parser.add_argument("--domain-id", type=int, default=None,
                        help="ROS_DOMAIN_ID for the graph (default: random, localhost-only discovery)")
    parser.add_argument("--no-live", action="store_true", help="no live terminal display")


@dataclass
class Attempt:
    episode_id: str
    attempt: int
    t0: float
    pred: list = field(default_factory=list)     # (t, progress)
    gt: list = field(default_factory=list)       # (t, ground-truth progress)
    succ: list = field(default_factory=list)     # (t, success classifier's P(done)), when it has one
    events: list = field(default_factory=list)   # (t, kind, reason)
    outcome: str = ""
    decided_by: str = ""
    final_pred: float = float("nan")
    final_gt: float = float("nan")
    sim_success: bool | None = None
    ended: bool = False
    untrained: bool = False

    def to_dict(self) -> dict:
        return {"episode_id": self.episode_id, "attempt": self.attempt, "outcome": self.outcome,
                "decided_by": self.decided_by, "final_predicted_progress": _num(self.final_pred),
                "final_ground_truth_progress": _num(self.final_gt), "sim_success": self.sim_success,
                "duration_s": round(self.events[-1][0], 2) if self.events else None,
                "progress_messages": len(self.pred), "events": [[round(t, 3), k, r] for t, k, r in self.events]}


def _num(x: float):
    return None if x is None or x != x else round(float(x), 4)


class DemoMonitor:
    """Collects Progress / events / ground truth per attempt (called from the probe's thread)."""

    def __init__(self):
        from wvm_msgs.msg import EpisodeEvent

        self.names = {getattr(EpisodeEvent, n): n for n in dir(EpisodeEvent) if n.isupper() and not n.startswith("_")
                      and isinstance(getattr(EpisodeEvent, n), int)}
        self.lock = threading.Lock()
        self.attempts: list[Attempt] = []
        self.current: Attempt | None = None
        self.last_pred = float("nan")
        self.last_gt = float("nan")
        self.last_success: bool | None = None
        self.state = "waiting for the graph"
        self.untrained = False
        self.progress_count = 0
        self.diagnostics: dict[str, dict] = {}   # latest DiagnosticStatus per name
        self.last_overlay = None                  # latest /wvm/overlay Image

    @property
    def finished(self) -> int:
        with self.lock:
            return sum(a.ended for a in self.attempts)

    def on_message(self, topic: str, msg) -> None:
        now = time.monotonic()
        with self.lock:
            if topic == "/wvm/episode_event":
                kind = self.names.get(msg.kind, str(msg.kind))
                key = (msg.episode_id, int(msg.attempt))
                cur = (self.current.episode_id, self.current.attempt) if self.current else None
                # a START lost to DDS discovery: the attempt begins at its first event seen
                if kind == "START" or (key != cur and kind not in ("END", "RETRY") and msg.episode_id
                                       and all((a.episode_id, a.attempt) != key for a in self.attempts)):
                    self.current = Attempt(msg.episode_id, int(msg.attempt), now)
                    self.attempts.append(self.current)
                a = self.current
                if a is None or (msg.episode_id, int(msg.attempt)) != (a.episode_id, a.attempt):
                    return
                a.events.append((now - a.t0, kind, msg.reason))
                if kind in OUTCOME_KINDS and not a.decided_by:
                    a.decided_by = f"{kind}: {msg.reason}"
                if kind == "END":
                    a.outcome = msg.outcome or "unknown"
                    a.final_pred = self.last_pred
                    a.final_gt = self.last_gt
                    a.sim_success = self.last_success
                    a.ended = True
                self.state = f"{msg.episode_id} #{msg.attempt} {kind}" + (f" ({msg.outcome})" if msg.outcome else "")
            elif topic == "/wvm/progress":
                self.progress_count += 1
                self.untrained = bool(msg.untrained)
                a = self.current
                if msg.valid and a is not None and not a.ended and (msg.episode_id, int(msg.attempt)) == (
                        a.episode_id, a.attempt):
                    a.pred.append((now - a.t0, float(msg.progress)))
                    ps = float(getattr(msg, "success", math.nan))
                    if math.isfinite(ps):
                        a.succ.append((now - a.t0, ps))
                    a.untrained = bool(msg.untrained)
                    self.last_pred = float(msg.progress)
            elif topic == "/sim/ground_truth_progress":
                self.last_gt = float(msg.data)
                a = self.current
                if a is not None and not a.ended:
                    a.gt.append((now - a.t0, float(msg.data)))
            elif topic == "/sim/success":
                self.last_success = bool(msg.data)
            elif topic == "/wvm/overlay":
                self.last_overlay = msg
            elif topic == "/diagnostics":
                for st in msg.status:
                    lv = st.level[0] if isinstance(st.level, (bytes, bytearray)) else int(st.level)
                    self.diagnostics[st.name] = {"level": lv, "message": st.message,
                                                 **{kv.key: kv.value for kv in st.values}}

    def line(self) -> str:
        with self.lock:
            p = "--" if self.last_pred != self.last_pred else f"{self.last_pred:.2f}"
            g = "--" if self.last_gt != self.last_gt else f"{self.last_gt:.2f}"
            u = " UNTRAINED" if self.untrained else ""
            return f"{self.state} | predicted {p}{u} | ground truth {g}"


def plot_attempts(attempts: list[Attempt], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(attempts))
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(attempts):
            ax.axis("off")
            continue
        a = attempts[i]
        if a.gt:
            t, v = zip(*a.gt)
            ax.plot(t, v, color="0.3", lw=1.5, label="ground truth (sim coverage)")
        if a.pred:
            t, v = zip(*a.pred)
            ax.plot(t, v, color="tab:blue", lw=1.5, marker=".", ms=3,
                    label="WVM (UNTRAINED)" if a.untrained else "WVM predicted")
        if a.succ:
            t, v = zip(*a.succ)
            ax.plot(t, v, color="tab:orange", lw=1.0, label="success classifier P(done)")
        for t, kind, _ in a.events:
            if kind not in ("START",):
                ax.axvline(t, color="tab:red" if kind in OUTCOME_KINDS else "0.7", lw=0.8, ls="--")
                ax.text(t, 1.02, kind, fontsize=6, rotation=90, va="bottom", ha="right")
        ax.set_ylim(-0.02, 1.12)
        ax.set_xlabel("time since START (s)")
        ax.set_ylabel("progress")
        ax.set_title(f"{a.episode_id} #{a.attempt}: {a.outcome or 'unfinished'}", fontsize=9)
        if a.gt or a.pred:
            ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_overlay(msg, path: Path) -> Path | None:
    """The last /wvm/overlay image as a PNG (what RViz / Foxglove would show), or None."""
    if msg is None:
        return None
    import cv2

    from wvm_ros.ros.images import ImageError, image_msg_to_rgb8

    try:
        rgb = image_msg_to_rgb8(msg)
    except ImageError:
        return None
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def _parse_sets(items: list[str]) -> dict[str, dict]:
    import yaml

    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        node, dot, param = key.partition(".")
        if not sep or not dot or not node or not param:
            raise ValueError(f"--set {item!r}: expected NODE.PARAM=VALUE, e.g. wvm_policy.timeout_s=15")
        out.setdefault(node, {})[param] = yaml.safe_load(value) if value != "" else ""
    return out


def split_bags(all_bags: list[dict], keys: set, since_ns: int) -> tuple[list[dict], list[str], list[str]]:
    """This run's bags of the counted attempts (and unreadable ones, reported), the paths of this
    run's bags of an attempt started after the last counted one (cut short by the stop), and the
    paths of bags an earlier run left in the folder (kept, not counted). A bag belongs to this run
    when its first message is not older than `since_ns` (its folder's time when the bag has no
    start time)."""
    def start(b):
        if b.get("start_ns") is not None:
            return b["start_ns"]
        try:
            return Path(b["path"]).stat().st_mtime_ns
        except OSError:
            return since_ns
    ours = [b for b in all_bags if "error" in b or start(b) >= since_ns]
    earlier = [b["path"] for b in all_bags if b not in ours]
    bags = [b for b in ours if (b.get("episode_id"), str(b.get("attempt"))) in keys or "error" in b]
    extra = [b["path"] for b in ours if b not in bags]
    return bags, extra, earlier


def find_bags(bag_dir: Path) -> list[dict]:
    import yaml

    bags = []
    for meta in sorted(bag_dir.glob("*/metadata.yaml")):
        try:
            doc = yaml.safe_load(meta.read_text()) or {}
            info = doc.get("rosbag2_bagfile_information", {})
            custom = info.get("custom_data") or {}
            start = (info.get("starting_time") or {}).get("nanoseconds_since_epoch")
            bags.append({"path": str(meta.parent), "messages": info.get("message_count"),
                         "episode_id": custom.get("episode_id"), "attempt": custom.get("attempt"),
                         "outcome": custom.get("outcome"), "start_ns": int(start) if start is not None else None})
        except Exception as e:  # a broken bag is reported, not fatal for the summary
            bags.append({"path": str(meta.parent), "error": str(e)})
    return bags


def run(args: argparse.Namespace) -> int:
    from wvm_ros.graph import GraphError, build_graph, parse_bool
    from wvm_ros.proc import ros_test_env
    from wvm_ros.runner import GraphRunner

    if args.attempts < 1:
        print("wvm demo: --attempts must be >= 1", file=sys.stderr)
        return 2
    out = Path(args.output).expanduser().resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe_file = out / ".write_test"
        probe_file.write_text("")
        probe_file.unlink()
    except OSError as e:
        print(f"wvm demo: cannot write to output folder {out}: {e}", file=sys.stderr)
        return 2
    bag_dir, log_dir = out / "bags", out / "logs"
    try:
        record = parse_bool(args.record, "record")
        sets = _parse_sets(args.set)
    except (GraphError, ValueError) as e:
        print(f"wvm demo: {e}", file=sys.stderr)
        return 2
    size = int(args.size)
    overrides = {
        "sim_robot": {"width": size, "height": size, "rate_hz": float(args.rate)},
        "wvm_value": {"image_width": size, "image_height": size},
        "wvm_policy": {"episodes": int(args.attempts), "max_attempts": int(args.max_attempts),
                       "timeout_s": float(args.attempt_timeout), "start_delay_s": 3.0,
                       "rate_hz": float(args.rate)},
    }
    for node, params in sets.items():
        overrides.setdefault(node, {}).update(params)
    try:
        specs = build_graph(mode="sim", checkpoint=args.checkpoint, task=args.task, record=record,
                            params_file=args.params_file, output_dir=str(bag_dir), overrides=overrides)
    except GraphError as e:
        print(f"wvm demo: {e}", file=sys.stderr)
        return 2

    env = ros_test_env(args.domain_id)
    # this process talks to the graph: same domain, localhost-only discovery
    for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "RMW_IMPLEMENTATION"):
        os.environ[k] = env[k]
    timeout = args.timeout or args.attempts * (args.attempt_timeout + 15.0) + 60.0

    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    from std_msgs.msg import Bool, Float32
    from tqdm import tqdm
    from wvm_msgs.msg import EpisodeEvent, Progress

    from wvm_ros.ros.testing import TopicProbe

    monitor = DemoMonitor()
    say = (lambda s: tqdm.write(s, file=sys.stderr))
    print(f"[wvm demo] ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']} (localhost); output {out}", file=sys.stderr)
    runner = GraphRunner(specs, log_dir=log_dir, env=env, echo=say)
    probe = None
    rc = 0
    t_start = time.monotonic()
    run_started_ns = time.time_ns() - 1_000_000_000   # bags of this run start after this (1 s margin)
    bar = tqdm(total=args.attempts, unit="attempt", desc="wvm demo", file=sys.stderr, disable=args.no_live or not sys.stderr.isatty(),
               dynamic_ncols=True)
    try:
        probe = TopicProbe({"/wvm/episode_event": EpisodeEvent, "/wvm/progress": Progress,
                            "/sim/ground_truth_progress": Float32, "/sim/success": Bool,
                            "/diagnostics": DiagnosticArray, "/wvm/overlay": Image},
                           name="wvm_demo_monitor", on_message=monitor.on_message, keep=10)
        # the value node loads its model (the slowest start) while the simulator and logger come
        # up; the policy starts last, so that the first attempt is valued from its first frame
        # and its events find every subscriber already discovered
        first = [s.name for s in specs if s.name != "wvm_policy"]
        runner.start(only=first)
        monitor.state = "loading the value model"

        def ready() -> bool:
            if runner.group.dead():
                return True
            return probe.node.count_publishers("/wvm/progress") > 0 and (
                "wvm_logger" not in first or probe.node.count_subscribers("/wvm/episode_event") >= 1 + len(
                    [n for n in first if n in ("wvm_value", "wvm_logger")]))
        t_ready = time.monotonic()
        while not ready() and time.monotonic() - t_ready < 180:
            bar.set_postfix_str(monitor.line(), refresh=True)
            time.sleep(0.2)
        runner.start()
        monitor.state = "waiting for the first attempt"
        seen_events = 0
        last_line = 0.0
        while True:
            died = runner.group.dead()
            if died:
                bar.close()
                runner.report_death(died[0])
                rc = 1
                break
            done = monitor.finished
            if done > bar.n:
                bar.update(done - bar.n)
            bar.set_postfix_str(monitor.line(), refresh=True)
            if bar.disable and not args.no_live and time.monotonic() - last_line > 5.0:
                say(f"[wvm demo] {time.monotonic() - t_start:5.1f}s {done}/{args.attempts} attempts | {monitor.line()}")
                last_line = time.monotonic()
            with monitor.lock:
                new = [(a, e) for a in monitor.attempts for e in a.events]
            for a, (t, kind, reason) in new[seen_events:]:
                say(f"[wvm demo] {a.episode_id} #{a.attempt} {kind:<11} t={t:5.1f}s  {reason}")
            seen_events = len(new)
            if done >= args.attempts:
                break
            if time.monotonic() - t_start > timeout:
                bar.close()
                print(f"[wvm demo] timed out after {timeout:.0f} s with {done}/{args.attempts} attempts finished "
                      f"(state: {monitor.line()}); node logs in {log_dir}", file=sys.stderr)
                rc = 3
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("\n[wvm demo] interrupted: stopping the graph", file=sys.stderr)
        rc = 130
    finally:
        bar.close()
        if probe is not None:
            probe.close()
        runner.stop()
    elapsed = time.monotonic() - t_start

    with monitor.lock:
        attempts = [a for a in monitor.attempts if a.ended][: args.attempts] or list(monitor.attempts)
    untrained = any(a.untrained for a in attempts) or monitor.untrained
    plot = plot_attempts(attempts, out / "progress.png",
                         title="predicted vs ground-truth progress" + (" (UNTRAINED model)" if untrained else ""))
    overlay_png = save_overlay(monitor.last_overlay, out / "overlay.png")
    all_bags = find_bags(bag_dir) if record else []
    keys = {(a.episode_id, str(a.attempt)) for a in attempts}
    # an attempt the policy started after the last counted one is cut short by the stop; bags
    # of earlier runs into the same folder are kept and listed apart
    bags, extra, earlier = split_bags(all_bags, keys, run_started_ns)
    summary = {"ok": rc == 0, "exit_code": rc, "elapsed_s": round(elapsed, 1), "attempts": [a.to_dict() for a in attempts],
               "untrained_model": untrained, "plot": str(plot), "overlay": str(overlay_png) if overlay_png else None, "bags": bags, "interrupted_bags": extra, "earlier_bags": earlier, "logs": str(log_dir),
               "progress_messages": monitor.progress_count, "diagnostics": monitor.diagnostics}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))

    print(f"\nwvm demo: {len(attempts)} attempt(s) in {elapsed:.0f} s"
          + ("  [value model UNTRAINED: predictions are random]" if untrained else ""))
    for a in attempts:
        gt = "--" if a.final_gt != a.final_gt else f"{a.final_gt:.2f}"
        pr = "--" if a.final_pred != a.final_pred else f"{a.final_pred:.2f}"
        sim = {True: "sim: success", False: "sim: not solved", None: "sim: ?"}[a.sim_success]
        print(f"  {a.episode_id} #{a.attempt}: {a.outcome or 'unfinished':8s} final predicted {pr}, "
              f"ground truth {gt} ({sim}); {a.decided_by or 'no outcome event'}")
    if record:
        print(f"  bags ({len(bags)}): {bag_dir}")
        for b in bags:
            print(f"    {b['path']}  ({b.get('messages')} messages, outcome {b.get('outcome')})")
        if extra:
            print(f"  ({len(extra)} bag(s) of an attempt started after the last one were cut short by the stop)")
        if earlier:
            print(f"  ({len(earlier)} bag(s) of earlier runs in {bag_dir} kept, not counted here)")
    vd = next((v for k, v in monitor.diagnostics.items() if k.startswith("wvm_value")), None)
    if vd:
        print(f"  value node: input {vd.get('input rate (Hz)')} Hz, Progress {vd.get('output rate (Hz)')} Hz, "
              f"estimates {vd.get('estimate rate (Hz)')} Hz, latency mean {vd.get('latency mean (ms)')} ms / "
              f"p95 {vd.get('latency p95 (ms)')} ms, dropped {vd.get('dropped frames')}, "
              f"rejected {vd.get('rejected frames')}")
    if overlay_png:
        print(f"  last overlay frame: {overlay_png}")
    print(f"  plot: {plot}\n  summary: {out / 'summary.json'}\n  logs: {log_dir}")
    return rc
