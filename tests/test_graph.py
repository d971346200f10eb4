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
