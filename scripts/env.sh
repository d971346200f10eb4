# Source this file to use the project's environment in a shell:
#   source scripts/env.sh
# It activates the virtualenv and puts the built interface package (wvm_msgs) on the
# Python, library and ament paths. With a system ROS 2 sourced, it layers on top of it.
_wvm_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
export WVM_ROOT="$_wvm_root"
export WVM_VENV="${WVM_VENV:-$_wvm_root/.venv}"
# shellcheck disable=SC1091
source "$WVM_VENV/bin/activate"
_wvm_pyver="$(python -c 'import sys;print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
_wvm_msgs="$_wvm_root/ros2_ws/install/wvm_msgs"
_wvm_sp="$WVM_VENV/lib/python$_wvm_pyver/site-packages"
_wvm_prepend() {  # _wvm_prepend VAR DIR: put DIR first in VAR once
  local var="$1" dir="$2" cur
  cur="$(eval echo "\${$var:-}")"
  case ":$cur:" in *":$dir:"*) ;; *) export "$var=$dir${cur:+:$cur}";; esac
}
if [ -z "${ROS_DISTRO:-}" ]; then
  # ROS 2 from PyPI wheels: the venv is an ament prefix, and its libraries live in
  # site-packages/ros_*.libs. Setting LD_LIBRARY_PATH here (and the wheels' guard)
  # spares every Python process the wheels' re-exec at start-up.
  _wvm_prepend AMENT_PREFIX_PATH "$WVM_VENV"
  for _d in "$_wvm_sp"/ros_*.libs; do [ -d "$_d" ] && _wvm_prepend LD_LIBRARY_PATH "$_d"; done
  _wvm_prepend LD_LIBRARY_PATH "$WVM_VENV/lib"
  export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
  export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
fi
if [ -d "$_wvm_msgs" ]; then
  _wvm_prepend AMENT_PREFIX_PATH "$_wvm_msgs"
  _wvm_prepend LD_LIBRARY_PATH "$_wvm_msgs/lib"
  _wvm_prepend PYTHONPATH "$_wvm_msgs/lib/python$_wvm_pyver/site-packages"
fi
unset _wvm_root _wvm_pyver _wvm_msgs _wvm_sp _d
