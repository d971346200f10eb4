"""The commands in the operator's guide and the camera docs are ones the code accepts:
every `wvm ...` line in a fenced code block parses with the real `wvm` parser, and every
`camera_node ... -p NAME:=VALUE` uses a parameter the camera node declares."""
from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "docs" / "operator_guide.md", REPO / "docs" / "camera.md", REPO / "calibration" / "README.md",
        REPO / "docker" / "README.md"]


def code_commands(path: Path) -> list[tuple[str, str]]:
    """(where, command) for each shell command in ``` blocks (continuations joined)."""
    out = []
    in_block, lang, cur = False, "", ""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            in_block, lang = (not in_block), line[3:].strip()
            continue
        if not in_block or lang not in ("", "bash", "sh"):
            continue
        text = line.split(" #")[0].rstrip() if not line.lstrip().startswith("#") else ""
        if text.endswith("\\"):
            cur += text[:-1] + " "
            continue
        cur += text
        if cur.strip():
            out.append((f"{path.relative_to(REPO)}:{n}", cur.strip()))
        cur = ""
    return out


def all_commands(prefix: str) -> list[tuple[str, str]]:
    cmds = []
    for doc in DOCS:
        for where, cmd in code_commands(doc):
            # commands may follow `docker compose ... run --rm wvm` or `ros2 run wvm_ros`
            m = re.search(rf"(?:^|\s)({re.escape(prefix)}\s.*)$", cmd)
            if m and not cmd.startswith("#"):
                cmds.append((where, m.group(1)))
    return cmds


WVM_COMMANDS = all_commands("wvm")
CAMERA_COMMANDS = all_commands("camera_node")


def test_the_docs_have_commands():
    assert len(WVM_COMMANDS) >= 8 and len(CAMERA_COMMANDS) >= 4


@pytest.mark.parametrize("where,cmd", WVM_COMMANDS, ids=[w for w, _ in WVM_COMMANDS])
def test_wvm_command_parses(where, cmd):
    from wvm_ros.cli import main as cli

    argv = shlex.split(cmd)
    assert argv[0] == "wvm"
    name = argv[1]
    assert name in cli.COMMANDS, f"{where}: `wvm {name}` is not a wvm command"
    try:
        importlib.import_module(cli.COMMANDS[name][0])
    except ModuleNotFoundError as e:
        if e.name == cli.COMMANDS[name][0]:
            pytest.skip(f"wvm {name} is not implemented yet ({e.name})")
        raise
    parser = cli._build_parser(name)
    try:
        parser.parse_args(argv[1:])
    except SystemExit as e:
        pytest.fail(f"{where}: `{cmd}` is rejected by the wvm parser (exit {e.code})")


def camera_parameters() -> set[str]:
    src = (REPO / "wvm_ros" / "nodes" / "camera_node.py").read_text()
    return set(re.findall(r'\bp\("(\w+)"', src)) | {"use_sim_time"}


@pytest.mark.parametrize("where,cmd", CAMERA_COMMANDS, ids=[w for w, _ in CAMERA_COMMANDS])
def test_camera_node_parameters_exist(where, cmd):
    declared = camera_parameters()
    assert {"device", "camera_info_url", "width", "height", "fps", "exposure"} <= declared
    argv = shlex.split(cmd)
    assert "--ros-args" in argv, f"{where}: parameters need --ros-args"
    for i, a in enumerate(argv):
        if a == "-p":
            name = argv[i + 1].split(":=")[0]
            assert name in declared, f"{where}: camera_node has no parameter {name!r}"


def test_yaml_blocks_use_real_parameters():
    """The parameter-file excerpt of the guide names only parameters the nodes declare."""
    import yaml

    text = (REPO / "docs" / "operator_guide.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert blocks
    sources = {
        "wvm_policy": (REPO / "wvm_ros" / "nodes" / "policy_node.py"),
        "wvm_value": (REPO / "wvm_ros" / "nodes" / "value_node.py"),
        "camera": (REPO / "wvm_ros" / "nodes" / "camera_node.py"),
        "wvm_logger": (REPO / "wvm_ros" / "nodes" / "data_logger_node.py"),
    }
    for block in blocks:
        data = yaml.safe_load(block)
        for node, body in data.items():
            assert node in sources, node
            src = sources[node].read_text() if sources[node].exists() else ""
            if not src:
                pytest.skip(f"{sources[node].name} not there yet")
            for param in body["ros__parameters"]:
                assert re.search(rf'["\']{param}["\']', src), f"{node} declares no parameter {param!r}"
