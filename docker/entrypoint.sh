#!/usr/bin/env bash
# Entry point of the wvm_ros images: the system ROS 2, the project's virtualenv and the
# colcon workspace, then the given command (default: `wvm up --mode camera`).
set -eo pipefail
# shellcheck disable=SC1091
source "/opt/ros/${ROS_DISTRO:-jazzy}/setup.bash"
# shellcheck disable=SC1091
source "${WVM_ROOT:-/opt/wvm_ros}/scripts/env.sh"
if [ -f "${WVM_ROOT:-/opt/wvm_ros}/ros2_ws/install/setup.bash" ]; then
  # shellcheck disable=SC1091
  source "${WVM_ROOT:-/opt/wvm_ros}/ros2_ws/install/setup.bash"
fi
exec "$@"
