"""Runs a peer measurement and prints its figures as JSON lines, one per configuration:

    PYTHONPATH=tools .venv/bin/python -m peers gradcam [IMAGE] [--seconds 5] [--threads 1 2]
    PYTHONPATH=tools .venv/bin/python -m peers torchserve [IMAGE] [--seconds 10] [--concurrency 1 4]

With no IMAGE, docs/samples/digit.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .gradcam import DEFAULT_MODEL_DIR, SAMPLE_IMAGE, gradcam_bench, torch_predict_bench
from .torchserve import torchserve_bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m peers", description=__doc__.splitlines()[0])
    parser.add_argument("peer", choices=("gradcam", "torchserve"))
    parser.add_argument("image", nargs="?", type=Path, default=SAMPLE_IMAGE)
    parser.add_argument("--seconds", type=float, default=None, help="per measurement (5 / 10)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="gradcam: torch threads")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4], help="torchserve: clients")
    parser.add_argument("--workers", type=int, default=2, help="torchserve: model workers")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    args = parser.parse_args(argv)
    image_bytes = args.image.read_bytes()
    if args.peer == "gradcam":
        seconds = args.seconds or 5.0
        for threads in args.threads:
            forward = torch_predict_bench(image_bytes, seconds, threads, args.model_dir)
            forward.pop("logits")
            figures = {"forward": forward}
            for method in ("hooks", "autograd"):
                figures[f"gradcam {method}"] = gradcam_bench(
                    image_bytes, seconds, threads, args.model_dir, method
                )
                figures[f"gradcam {method}"].pop("map")
            print(json.dumps(figures), flush=True)
        return 0
    for concurrency in args.concurrency:
        figures = torchserve_bench(
            image_bytes, args.seconds or 10.0, concurrency, args.workers, model_dir=args.model_dir
        )
        print(json.dumps(figures), flush=True)
        if "skipped" in figures:
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
