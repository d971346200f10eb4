"""ament_python package wvm_ros.

Installed two ways:
  * by colcon in ros2_ws/ (``colcon build``), where ``setup.cfg`` puts the node
    executables under lib/wvm_ros so that ``ros2 run`` / launch_ros find them;
  * by ``pip install -e .`` into the project's virtualenv (scripts/setup.sh), where
    the same console scripts land on the venv's PATH.
"""
import os
from glob import glob

from setuptools import find_packages, setup

package_name = "wvm_ros"
HERE = os.path.dirname(os.path.abspath(__file__))


def tree(src):
    """data_files entries for every file under ``src`` (relative to this file)."""
    out = {}
    for path in glob(os.path.join(src, "**", "*"), recursive=True):
        if os.path.isfile(path) and "__pycache__" not in path:
            dest = os.path.join("share", package_name, os.path.dirname(path))
            out.setdefault(dest, []).append(path)
    return sorted(out.items())


os.chdir(HERE)
data_files = [
    ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
    ("share/" + package_name, ["package.xml"]),
]
for d in ("launch", "config", "calibration", "models"):
    data_files += tree(d)

NODES = {
    "sim_robot_node": "wvm_ros.nodes.sim_robot_node:main",
    "value_node": "wvm_ros.nodes.value_node:main",
    "policy_node": "wvm_ros.nodes.policy_node:main",
    "data_logger_node": "wvm_ros.nodes.data_logger_node:main",
    "camera_node": "wvm_ros.nodes.camera_node:main",
}

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["wvm_ros", "wvm_ros.*"]),
    data_files=data_files,
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="wvm_ros developers",
    maintainer_email="wvm-ros@example.com",
    description="World Value Model progress, success detection and valued data logging for ROS 2.",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [f"{name} = {target}" for name, target in NODES.items()]
        + ["wvm = wvm_ros.cli.main:main"],
    },
)
