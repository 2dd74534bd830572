"""One-off check of attnserve's Grad-CAM baseline against the `grad-cam` package.

Not part of the default or test installs: `grad-cam` pulls torchvision and a CUDA build of
torch (gigabytes). Run it in a separate venv, from the repository root:

    python3 -m venv /tmp/gc && /tmp/gc/bin/pip install torch==2.13.0
    /tmp/gc/bin/pip install --no-deps grad-cam ttach
    /tmp/gc/bin/pip install "opencv-python-headless<5" matplotlib scikit-learn pydantic pillow tqdm
    /tmp/gc/bin/pip install --no-deps -e .
    /tmp/gc/bin/python tools/check_gradcam_package.py

Measured 2026-11-25 with grad-cam 1.5.7 on checkpoints/cbam (200 test canvases, last conv):
Pearson r 1.0000, max |difference| after per-map min-max 7.7e-07, same peak cell 100 %.
"""

from __future__ import annotations

import importlib.metadata
import sys
import types
from pathlib import Path


class _Placeholder(types.ModuleType):
    """Stands in for torchvision: pytorch_grad_cam imports it for helpers GradCAM never uses."""

    __path__: list[str] = []

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        return object


def main() -> int:
    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
        sys.modules[name] = _Placeholder(name)
    import torch
    import torch.nn.functional as F
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from attnserve.export.checkpoint import load_checkpoint
    from attnserve.export.data import ClutteredDigits
    from attnserve.export.evaluate import mean_correlation
    from attnserve.export.gradcam import grad_cam
    from attnserve.export.scoring import canvases_to_input

    checkpoint = load_checkpoint(Path("checkpoints/cbam/checkpoint.pt"))
    model = checkpoint.model.eval()

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.inner(images)["logits"]

    data = ClutteredDigits("test", 200, seed=0).batch()
    images = canvases_to_input(data.images, checkpoint.spec.preprocess)
    with torch.no_grad():
        predicted = model(images)["logits"].argmax(dim=1)
    ours = grad_cam(model, model.last_conv, images)
    ours = F.interpolate(ours[:, None], size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    package = GradCAM(model=LogitsOnly(model), target_layers=[model.last_conv])
    theirs = torch.from_numpy(
        package(input_tensor=images, targets=[ClassifierOutputTarget(int(c)) for c in predicted])
    )

    def minmax(maps: torch.Tensor) -> torch.Tensor:
        flat = maps.reshape(len(maps), -1)
        low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
        return ((flat - low) / (high - low).clamp_min(1e-12)).reshape(maps.shape)

    same_peak = (
        minmax(ours).reshape(200, -1).argmax(1) // 512 == minmax(theirs).reshape(200, -1).argmax(1) // 512
    )
    print(f"grad-cam {importlib.metadata.version('grad-cam')}, {len(images)} test canvases, layer: last conv")
    print(f"mean Pearson r: {mean_correlation(ours, theirs):.4f}")
    print(f"max |difference| after per-map min-max: {float((minmax(ours) - minmax(theirs)).abs().max()):.1e}")
    print(f"same peak cell: {float(same_peak.float().mean()):.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
