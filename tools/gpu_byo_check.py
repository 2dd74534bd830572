"""Bring-your-own models on a GPU machine, end to end through attnserve's export.

For each timm / torchvision classifier below (ImageNet size, random weights: nothing can be
downloaded there): `timm_source` / `torchvision_source` → `export_module` with the ``cuda``
target, which (1) captures the attention modules and the in-graph CAM, (2) proves ONNX against
PyTorch on the CPU (1e-4), (3) refuses unless the CUDA provider runs, (4) proves CUDA against
the CPU (`accelerate.RELATIVE_TOLERANCE`) and only then writes the model with its GPU config.
Then the TensorRT target's refusal where TensorRT is absent. Prints one line per model and
writes ``$OUT/gpu_byo_check.json``; `tools/gpu_check.py --repository` on the written
repository gives the latencies.

    python tools/gpu_byo_check.py --repository /tmp/byo_repo     # on the GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

MODELS = (
    ("timm", "seresnet50"),
    ("timm", "ecaresnet50d"),
    ("timm", "gcresnet50t"),
    ("torchvision", "resnet50"),
    ("torchvision", "mobilenet_v3_large"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--target", default="cuda", help="cpu: the harness itself, on any machine")
    args = parser.parse_args()

    import onnxruntime
    import torch

    from attnserve.errors import AttnserveError
    from attnserve.export import accelerate
    from attnserve.export.byo import export_module, timm_source, torchvision_source
    from attnserve.export.repository import AcceleratorOptions, ServingOptions, read_config

    torch.manual_seed(0)
    versions: dict[str, str] = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    for extra in ("timm", "torchvision"):
        versions[extra] = __import__(extra).__version__
    report: dict[str, Any] = {"versions": versions, "models": {}}
    print(" ".join(f"{k} {v}" for k, v in versions.items()), flush=True)
    options = ServingOptions(accelerator=AcceleratorOptions(args.target))
    failed = 0
    for source_kind, name in MODELS:
        started = time.perf_counter()
        entry: dict[str, Any] = {"source": source_kind}
        try:
            load = timm_source if source_kind == "timm" else torchvision_source
            source = load(name, checkpoint=None)
            result = export_module(
                source.model,
                name=name,
                preprocess=source.preprocess,
                labels=source.labels,
                repository=args.repository,
                options=options,
                architecture=source.architecture,
                notes=source.notes,
            )
            config = read_config(result.model_dir / "config.pbtxt")
            parity = config.parameters["attnserve_accelerator_parity"].string_value or "{}"
            record = json.loads(parity)
            entry.update(
                outputs=len(result.spec.output_names),
                attention=[a.name for a in result.spec.attention],
                onnx_parity=max(result.parity.max_abs_diff.values()),
                cuda=record,
                seconds=round(time.perf_counter() - started, 1),
            )
            if result.cam_agreement is not None:
                entry["cam_agreement"] = result.cam_agreement.lines()
            print(
                f"{name}: {entry['outputs']} outputs, onnx parity {entry['onnx_parity']:.1e}, cuda verified "
                f"{record.get('verified')} worst {record.get('worst_relative_diff', float('nan')):.1e} "
                f"({record.get('worst_output')}), {entry['seconds']} s",
                flush=True,
            )
        except Exception as exc:  # one model failing must not stop the others
            failed += 1
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc(limit=4)
            print(f"{name}: FAILED {entry['error']}", flush=True)
        report["models"][name] = entry
    try:
        accelerate.require_accelerator(AcceleratorOptions("tensorrt", "fp16"))
        report["tensorrt"] = "usable"
    except AttnserveError as exc:
        report["tensorrt"] = f"refused: {exc}"
    print(f"tensorrt fp16: {report['tensorrt']}", flush=True)
    out = args.json or (Path(os.environ["OUT"]) / "gpu_byo_check.json" if os.environ.get("OUT") else None)
    if out is not None:
        out.write_text(json.dumps(report, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
