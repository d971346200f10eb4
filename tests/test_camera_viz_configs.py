"""config/wvm.rviz and config/foxglove_layout.json: they parse, show the topics the value node
publishes (the contract table of docs/architecture.md) with the right plugins, and every
Foxglove message path names a real field of the message type."""
from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RVIZ = REPO / "config" / "wvm.rviz"
FOXGLOVE = REPO / "config" / "foxglove_layout.json"


def contract_topics() -> dict[str, str]:
    """topic -> type from the table in docs/architecture.md."""
    out = {}
    for line in (REPO / "docs" / "architecture.md").read_text().splitlines():
        m = re.match(r"\|\s*`(/[\w/]+)`\s*\|\s*([\w/]+)", line)
        if m:
            out[m.group(1)] = m.group(2)
    assert "/wvm/overlay" in out, "architecture.md topic table not found"
    return out


def rviz_displays() -> list[dict]:
    cfg = yaml.safe_load(RVIZ.read_text())
    return cfg["Visualization Manager"]["Displays"]


def test_rviz_displays_match_the_contract():
    topics = contract_topics()
    by_class: dict[str, list[dict]] = {}
    for d in rviz_displays():
        by_class.setdefault(d["Class"], []).append(d)
    images = {d["Topic"]["Value"]: d for d in by_class["rviz_default_plugins/Image"]}
    assert images["/wvm/overlay"]["Enabled"] is True
    assert images["/wvm/overlay"]["Topic"]["Reliability Policy"] == "Reliable"  # the value node publishes reliable
    assert "/camera/image_raw" in images
    (marker,) = by_class["rviz_default_plugins/Marker"]
    assert marker["Topic"]["Value"] == "/wvm/marker" and topics["/wvm/marker"] == "visualization_msgs/Marker"
    (pie,) = by_class["rviz_2d_overlay_plugins/PieChartOverlay"]
    assert pie["Topic"]["Value"] == "/wvm/progress_value" and topics["/wvm/progress_value"] == "std_msgs/Float32"
    assert (pie["min value"], pie["max value"]) == (0, 1)
    (text,) = by_class["rviz_2d_overlay_plugins/TextOverlay"]
    # string_to_overlay_text publishes <string_topic>_overlay_text
    assert text["Topic"]["Value"].endswith("_overlay_text")
    for d in rviz_displays():
        t = d.get("Topic", {}).get("Value")
        if t and not t.endswith("_overlay_text"):
            assert t in topics, f"wvm.rviz shows {t}, which no node publishes (docs/architecture.md)"
    cfg = yaml.safe_load(RVIZ.read_text())
    assert cfg["Visualization Manager"]["Global Options"]["Fixed Frame"] == "camera"


def _msg_class(type_name: str):
    pkg, name = type_name.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except ImportError:
        pytest.skip(f"{pkg} messages not importable here (run scripts/setup.sh, source scripts/env.sh)")


def test_foxglove_layout_panels_and_paths():
    layout = json.loads(FOXGLOVE.read_text())
    configs = layout["configById"]

    def leaves(node):
        if isinstance(node, str):
            yield node
        else:
            yield from leaves(node["first"])
            yield from leaves(node["second"])

    used = list(leaves(layout["layout"]))
    assert sorted(used) == sorted(configs), "layout and configById disagree"
    assert configs["Image!wvmoverlay"]["imageMode"]["imageTopic"] == "/wvm/overlay"
    plot_paths = [p["value"] for p in configs["Plot!wvmprogress"]["paths"]]
    assert "/wvm/progress_value.data" in plot_paths
    assert (configs["Plot!wvmprogress"]["minYValue"], configs["Plot!wvmprogress"]["maxYValue"]) == (0, 1)

    topics = contract_topics()
    paths = []
    for cfg in configs.values():
        paths += [p["value"] for p in cfg.get("paths", [])]
        for key in ("path", "topicPath"):
            if cfg.get(key):
                paths.append(cfg[key])
    assert paths
    for path in paths:
        topic, _, field = path.partition(".")
        assert topic in topics, f"foxglove layout uses {topic}, which no node publishes"
        if field:
            cls = _msg_class(topics[topic])
            assert field in cls.get_fields_and_field_types(), f"{topics[topic]} has no field {field!r}"
