"""`wvm weights DATASET --method filtered-binary|filtered-percentile|awr`: per-frame weights
for policy extraction (filtered BC, AWR) from a dataset's values, as a sidecar parquet."""
from __future__ import annotations

import argparse
import sys

HELP = "policy-extraction weights (filtered BC, AWR) from a valued dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="LeRobot dataset folder (with a per-frame value column)")
    parser.add_argument("--method", required=True, choices=["filtered-binary", "filtered-percentile", "awr"])
    parser.add_argument("--horizon", "-H", type=int, default=10,
                        help="action-chunk length H (10 in sim, 50 on the real arm; default %(default)s)")
    parser.add_argument("--keep", type=float, default=0.7,
                        help="filtered-percentile: fraction of chunks kept (default %(default)s)")
    parser.add_argument("--tau", type=float, default=10.0,
                        help="awr: temperature (10 sim, 2 real; default %(default)s)")
    parser.add_argument("--value-column", default="progress",
                        help="per-frame value column (default %(default)s; ground_truth_progress for the oracle)")
    parser.add_argument("--output", "-o", default=None, help="sidecar path (default DATASET/wvm_weights.parquet)")


def run(args: argparse.Namespace) -> int:
    from wvm_ros.core.weights import WeightsError, write_weights

    try:
        s = write_weights(args.dataset, args.method, horizon=args.horizon, keep=args.keep, tau=args.tau,
                          value_column=args.value_column, output=args.output)
    except (WeightsError, FileNotFoundError) as exc:
        print(f"wvm weights: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {s.path}: {s.method} over {s.frames} frames / {s.episodes} episodes, "
          f"weight > 0 for {100 * s.kept_fraction:.1f} %, mean weight {s.mean_weight:.3f} ({s.params})")
    print(f"train with: python -m wvm_ros.core.weights --dataset.repo_id=local/NAME --dataset.root={args.dataset} "
          f"--policy.type=pi05 --sample_weighting.type=wvm --sample_weighting.progress_path={s.path} ... "
          "(see docs/data.md)")
    return 0
