#!/usr/bin/env bash
# Prepare, on a machine with the project's venv, what scripts/gpu/run.sh and scripts/gpu/scaling.py
# need on a GPU machine that has torch but cannot install the pinned requirements (no network,
# e.g. the lent H100/H200 machines of this workplace, where a run carries at most 64 MiB):
# - the parts of lerobot 0.6.1 that the model imports (lerobot/__init__, utils, policies/fastwam;
#   scripts/gpu/boot.py registers lerobot.policies without running its __init__) and the three
#   small packages they import (draccus, mergedeep, toml);
# - the MiniLM embeddings of the instructions used there (the benchmark's, the simulator's and the
#   tests'), computed here by the real encoder (its package is 88 MB);
# - with --sim: wheels of the simulator's packages (gym-pusht, pygame without its docs, examples and
#   tests, pymunk, shapely, gymnasium, cffi) for scripts/gpu/scaling.py; there, install them with
#   `python3 -m pip install --no-index --no-deps --target /tmp/site .devbundle/whl/*.whl` and
#   put /tmp/site on PYTHONPATH.
# Writes .devbundle/ (git-ignored via .git/info/exclude). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh >/dev/null
SP=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
rm -rf .devbundle && mkdir -p .devbundle/lerobot/policies
cp "$SP/lerobot/__init__.py" "$SP/lerobot/__version__.py" .devbundle/lerobot/
cp -r "$SP/lerobot/utils" .devbundle/lerobot/
cp -r "$SP/lerobot/policies/fastwam" .devbundle/lerobot/policies/
for p in draccus mergedeep toml; do cp -r "$SP/$p" .devbundle/; done
find .devbundle -name __pycache__ -prune -exec rm -rf {} +
grep -qx '/.devbundle/' .git/info/exclude 2>/dev/null || echo '/.devbundle/' >> .git/info/exclude
python - <<'PY' 2>&1 | grep -v -i -E "load report|unexpected|^key|^-+|position_ids|^notes|^$|loading weights"
import torch
from wvm_ros.bench.model import TASK
from wvm_ros.cli.sim_collect import DEFAULT_TASK
from wvm_ros.core.model.config import preset_config
from wvm_ros.core.model.encoders import TextEmbedder
embed = TextEmbedder(preset_config("tiny"))
texts = [TASK, DEFAULT_TASK, "move the square to the right"]   # the last: tests/test_train.py
torch.save({"minilm": {t: embed(t) for t in texts}}, ".devbundle/text_embeddings.pt")
print(f"embedded {len(texts)} instructions")
PY
if [[ "${1:-}" == "--sim" ]]; then
  mkdir -p .devbundle/whl
  for pk in pygame==2.6.1 pymunk==6.11.1 shapely==2.2.0 gymnasium==1.4.0 gym-pusht==0.1.8 \
            farama-notifications==0.0.6 cffi==2.1.1 pycparser==3.12; do
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform any -d .devbundle/whl "$pk" 2>&1 | grep -v "is ignored" || true
  done
  python - <<'PY'
import glob, os, zipfile
src = glob.glob(".devbundle/whl/pygame-*.whl")[0]
drop = ("pygame/docs/", "pygame/examples/", "pygame/tests/")   # 6 MB the simulator never imports
with zipfile.ZipFile(src) as zi, zipfile.ZipFile(src + ".tmp", "w", zipfile.ZIP_DEFLATED) as zo:
    for i in zi.infolist():
        if i.filename.startswith(drop):
            continue
        data = zi.read(i.filename)
        if i.filename.endswith(".dist-info/RECORD"):
            data = "".join(l + "\n" for l in data.decode().splitlines() if not l.startswith(drop)).encode()
        zo.writestr(i, data)
os.replace(src + ".tmp", src)
PY
fi
du -sh .devbundle
