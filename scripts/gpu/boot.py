"""Run `wvm ...` or pytest on a GPU machine that has torch but not the pinned requirements.

python3 scripts/gpu/boot.py wvm bench chunk --preset paper ...   |   python3 scripts/gpu/boot.py pytest ...

What it changes, and only in this process (see scripts/gpu/bundle.sh for what it carries):
* `.devbundle/` goes first on sys.path (lerobot 0.6.1's source, draccus, mergedeep, toml);
* `lerobot.policies` and `lerobot.policies.fastwam` are registered as plain packages without
  running their __init__ files, which import every policy and lerobot's dataset stack (PyAV,
  datasets, diffusers, gymnasium: not installed there). The FastWAM modules themselves
  (`lerobot.policies.fastwam.wan`) are lerobot's, unchanged;
* instructions found in `.devbundle/text_embeddings.pt` (embedded on the development machine
  by the real MiniLM) are served from it instead of loading the encoder.
"""
from __future__ import annotations

import os
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUNDLE = os.path.join(ROOT, os.environ.get("WVM_DEVBUNDLE", ".devbundle"))
sys.path[:0] = [ROOT, BUNDLE]

import lerobot  # noqa: E402

_lr = os.path.dirname(lerobot.__file__)
for _name, _sub in (("lerobot.policies", "policies"), ("lerobot.policies.fastwam", "policies/fastwam")):
    _m = types.ModuleType(_name)
    _m.__path__ = [os.path.join(_lr, _sub)]
    sys.modules[_name] = _m

import torch  # noqa: E402

from wvm_ros.core.model import encoders  # noqa: E402

_emb_file = os.path.join(BUNDLE, "text_embeddings.pt")
_pre = torch.load(_emb_file) if os.path.exists(_emb_file) else {}
_orig_call = encoders.TextEmbedder.__call__


def _call(self, text):
    pre = _pre.get(self.config.text_encoder, {})
    if text in pre:
        return pre[text]
    return _orig_call(self, text)


encoders.TextEmbedder.__call__ = _call

if __name__ == "__main__":
    tool, args = sys.argv[1], sys.argv[2:]
    if tool == "wvm":
        from wvm_ros.cli.main import main

        sys.argv = ["wvm", *args]
        sys.exit(main(args))
    if tool == "pytest":
        import pytest

        sys.exit(pytest.main(args))
    sys.exit(f"boot.py: expected 'wvm' or 'pytest', got {tool!r}")
