"""RAM: the Recurrent Attention Model (Mnih, Heess, Graves, Kavukcuoglu, "Recurrent Models of
Visual Attention", NIPS 2014) — hard attention, a path of glimpses chosen by reinforcement.

A *glimpse sensor* takes patches of growing size around a location, all resampled to the same
small grid (a retina: sharp in the centre, coarse around it); a *glimpse network* combines what
it saw with where; a recurrent *core* accumulates the glimpses; a *location network* proposes
where to look next. The location is a sample from a Gaussian around the location network's
output, which is not differentiable: the location network learns by REINFORCE (reward 1 for a
correct final answer) against a learned baseline, while the rest learns from the class label
(the paper's hybrid loss).

Exported with the loop unrolled over a fixed number of glimpses and the location *mean* used
(deterministic at inference), so the whole path is one ONNX graph. The path is an output:
every glimpse's patches as boxes in the input's field of view, in order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnserve.spec import (
    AttentionKind,
    AttentionSpec,
    ModelSpec,
)

from ..data import digit_labels, digit_preprocess
from ._registry import register_model
from ._training import TrainingRecipe, TrainingStep

LOCATION_STEPS = 256
"""Locations are snapped to 1/256 of the [-1, 1] range (a quarter pixel at 128 px). Where a
glimpse goes next depends steeply on what it saw (two blobs competing for the saliency
argmax), so float32 rounding differences between runtimes (~1e-7) grew to a different path by
the fifth glimpse (measured: 0.12 of the input on a noise image); snapped, every runtime takes
the same path."""


def snap(locations: Tensor) -> Tensor:
    return torch.round(locations * LOCATION_STEPS) / LOCATION_STEPS


def glimpse_boxes(locations: Tensor, sizes: Tensor) -> Tensor:
    """B×2 centres in [-1, 1] (x, y) and K patch sides (fractions of the input) → B×K×4 boxes
    (x0, y0, x1, y1) as fractions of the input's width and height."""
    centre = (locations + 1.0) / 2.0
    half = sizes[None, :, None] / 2.0
    return torch.cat([centre[:, None, :] - half, centre[:, None, :] + half], dim=2)


class GlimpseSensor(nn.Module):
    """K square patches around a location, the k-th ``scale**k`` times the first, each sampled
    (bilinear) onto a ``grid``×``grid`` retina. Outside the image reads as the padding value."""

    sizes: Tensor
    steps: Tensor

    def __init__(self, grid: int, first_size: float, scales: int, scale: float = 2.0) -> None:
        super().__init__()
        self.grid = grid
        sizes = torch.tensor([first_size * scale**k for k in range(scales)], dtype=torch.float32)
        self.register_buffer("sizes", sizes)
        steps = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid * 2.0 - 1.0  # cell centres
        self.register_buffer("steps", steps)

    def forward(self, images: Tensor, locations: Tensor) -> Tensor:
        """B×C×H×W images, B×2 locations in [-1, 1] → B×K·C×grid×grid patches."""
        batch = images.shape[0]
        patches = []
        for size in self.sizes:
            # sample positions in normalised coordinates: centre + offsets spanning `size`
            offsets = self.steps * size  # a patch of side `size` spans size·2 in [-1, 1] units / 2
            ys = locations[:, 1, None] + offsets[None, :]
            xs = locations[:, 0, None] + offsets[None, :]
            grid = torch.stack(
                [
                    xs[:, None, :].expand(batch, self.grid, self.grid),
                    ys[:, :, None].expand(batch, self.grid, self.grid),
                ],
                dim=3,
            )
            patches.append(
                F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            )
        return torch.cat(patches, dim=1)


