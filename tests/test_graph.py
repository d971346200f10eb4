"""The one graph description (wvm_ros.graph) and the runner's command lines."""
import sys

import pytest

from conftest import requires_ros
from wvm_ros.graph import GraphError, NodeSpec, build_graph, format_param, parse_bool


def names(specs):
    return [s.name for s in specs]


def test_sim_graph_has_sim_value_policy_logger_with_overrides(tmp_path):
    specs = build_graph(mode="sim", checkpoint="/m/ck.safetensors", task="push it", record="true",
                        output_dir=str(tmp_path))
    assert names(specs) == ["sim_robot", "wvm_value", "wvm_policy", "wvm_logger"]
    by = {s.name: s for s in specs}
    assert by["wvm_value"].parameters == {"checkpoint": "/m/ck.safetensors", "task": "push it"}
    assert by["wvm_policy"].parameters == {"task": "push it"}
    assert by["wvm_logger"].parameters == {"output_dir": str(tmp_path)}
    assert all(s.params_files and s.params_files[0].endswith("config/wvm.yaml") for s in specs)
    assert by["wvm_value"].executable == "value_node" and by["wvm_value"].module == "wvm_ros.nodes.value_node"


def test_camera_mode_and_record_off():
    specs = build_graph(mode="camera", record="false")
    assert names(specs) == ["camera", "wvm_value", "wvm_policy"]
    # empty launch arguments keep the params file's values; a real camera's size is accepted
    assert [s.parameters for s in specs] == [{}, {"image_width": 0, "image_height": 0}, {}]


def test_external_mode_has_no_camera_or_sim_node():
    specs = build_graph(mode="external")
    assert names(specs) == ["wvm_value", "wvm_policy", "wvm_logger"]
    # the driver's image size is its own; topics stay the params file's (/camera/image_raw, remap onto it)
    assert [s.parameters for s in specs] == [{"image_width": 0, "image_height": 0}, {}, {}]
    assert names(build_graph(mode="EXTERNAL", record="false")) == ["wvm_value", "wvm_policy"]


def test_image_topics_reach_the_value_node_and_the_logger_records_them():
    import yaml

    from wvm_ros.graph import default_params_file

    specs = build_graph(mode="external", image_topics=" /camera/camera/color/image_raw, /wrist/image_raw ")
    by = {s.name: s for s in specs}
    assert by["wvm_value"].parameters["image_topics"] == ["/camera/camera/color/image_raw", "/wrist/image_raw"]
    file_topics = yaml.safe_load(default_params_file().read_text())["wvm_logger"]["ros__parameters"]["topics"]
    logged = by["wvm_logger"].parameters["topics"]
    assert "/camera/image_raw" not in logged and "/camera/camera_info" not in logged
    assert logged[-4:] == ["/camera/camera/color/image_raw", "/camera/camera/color/camera_info",
                           "/wrist/image_raw", "/wrist/camera_info"]
    assert [t for t in file_topics if t not in ("/camera/image_raw", "/camera/camera_info")] == logged[:-4]
    assert by["wvm_logger"].parameters["dataset.reference_topic"] == "/camera/camera/color/image_raw"
    assert "wvm_logger" not in names(build_graph(mode="external", image_topics="/a/image", record=False))
    # a list works as well (wvm demo / Python callers)
    assert build_graph(image_topics=["/a/image"], record=False)[1].parameters["image_topics"] == ["/a/image"]
    with pytest.raises(GraphError, match="not topic names"):
        build_graph(mode="external", image_topics="/a image")
    with pytest.raises(GraphError, match="listed twice"):
        build_graph(mode="external", image_topics="/a,/a")


def test_image_topics_with_a_params_file_whose_logger_has_no_topic_list(tmp_path):
    pf = tmp_path / "p.yaml"
    pf.write_text("wvm_value:\n  ros__parameters:\n    preset: tiny\n")
    with pytest.raises(GraphError, match="wvm_logger topics is not a list"):
        build_graph(mode="external", image_topics="/a/image", params_file=str(pf))
    assert names(build_graph(mode="external", image_topics="/a/image", params_file=str(pf), record=False)) == \
        ["wvm_value", "wvm_policy"]


def test_bad_arguments_are_named():
    with pytest.raises(GraphError, match="mode='robot'"):
        build_graph(mode="robot")
    with pytest.raises(GraphError, match="record='maybe'"):
        build_graph(record="maybe")
    with pytest.raises(GraphError, match="params file /nonexistent.yaml does not exist"):
        build_graph(params_file="/nonexistent.yaml")
    with pytest.raises(GraphError, match="cannot be passed"):
        format_param({"a": 1})


def test_overrides_and_remappings_reach_the_command_line():
    with pytest.raises(GraphError, match="unknown node 'nope'"):
        build_graph(overrides={"nope": {"x": 1}})
    specs = build_graph(overrides={"sim_robot": {"width": 64, "rate_hz": 5.0}, "wvm_logger": {"x": 1}},
                        remappings={"wvm_value": [("/camera/image_raw", "/cam0/image")]}, record=False)
    by = {s.name: s for s in specs}
    argv = by["sim_robot"].argv("PY")
    assert argv[:3] == ["PY", "-m", "wvm_ros.nodes.sim_robot_node"]
    assert argv[3:6] == ["--ros-args", "-r", "__node:=sim_robot"]
    assert "width:=64" in argv and "rate_hz:=5.0" in argv
    assert by["wvm_value"].ros_args()[-2:] == ["-r", "/camera/image_raw:=/cam0/image"]


def test_format_param_and_parse_bool():
    assert format_param(True) == "true" and format_param(3) == "3" and format_param(0.5) == "0.5"
    assert format_param("1.0") == '"1.0"'  # stays a string
    assert format_param(["/a", "/b"]) == '["/a", "/b"]'
    assert parse_bool("TRUE") and not parse_bool("off") and parse_bool(True)


@requires_ros
def test_rcl_parses_our_parameter_syntax_like_the_yaml_types(ros_env):
    """What `-p k:=v` means is decided by rcl: check our formatting against the real parser."""
    import rclpy
    from rclpy.context import Context

    spec = NodeSpec(name="argcheck", executable="x", module="x",
                    parameters={"task": "push the T: now", "num": "1.0", "flag": False, "rate": 2.5,
                                "n": 7, "topics": ["/a/image", "/b/image"], "empty": ""})
    ctx = Context()
    rclpy.init(args=["prog", *spec.ros_args()], context=ctx)
    try:
        node = rclpy.create_node("argcheck", context=ctx, automatically_declare_parameters_from_overrides=True)
        got = {k: node.get_parameter(k).value for k in spec.parameters}
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
    assert got == {"task": "push the T: now", "num": "1.0", "flag": False, "rate": 2.5, "n": 7,
                   "topics": ["/a/image", "/b/image"], "empty": ""}
