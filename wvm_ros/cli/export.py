"""`wvm export`: the WVM's two parts to ONNX (checked against torch with onnxruntime), and
optionally TensorRT engines (through the engine cache)."""
from __future__ import annotations

import argparse
import sys

HELP = "export to ONNX (with numerical check) and build TensorRT engines"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="WVM checkpoint directory (model.safetensors + config), or 'untrained' for random weights")
    p.add_argument("--preset", default=None, help="expected preset (default: the checkpoint's own; 'tiny' if untrained)")
    p.add_argument("--output", required=True, help="directory for <part>.onnx, export.json and engines/")
    p.add_argument("--dynamic-batch", action="store_true", help="dynamic batch axis (several cameras per call)")
    p.add_argument("--tensorrt", action="store_true", help="also build TensorRT engines (needs a GPU and TensorRT)")
    p.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "bf16"], help="TensorRT engine precision")
    p.add_argument("--max-batch", type=int, default=8, help="largest batch of the TensorRT profile (with --dynamic-batch)")
    p.add_argument("--atol", type=float, default=1e-4, help="max |onnx - torch| allowed (fp32)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--workspace-gb", type=float, default=4.0, help="TensorRT builder workspace")


def run(args: argparse.Namespace) -> int:
    from wvm_ros.core.backends.wvm import model_hash, wvm_parts
    from wvm_ros.core.export import ExportError, export_parts
    from wvm_ros.core.model import ModelLoadError, load_value_model

    if args.max_batch < 1:
        print(f"wvm export: --max-batch must be >= 1, got {args.max_batch}", file=sys.stderr)
        return 2
    ckpt = None if args.checkpoint == "untrained" else args.checkpoint
    try:
        model = load_value_model(ckpt, preset=args.preset or ("tiny" if ckpt is None else None), device="cpu")
    except ModelLoadError as exc:
        print(f"wvm export: {exc}", file=sys.stderr)
        return 2
    parts = [p for p in wvm_parts(model, batch=2 if args.dynamic_batch else 1) if p is not None]
    info = {"preset": model.name, "checkpoint": args.checkpoint, "checkpoint_id": model.checkpoint_id,
            "model_hash": model_hash(model), "config": model.config.to_dict()}
    try:
        rep = export_parts(parts, args.output, info, dynamic_batch=args.dynamic_batch, tensorrt=args.tensorrt,
                           precision=args.precision, atol=args.atol, max_batch=args.max_batch, opset=args.opset,
                           workspace_gb=args.workspace_gb)
    except ExportError as exc:
        print(f"wvm export: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # TensorRT / GPU missing etc.: say what and why
        from wvm_ros.core.backends import BackendError

        if isinstance(exc, BackendError):
            print(f"wvm export: {exc}", file=sys.stderr)
            return 1
        raise
    for name, p in rep.parts.items():
        verdict = "ok" if p["passed"] else f"FAILED (> {p['atol']:g})"
        print(f"{name}: {p['onnx']}  max |onnx - torch| = {p['max_abs_diff']:.2e}  {verdict}")
    for name, e in rep.engines.items():
        print(f"{name}: engine {e['engine']} ({'built' if e['built'] else 'cached'}: {e['reason']})")
    print(f"report: {args.output}/export.json")
    return 0 if rep.ok else 1