class RecurrentAttentionModel(nn.Module):
    cells: Tensor

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        glimpses: int = 6,
        grid: int = 16,
        first_size: float = 0.125,
        scales: int = 4,
        hidden: int = 256,
        location_std: float = 0.12,
        what: str = "conv",
        reward: str = "gain",
        discount: float = 0.5,
        locator: str = "saliency",
    ) -> None:
        super().__init__()
        self.glimpses = glimpses
        self.location_std = location_std
        self.sensor = GlimpseSensor(grid, first_size, scales)
        channels = in_channels * scales
        self.reward = reward
        self.discount = discount
        self.locator = locator
        self.grid = grid
        if locator == "saliency":
            # where to look next: a saliency map over the retina's widest patch, soft-argmax
            self.saliency = nn.Sequential(
                nn.Conv2d(channels, 16, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(16, 1, 3, padding=1),
            )
            cells = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid * 2.0 - 1.0
            self.register_buffer("cells", cells)
        if what == "fc":
            self.what = nn.Sequential(nn.Flatten(), nn.Linear(channels * grid * grid, hidden))
        else:
            self.what = nn.Sequential(
                nn.Conv2d(channels, 32, 3, stride=2, padding=1),
                nn.ReLU(inplace=True),
                nn.Flatten(),
                nn.Linear(32 * (grid // 2) ** 2, hidden),
            )
        self.where = nn.Linear(2, hidden)
        self.core = nn.LSTMCell(hidden, hidden)
        self.locate = nn.Linear(hidden, 2)
        self.baseline = nn.Linear(hidden, 1)
        self.classifier = nn.Linear(hidden, num_classes)
        nn.init.zeros_(self.locate.weight)
        nn.init.zeros_(self.locate.bias)

    def _glimpse(self, images: Tensor, location: Tensor) -> tuple[Tensor, Tensor]:
        seen = self.sensor(images, location)
        return F.relu(self.what(seen) + self.where(location)), seen

    def _next_location(self, hidden: Tensor, seen: Tensor, location: Tensor) -> Tensor:
        if self.locator != "saliency":
            return torch.tanh(self.locate(hidden.detach()))
        scores = self.saliency(seen)[:, 0]  # B×grid×grid over the widest patch
        weights = torch.softmax(scores.reshape(scores.shape[0], -1), dim=1).reshape(scores.shape)
        expected = torch.stack(
            [(weights.sum(dim=1) * self.cells).sum(dim=1), (weights.sum(dim=2) * self.cells).sum(dim=1)],
            dim=1,
        )
        widest = self.sensor.sizes[-1]
        target = location + expected * widest + 0.2 * torch.tanh(self.locate(hidden.detach()))
        return target.clamp(-1.0, 1.0)

    def rollout(self, images: Tensor, sample: bool) -> dict[str, Tensor]:
        """Runs the glimpses; with ``sample`` the locations are drawn (training), else the means."""
        batch = images.shape[0]
        state = (
            images.new_zeros(batch, self.core.hidden_size),
            images.new_zeros(batch, self.core.hidden_size),
        )
        location = images.new_zeros(batch, 2)  # the first glimpse is at the centre
        locations, log_probs, baselines, step_logits = [], [], [], []
        for step in range(self.glimpses):
            locations.append(location)
            glimpse, seen = self._glimpse(images, location)
            state = self.core(glimpse, state)
            hidden = state[0]
            if sample:
                step_logits.append(self.classifier(hidden))
            if step == self.glimpses - 1:
                break
            mean = self._next_location(hidden, seen.detach(), location)
            if sample:
                baselines.append(self.baseline(hidden.detach())[:, 0])
                location = (mean + self.location_std * torch.randn_like(mean)).detach()
                distribution = torch.distributions.Normal(mean, self.location_std)
                log_probs.append(distribution.log_prob(location).sum(dim=1))
                location = location.clamp(-1.0, 1.0)
            else:
                location = snap(mean)
        path = torch.stack([glimpse_boxes(loc, self.sensor.sizes) for loc in locations], dim=1)
        result = {"logits": self.classifier(state[0]), "glimpses": path}
        if sample:
            result["log_probs"] = torch.stack(log_probs, dim=1)
            result["baselines"] = torch.stack(baselines, dim=1)
            result["step_logits"] = torch.stack(step_logits, dim=1)
        return result

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return self.rollout(images, sample=False)

    def training_loss(self, images: Tensor, labels: Tensor, progress: float, step: int) -> TrainingStep:
        """Cross-entropy for the classifier and everything it reads (at every glimpse, so each
        glimpse learns to be useful), REINFORCE with a learned baseline for the locations.

        The reward of a location is what looking there added: the rise in the probability of
        the right class from the glimpse before to the glimpse taken there (and, discounted,
        after it); the paper's reward, a correct final answer, is ``reward="correct"``.
        """
        result = self.rollout(images, sample=True)
        step_logits = result["step_logits"]  # B×T×K
        steps = step_logits.shape[1]
        classification = F.cross_entropy(
            step_logits.reshape(-1, step_logits.shape[-1]), labels.repeat_interleave(steps)
        )
        probability = torch.softmax(step_logits.detach(), dim=2).gather(
            2, labels[:, None, None].expand(-1, steps, 1)
        )[:, :, 0]
        if self.reward == "correct":
            final = (step_logits[:, -1].detach().argmax(dim=1) == labels).float()
            returns = final[:, None].expand(-1, steps - 1)
        else:
            gains = probability[:, 1:] - probability[:, :-1]  # B×(T-1): what each location added
            returns = torch.zeros_like(gains)
            running = torch.zeros_like(gains[:, 0])
            for step in range(steps - 2, -1, -1):
                running = gains[:, step] + self.discount * running
                returns[:, step] = running
        advantage = (returns - result["baselines"]).detach()
        reinforce = -(result["log_probs"] * advantage).sum(dim=1).mean()
        baseline = F.mse_loss(result["baselines"], returns)
        loss = classification + reinforce + baseline
        correct = (step_logits[:, -1].argmax(dim=1) == labels).float().mean()
        return TrainingStep(loss, {"ce": float(classification.detach()), "acc": float(correct)})


_RAM_PREPROCESS = digit_preprocess((128, 128))

_GLIMPSES = AttentionSpec(
    name="glimpses",
    kind=AttentionKind.PATH,
    axes=("step", "patch", "box"),
    description=(
        "The glimpse path, in order: at each of 6 steps the 4 patches of the glimpse sensor "
        "(16, 32, 64 and 128 input pixels wide, all seen on a 16×16 retina) around where the "
        "location network chose to look; the first glimpse is at the centre"
    ),
    value_range="boxes (x0, y0, x1, y1) as fractions of the input's width and height",
    block="glimpse sensor",
)


@register_model(
    ModelSpec(
        architecture="ram",
        description=(
            "Recurrent Attention Model (Mnih et al. 2014): 6 glimpses of a 4-scale retina on a 128×128 "
            "input, LSTM core, location network trained with REINFORCE and a learned baseline"
        ),
        preprocess=_RAM_PREPROCESS,
        labels=digit_labels(),
        attention=(_GLIMPSES,),
        primary_attention="glimpses",
        primary_reason="its only attention output: where the model looked, in order",
    ),
    TrainingRecipe(
        data=(("small", 2 / 3), ("standard", 1 / 3)),
        selection="small",
        train_samples=36_000,
        max_seconds=480.0,
        max_steps=6_000,
        max_lr=2e-3,
        weight_decay=1e-4,
    ),
)
def ram(**kwargs: object) -> RecurrentAttentionModel:
    return RecurrentAttentionModel(**kwargs)  # type: ignore[arg-type]
