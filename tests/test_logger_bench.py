"""`wvm bench logger` end to end, small: real DDS, the real logger twice (ours and the naive
baseline), bench_logger.json with recorded / published per topic and the ratio."""
from __future__ import annotations

import json

import pytest

from conftest import requires_ros

pytestmark = [requires_ros, pytest.mark.timeout(240)]


def test_bench_logger_small(ros_env, tmp_path):
    from wvm_ros.cli.main import main

    rc = main(["bench", "logger", "--output", str(tmp_path), "--duration", "1.0", "--rate", "20",
               "--frame-size", "48x64", "--cameras", "2", "--drain-s", "1.0"])
    res = json.loads((tmp_path / "bench_logger.json").read_text())
    ours, base = res["wvm_logger"], res["baseline"]
    for r in (ours, base):
        assert r["published"]["/camera/image_raw"] == 20 and r["published"]["/camera2/image_raw"] == 20
        assert r["readers_agree"]
        assert set(r["recorded"]) == {"/camera/image_raw", "/camera2/image_raw", "/wvm/progress",
                                      "/wvm/episode_event"}
        assert 0 < r["write_us_per_msg"] < 1e6
    assert ours["dropped_total"] == 0, ours["dropped"]
    assert rc == 0
    assert res["ratio"] > 0 and "ratio_definition" in res
    assert not (tmp_path / "bench_logger_work").exists()
