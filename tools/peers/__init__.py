"""Peers the benchmark suite measures attnserve against, each as one call returning plain figures.

- `gradcam_bench` / `torch_predict_bench`: Grad-CAM in plain PyTorch per image, and a plain
  forward of the same model on the same tensor (attnserve's own venv).
- `torchserve_bench`: TorchServe serving the same model, ``/predictions`` and
  ``/explanations`` (Captum), from its own environment (`tools/peers/torchserve_setup.sh`);
  ``{"skipped": reason}`` where that environment is missing.

Importable with tools/ on ``sys.path`` (as it is for a script in tools/):
``from peers import gradcam_bench, torch_predict_bench, torchserve_bench``.
"""

from .gradcam import DEFAULT_MODEL_DIR, SAMPLE_IMAGE, gradcam_bench, torch_predict_bench
from .torchserve import TORCHSERVE_VENV, torchserve_bench

__all__ = [
    "DEFAULT_MODEL_DIR",
    "SAMPLE_IMAGE",
    "TORCHSERVE_VENV",
    "gradcam_bench",
    "torch_predict_bench",
    "torchserve_bench",
]
