#!/usr/bin/env bash
# Set up (idempotent) and run the demo: the whole graph on the PushT simulator, headless.
# Extra arguments go to `wvm demo`, e.g. `bash scripts/demo.sh --attempts 5 --output /tmp/demo`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
cd "$ROOT"
exec wvm demo "$@"
