"""Per-episode outcomes and progress curves of a LeRobot dataset with values. ROS-free.

    rep = dataset_report("datasets/live")        # list of EpisodeSummary
    write_report(rep, "datasets/live/report")    # report.json, report.md, progress_curves.png

Outcome comes from meta/wvm_episodes.jsonl (written by ValuedDatasetWriter: what the logger
or bag2lerobot knew, e.g. "success", "failure", "interrupted") and otherwise from
`next.success` on the episode's last frame. Final progress is the episode's last `progress`
value; when the dataset has `ground_truth_progress` (simulator), its final value is shown
beside it.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


class ReportError(ValueError):
    pass


@dataclass
class EpisodeSummary:
    episode_index: int
    frames: int
    outcome: str
    final_progress: float
    max_progress: float
    final_ground_truth: float | None = None
    task: str = ""
    source: str = ""                     # bag name or episode id / attempt, when known
    progress: list[float] = field(default_factory=list, repr=False)
    ground_truth: list[float] | None = field(default=None, repr=False)


def _scalar(x) -> float:
    a = np.asarray(x).reshape(-1)
    return float(a[0]) if a.size else float("nan")


def dataset_report(dataset: str | os.PathLike, value_column: str = "progress") -> list[EpisodeSummary]:
    import pandas as pd
    import pyarrow.parquet as pq

    root = Path(dataset)
    files = sorted((root / "data").rglob("*.parquet")) if (root / "data").is_dir() else []
    if not files:
        raise ReportError(f"{str(root)!r} is not a LeRobot dataset: no data/**/*.parquet")
    names = pq.read_schema(files[0]).names
    if value_column not in names:
        raise ReportError(f"dataset {str(root)!r} has no {value_column!r} column: not a valued dataset "
                          f"(columns: {', '.join(n for n in names if not n.startswith('observation.'))})")
    cols = ["index", "episode_index", "frame_index", value_column]
    for c in ("next.success", "ground_truth_progress", "task_index"):
        if c in names:
            cols.append(c)
    df = pd.concat([pd.read_parquet(f, columns=cols) for f in files], ignore_index=True)
    df = df.sort_values("index", kind="stable")
    tasks = {}
    tp = root / "meta" / "tasks.parquet"
    if tp.exists():
        t = pd.read_parquet(tp)
        if "task_index" in t.columns:
            tasks = {int(i): str(name) for name, i in zip(t.index, t["task_index"])}
    side = {}
    sp = root / "meta" / "wvm_episodes.jsonl"
    if sp.exists():
        for line in sp.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                side[int(rec["episode_index"])] = rec
    out = []
    for ep, g in df.groupby("episode_index", sort=True):
        prog = [_scalar(v) for v in g[value_column]]
        rec = side.get(int(ep), {})
        outcome = str(rec.get("outcome") or "")
        if not outcome:
            if "next.success" in g.columns:
                outcome = "success" if bool(_scalar(g["next.success"].iloc[-1])) else "failure"
            else:
                outcome = "unknown"
        gt = [_scalar(v) for v in g["ground_truth_progress"]] if "ground_truth_progress" in g.columns else None
        src = rec.get("bag") or (f"{rec.get('episode_id')}/{rec.get('attempt')}" if rec.get("episode_id") else "")
        out.append(EpisodeSummary(
            episode_index=int(ep), frames=len(g), outcome=outcome, final_progress=prog[-1],
            max_progress=float(np.nanmax(prog)) if prog else float("nan"),
            final_ground_truth=(gt[-1] if gt and math.isfinite(gt[-1]) else None),
            task=tasks.get(int(_scalar(g["task_index"].iloc[0])), "") if "task_index" in g.columns else "",
            source=str(src), progress=prog, ground_truth=gt))
    return out


COLORS = {"success": "tab:green", "failure": "tab:red", "abort": "tab:orange", "interrupted": "tab:purple"}


def plot_curves(episodes: list[EpisodeSummary], path: str | os.PathLike, fps: float | None = None,
                title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    seen = set()
    for e in episodes:
        x = np.arange(e.frames) / fps if fps else np.arange(e.frames)
        color = COLORS.get(e.outcome, "tab:gray")
        label = e.outcome if e.outcome not in seen else None
        seen.add(e.outcome)
        ax.plot(x, e.progress, color=color, lw=1.4, alpha=0.85, label=label)
        if e.ground_truth is not None:
            ax.plot(x, e.ground_truth, color=color, lw=0.8, ls="--", alpha=0.5)
        ax.annotate(str(e.episode_index), (x[-1], e.progress[-1]), fontsize=7, color=color)
    ax.set_xlabel("time [s]" if fps else "frame")
    ax.set_ylabel("progress")
    ax.set_ylim(-0.02, 1.05)
    ax.grid(alpha=0.3)
    if any(e.ground_truth is not None for e in episodes):
        ax.plot([], [], color="k", ls="--", lw=0.8, label="ground truth (dashed)")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or f"progress of {len(episodes)} episodes")
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p)
    plt.close(fig)
    return p


def markdown_table(episodes: list[EpisodeSummary]) -> str:
    gt = any(e.final_ground_truth is not None for e in episodes)
    head = "| episode | source | frames | outcome | final progress | max progress |" + (" final ground truth |" if gt else "")
    sep = "|---|---|---|---|---|---|" + ("---|" if gt else "")
    rows = [head, sep]
    for e in episodes:
        row = (f"| {e.episode_index} | {e.source or '-'} | {e.frames} | {e.outcome} | {e.final_progress:.3f} "
               f"| {e.max_progress:.3f} |")
        if gt:
            row += f" {e.final_ground_truth:.3f} |" if e.final_ground_truth is not None else " - |"
        rows.append(row)
    n = len(episodes)
    succ = sum(e.outcome == "success" for e in episodes)
    rows.append("")
    rows.append(f"{n} episodes, {succ} successful ({100 * succ / n:.0f} %)" if n else "no episodes")
    return "\n".join(rows) + "\n"


def write_report(dataset: str | os.PathLike, output: str | os.PathLike | None = None,
                 value_column: str = "progress") -> tuple[list[EpisodeSummary], Path]:
    root = Path(dataset)
    eps = dataset_report(root, value_column)
    out = Path(output) if output else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    fps = None
    info = root / "meta" / "info.json"
    if info.exists():
        fps = json.loads(info.read_text()).get("fps")
    plot_curves(eps, out / "progress_curves.png", fps=fps, title=f"{root.name}: {value_column}")
    (out / "report.md").write_text(f"# {root.name}\n\n" + markdown_table(eps)
                                   + "\n![progress curves](progress_curves.png)\n")
    (out / "report.json").write_text(json.dumps(
        [{k: v for k, v in asdict(e).items() if k not in ("progress", "ground_truth")} for e in eps],
        indent=2) + "\n")
    return eps, out
