#!/usr/bin/env bash
# Prepare, on a machine with the project's venv, what scripts/gpu/run.sh needs on a GPU machine
# that has torch but cannot install the pinned requirements (no network, e.g. the lent
# H100/H200 machines of this workplace): lerobot's pure-Python package and the three small
# packages its FastWAM parts import, and the benchmark instruction's MiniLM embedding computed
# here by the real encoder (its package is 88 MB). Writes .devbundle/ (git-ignored via
# .git/info/exclude). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh >/dev/null
SP=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
rm -rf .devbundle && mkdir -p .devbundle
for p in lerobot draccus mergedeep toml; do cp -r "$SP/$p" .devbundle/; done
find .devbundle -name __pycache__ -prune -exec rm -rf {} +
grep -qx '/.devbundle/' .git/info/exclude 2>/dev/null || echo '/.devbundle/' >> .git/info/exclude
python - <<'PY'
import torch
from wvm_ros.bench.model import TASK
from wvm_ros.core.model.config import preset_config
from wvm_ros.core.model.encoders import TextEmbedder
emb = TextEmbedder(preset_config("tiny"))(TASK)
torch.save({"minilm": {TASK: emb}}, ".devbundle/text_embeddings.pt")
print(f"embedded {TASK!r}: {tuple(emb.shape)}")
PY
du -sh .devbundle
