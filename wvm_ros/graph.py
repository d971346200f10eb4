"""The ONE description of the wvm_ros node graph.

Both `launch/bringup.launch.py` (launch_ros `Node` actions, where ROS 2 launch exists) and
`wvm up` / `wvm demo` (`wvm_ros.runner`, plain processes) call `build_graph()` and start
exactly the nodes it returns, with the same parameters and remappings. Nothing else lists
nodes, so the two cannot drift (tests/test_launch.py checks the launch file against it).

    specs = build_graph(mode="sim", checkpoint="", task="push the T", record=True,
                        params_file="config/wvm.yaml", output_dir="runs/x")
    for s in specs: print(s.name, s.executable, s.ros_args())

Launch arguments arrive as strings ("true", "false", ""); `build_graph` accepts those too.
ROS-free (no rclpy import).
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

PACKAGE = "wvm_ros"
MODES = ("sim", "camera", "external")
# the default image topic (sim_robot and the camera node publish it); the logger records these
DEFAULT_IMAGE_TOPIC = "/camera/image_raw"
DEFAULT_CAMERA_INFO_TOPIC = "/camera/camera_info"

# node name -> (console script / launch_ros executable, python module)
NODES: dict[str, tuple[str, str]] = {
    "sim_robot": ("sim_robot_node", "wvm_ros.nodes.sim_robot_node"),
    "camera": ("camera_node", "wvm_ros.nodes.camera_node"),
    "wvm_value": ("value_node", "wvm_ros.nodes.value_node"),
    "wvm_policy": ("policy_node", "wvm_ros.nodes.policy_node"),
    "wvm_logger": ("data_logger_node", "wvm_ros.nodes.data_logger_node"),
}

# launch argument -> (default, description); the launch file declares exactly these.
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "mode": ("sim", "sim: PushT simulator stands in for robot + camera; camera: wvm_ros's camera node; "
                    "external: no camera / sim node (an existing driver, e.g. realsense2_camera, usb_cam)"),
    "checkpoint": ("", "WVM checkpoint (.safetensors file or folder); empty: the shipped models/wvm-tiny-pusht"),
    "success_checkpoint": ("", "success classifier (`wvm train-success` folder) the value node publishes beside "
                               "progress; 'none': no classifier; empty: the params file's (the shipped "
                               "models/success-pusht with a shipped PushT value model)"),
    "task": ("", "task instruction; empty: the value in the params file"),
    "record": ("true", "run the data logger (valued rosbags)"),
    "params_file": ("", "parameter YAML; empty: the package's config/wvm.yaml"),
    "output_dir": ("", "where the logger writes bags; empty: the params file's value"),
    "preset": ("", "model preset override (tiny, ..., paper); empty: params file"),
    "device": ("", "inference device override (cpu, cuda, cuda:0); empty: params file"),
    "image_topics": ("", "comma-separated image topics the value node reads (and the logger records); "
                         "empty: the params file's (/camera/image_raw)"),
}


class GraphError(ValueError):
    """Bad launch arguments (unknown mode, missing params file...)."""


@dataclass
class NodeSpec:
    """One node process: what launch_ros.actions.Node and the runner both need."""
    name: str
    executable: str
    module: str
    package: str = PACKAGE
    parameters: dict[str, Any] = field(default_factory=dict)  # overrides, applied after params_files
    params_files: list[str] = field(default_factory=list)
    remappings: list[tuple[str, str]] = field(default_factory=list)

    def ros_args(self) -> list[str]:
        """The `--ros-args ...` part of the command line (same meaning as launch_ros's)."""
        args = ["--ros-args", "-r", f"__node:={self.name}"]
        for f in self.params_files:
            args += ["--params-file", str(f)]
        for k, v in self.parameters.items():
            args += ["-p", f"{k}:={format_param(v)}"]
        for a, b in self.remappings:
            args += ["-r", f"{a}:={b}"]
        return args

    def argv(self, python: str | None = None) -> list[str]:
        """Command that runs the node as its own process (`python -m module`, as the console script)."""
        return [python or sys.executable, "-m", self.module, *self.ros_args()]


def format_param(value: Any) -> str:
    """A parameter value as rcl parses it after `-p name:=` (YAML; JSON is valid YAML)."""
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    if isinstance(value, (bool, int, float, str)):
        return json.dumps(value)
    raise GraphError(f"parameter value {value!r} of type {type(value).__name__} cannot be passed; "
                     "expected bool, int, float, str or a list of them")


def parse_bool(value: Any, name: str = "value") -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise GraphError(f"launch argument {name}={value!r}: expected true or false")


def source_root() -> Path:
    return Path(__file__).resolve().parents[1]


def share_dir() -> Path | None:
    """The installed package share dir (colcon install), if ament_index knows the package."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(PACKAGE))
    except (PackageNotFoundError, LookupError, ValueError):
        return None


def find_data(rel: str) -> Path | None:
    """A shipped file/folder (config/..., models/...): the source tree first, then the share dir."""
    for base in (source_root(), share_dir()):
        if base is not None and (base / rel).exists():
            return base / rel
    return None


def default_params_file() -> Path:
    p = find_data("config/wvm.yaml")
    if p is None:
        raise GraphError("config/wvm.yaml not found in the source tree or the wvm_ros share directory")
    return p


def parse_topics(value: Any, name: str = "image_topics") -> list[str]:
    """A launch argument's topic list: "a, b" or a list; "" -> [] (keep the params file's)."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    topics = [str(t).strip() for t in items if str(t).strip()]
    bad = [t for t in topics if any(c.isspace() for c in t) or t.endswith("/")]
    if bad:
        raise GraphError(f"launch argument {name}={value!r}: {bad} are not topic names; expected "
                         "comma-separated topics such as /camera/color/image_raw,/wrist/image_raw")
    if len(set(topics)) != len(topics):
        raise GraphError(f"launch argument {name}={value!r}: a topic is listed twice")
    return topics


