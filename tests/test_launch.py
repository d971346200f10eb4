"""launch/bringup.launch.py produces the same nodes as `wvm up`.

`launch` and `launch_ros` are not installable on these machines, so this test imports the
launch file with a tiny stand-in of the four names it uses (only here, in the test) and
compares every Node action with `build_graph` / the runner's command lines.
"""
import importlib.util
import sys
import types
from pathlib import Path

import pytest

from wvm_ros.graph import LAUNCH_ARGUMENTS, build_graph

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "bringup.launch.py"


class _Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context.launch_configurations[self.name]


def _fake_modules(monkeypatch):
    launch = types.ModuleType("launch")
    launch.LaunchDescription = type("LaunchDescription", (_Recorder,), {})
    actions = types.ModuleType("launch.actions")
    actions.DeclareLaunchArgument = type("DeclareLaunchArgument", (_Recorder,), {})
    actions.OpaqueFunction = type("OpaqueFunction", (_Recorder,), {})
    subs = types.ModuleType("launch.substitutions")
    subs.LaunchConfiguration = LaunchConfiguration
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")
    ros_actions.Node = type("Node", (_Recorder,), {})
    for name, mod in {"launch": launch, "launch.actions": actions, "launch.substitutions": subs,
                      "launch_ros": launch_ros, "launch_ros.actions": ros_actions}.items():
        monkeypatch.setitem(sys.modules, name, mod)


def _load_launch_file(monkeypatch):
    if importlib.util.find_spec("launch_ros") is None:
        _fake_modules(monkeypatch)
    spec = importlib.util.spec_from_file_location("bringup_launch", LAUNCH_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(mod, **args):
    ld = mod.generate_launch_description()
    entities = ld.args[0]
    declared = {e.kwargs.get("name", e.args[0] if e.args else None): e.kwargs["default_value"]
                for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    assert set(declared) == set(LAUNCH_ARGUMENTS), "launch arguments differ from wvm_ros.graph.LAUNCH_ARGUMENTS"
    values = {**declared, **args}
    ctx = types.SimpleNamespace(launch_configurations=values)
    opaque = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    assert len(opaque) == 1
    return opaque[0].kwargs["function"](ctx), values


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is not None,
                    reason="real launch_ros installed: the stand-in comparison is for machines without it")
@pytest.mark.parametrize("args", [
    {},
    {"mode": "camera", "record": "false"},
    {"mode": "sim", "checkpoint": "/tmp/ck.safetensors", "task": "push the T", "output_dir": "/tmp/out",
     "device": "cpu", "preset": "tiny"},
    {"mode": "external"},
    {"mode": "external", "image_topics": "/camera/camera/color/image_raw, /wrist/image_raw", "record": "true",
     "task": "stack the cups"},
    {"mode": "camera", "image_topics": "/usb_cam/image_raw", "record": "false"},
])
def test_launch_file_starts_the_same_nodes_as_wvm_up(monkeypatch, args):
    mod = _load_launch_file(monkeypatch)
    nodes, values = _run(mod, **args)
    specs = build_graph(**values)
    assert len(nodes) == len(specs)
    for node, spec in zip(nodes, specs):
        kw = node.kwargs
        assert (kw["package"], kw["executable"], kw["name"]) == (spec.package, spec.executable, spec.name)
        # launch_ros: files in `parameters` become --params-file, dicts become -p overrides, in order
        *files, overrides = kw["parameters"]
        assert files == spec.params_files and overrides == spec.parameters
        assert list(kw["remappings"]) == spec.remappings
        # and the runner passes exactly these on the command line
        argv = spec.argv("python")
        assert argv[argv.index("--params-file") + 1] == files[0]
        for k, v in overrides.items():
            assert any(a.startswith(f"{k}:=") for a in argv)


def _launch_node_ros_args(kw) -> list[str]:
    """The command line launch_ros builds for a Node action (name, files, dict overrides, remappings)."""
    from wvm_ros.graph import format_param

    args = ["--ros-args", "-r", f"__node:={kw['name']}"]
    for p in kw["parameters"]:
        if isinstance(p, dict):
            for k, v in p.items():
                args += ["-p", f"{k}:={format_param(v)}"]
        else:
            args += ["--params-file", str(p)]
    for a, b in kw["remappings"]:
        args += ["-r", f"{a}:={b}"]
    return args


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is not None,
                    reason="real launch_ros installed: the stand-in comparison is for machines without it")
@pytest.mark.parametrize("args", [
    {"mode": "external", "record": "true"},
    {"mode": "external", "image_topics": "/camera/camera/color/image_raw,/wrist/image_raw", "task": "push it",
     "output_dir": "/tmp/bags"},
    {"mode": "camera", "record": "false", "device": "cpu"},
])
def test_wvm_up_prints_the_launch_files_command_lines(monkeypatch, capsys, args):
    """`wvm up --print` (what the runner executes) == what launch_ros would run, node for node."""
    import shlex

    from wvm_ros.cli.main import main

    mod = _load_launch_file(monkeypatch)
    nodes, _ = _run(mod, **args)
    cli = ["up", "--print"]
    for k, v in args.items():
        cli += ["--" + k.replace("_", "-"), v]
    assert main(cli) == 0
    lines = [shlex.split(l) for l in capsys.readouterr().out.splitlines()]
    assert [l[0] for l in lines] == [n.kwargs["executable"] for n in nodes]
    for line, node in zip(lines, nodes):
        assert line[1:] == _launch_node_ros_args(node.kwargs)
    if args["mode"] == "external":
        assert [n.kwargs["name"] for n in nodes] == ["wvm_value", "wvm_policy", "wvm_logger"]


def test_launch_file_is_installed_by_setup_py():
    text = (LAUNCH_FILE.parents[1] / "setup.py").read_text()
    assert '"launch"' in text and LAUNCH_FILE.exists()