def camera_info_topic(image_topic: str) -> str:
    """The CameraInfo topic that image_transport / camera drivers publish beside an image topic."""
    return image_topic.rsplit("/", 1)[0] + "/camera_info" if "/" in image_topic else "camera_info"


def params_file_value(params_file: Path, node: str, name: str) -> Any:
    """A parameter's value in a ROS 2 parameter YAML (`node: ros__parameters: name`), or None."""
    import yaml

    try:
        doc = yaml.safe_load(Path(params_file).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise GraphError(f"params file {params_file}: cannot read it: {e}") from e
    for key in (node, "/" + node, "/**"):
        sect = doc.get(key) if isinstance(doc, dict) else None
        params = sect.get("ros__parameters") if isinstance(sect, dict) else None
        if isinstance(params, dict) and name in params:
            return params[name]
    return None


def build_graph(mode: str = "sim", checkpoint: str = "", task: str = "", record: Any = True,
                params_file: str | os.PathLike | None = "", output_dir: str | os.PathLike | None = "",
                preset: str = "", device: str = "", image_topics: Any = "", success_checkpoint: str = "",
                overrides: Mapping[str, Mapping[str, Any]] | None = None,
                remappings: Mapping[str, list[tuple[str, str]]] | None = None) -> list[NodeSpec]:
    """Node specs of the graph for these launch arguments.

    mode "sim": sim_robot (PushT stands in for robot and camera), value, policy, logger.
    mode "camera": camera node instead of the simulator; same value, policy, logger.
    mode "external": value, policy, logger only; images come from a driver started elsewhere
    (realsense2_camera, usb_cam, ...), on `/camera/image_raw` by remapping or on `image_topics`.
    image_topics ("a,b" or a list): the value node's `image_topics`; the logger records them
    (and their sibling camera_info) instead of /camera/image_raw and /camera/camera_info.
    record false: no logger. Empty strings keep the params file's values.
    `overrides` (node name -> parameters) and `remappings` (node name -> [(from, to)]) are
    for tools such as `wvm demo`; the launch file does not use them.
    """
    mode = (mode or "sim").strip().lower()
    if mode not in MODES:
        raise GraphError(f"launch argument mode={mode!r}: expected one of {', '.join(MODES)}")
    record = parse_bool(record, "record")
    pf = Path(params_file) if params_file else default_params_file()
    if not pf.is_file():
        raise GraphError(f"params file {pf} does not exist; expected a ROS 2 parameter YAML "
                         "(node_name: ros__parameters: ...)")
    pf = pf.resolve()

    topics = parse_topics(image_topics)
    names = {"sim": ["sim_robot"], "camera": ["camera"], "external": []}[mode] + ["wvm_value", "wvm_policy"]
    if record:
        names.append("wvm_logger")

    params: dict[str, dict[str, Any]] = {n: {} for n in names}
    if checkpoint:
        params["wvm_value"]["checkpoint"] = str(checkpoint)
    if success_checkpoint:
        params["wvm_value"]["success_checkpoint"] = str(success_checkpoint)
    if preset:
        params["wvm_value"]["preset"] = str(preset)
    if device:
        params["wvm_value"]["device"] = str(device)
    if mode in ("camera", "external"):
        # a real camera's size is its own (config camera: width/height): accept any size,
        # the model resizes; the sim's fixed size check is for the simulator
        params["wvm_value"].update({"image_width": 0, "image_height": 0})
    if topics:
        params["wvm_value"]["image_topics"] = topics
        if record:
            recorded = params_file_value(pf, "wvm_logger", "topics")
            if not isinstance(recorded, list):
                raise GraphError(f"params file {pf}: wvm_logger topics is not a list ({recorded!r}); the "
                                 "image_topics launch argument replaces the camera topics in it")
            replaced = {DEFAULT_IMAGE_TOPIC, DEFAULT_CAMERA_INFO_TOPIC}
            new = [t for t in recorded if t not in replaced]
            for t in topics:
                new += [x for x in (t, camera_info_topic(t)) if x not in new]
            params["wvm_logger"]["topics"] = new
            dataset = params_file_value(pf, "wvm_logger", "dataset")
            ref = dataset.get("reference_topic", DEFAULT_IMAGE_TOPIC) if isinstance(dataset, dict) else None
            if ref in (None, DEFAULT_IMAGE_TOPIC):
                params["wvm_logger"]["dataset.reference_topic"] = topics[0]  # live dataset's reference camera
    if task:
        params["wvm_value"]["task"] = str(task)
        params["wvm_policy"]["task"] = str(task)
    if output_dir and record:
        params["wvm_logger"]["output_dir"] = str(output_dir)
    for n, extra in (overrides or {}).items():
        if n not in NODES:
            raise GraphError(f"parameter overrides for unknown node {n!r}; expected one of {', '.join(NODES)}")
        if n not in params:
            continue  # node not part of this graph (e.g. logger with record off)
        params[n].update(extra)

    specs = []
    for n in names:
        exe, module = NODES[n]
        specs.append(NodeSpec(name=n, executable=exe, module=module, parameters=params[n],
                              params_files=[str(pf)], remappings=list((remappings or {}).get(n, []))))
    return specs
