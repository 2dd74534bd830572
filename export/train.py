"""Training on cluttered digits, on the CPU, within a wall-clock budget.

The learning rate follows a one-cycle schedule over *progress*, the larger of the step share
and the time share: with a generous budget the run is deterministic (a fixed number of steps);
on a slower machine it compresses the schedule instead of overrunning. Model selection uses the
validation split only; the test split (scans 1497–1796) is scored once, at the end.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from attnserve._io import atomic_write_text

from .checkpoint import Checkpoint, save_checkpoint
from .data import ClutteredDigits
from .models import ServingGraph, create_model, get_spec, serving_spec
from .scoring import canvases_to_input, run_graph, score


@dataclass
class TrainConfig:
    architecture: str = "cbam"
    out_dir: Path = Path("runs/cbam")
    train_samples: int = 48_000
    val_samples: int = 2_000
    test_samples: int = 1_000
    max_steps: int = 1_250
    max_seconds: float = 225.0
    batch_size: int = 128
    max_lr: float = 3e-3
    weight_decay: float = 5e-4
    warmup_share: float = 0.25
    label_smoothing: float = 0.1
    distort: bool = True
    resample_share: float = 0.5
    ema_decay: float = 0.99
    seed: int = 0
    threads: int = 2
    model_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    checkpoint_path: Path
    metrics_path: Path
    metrics: dict[str, Any]


def one_cycle_lr(progress: float, max_lr: float, warmup_share: float) -> float:
    """Cosine warm-up from max_lr/25 to max_lr, then cosine annealing to ~0."""
    start, end = max_lr / 25.0, max_lr / 1e4
    if progress < warmup_share:
        phase = progress / warmup_share
        return start + (max_lr - start) * (1 - math.cos(math.pi * phase)) / 2
    phase = min(1.0, (progress - warmup_share) / (1 - warmup_share))
    return end + (max_lr - end) * (1 + math.cos(math.pi * phase)) / 2


def train(config: TrainConfig, progress_bar: bool = True) -> TrainResult:
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    spec = get_spec(config.architecture)
    model = create_model(config.architecture, **config.model_kwargs)
    started = time.monotonic()

    train_set = ClutteredDigits(
        "train",
        config.train_samples,
        seed=config.seed,
        distort=config.distort,
        resample_share=config.resample_share,
    )
    val_set = ClutteredDigits("val", config.val_samples, seed=config.seed)
    loader_rng = np.random.default_rng(config.seed)
    train_data = train_set.batch()
    images = canvases_to_input(train_data.images, spec.preprocess)
    labels = torch.from_numpy(train_data.labels)
    data_seconds = time.monotonic() - started

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.max_lr, weight_decay=config.weight_decay)
    # An exponential moving average of the weights (and BatchNorm statistics); the validation
    # split decides whether it or the last weights are kept.
    ema = torch.optim.swa_utils.AveragedModel(
        model,
        multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema_decay),
        use_buffers=True,
    )
    model.train()
    step, epoch, train_started = 0, 0, time.monotonic()
    bar = tqdm(total=config.max_steps, desc=f"train {config.architecture}", disable=not progress_bar)
    progress = 0.0
    while progress < 1.0:
        order = torch.from_numpy(loader_rng.permutation(len(labels)))
        for start in range(0, len(order) - config.batch_size + 1, config.batch_size):
            progress = max(step / config.max_steps, (time.monotonic() - train_started) / config.max_seconds)
            if progress >= 1.0:
                break
            lr = one_cycle_lr(progress, config.max_lr, config.warmup_share)
            for group in optimizer.param_groups:
                group["lr"] = lr
            index = order[start : start + config.batch_size]
            logits = model(images[index])["logits"]
            loss = F.cross_entropy(logits, labels[index], label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            ema.update_parameters(model)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.1e}", epoch=epoch)
        epoch += 1
    bar.close()
    train_seconds = time.monotonic() - train_started

    val_data = val_set.batch()
    model.eval()
    last_val = score(run_graph(ServingGraph(model, spec), val_data.images), val_data, spec)
    averaged = ema.module.eval()
    ema_val = score(run_graph(ServingGraph(averaged, spec), val_data.images), val_data, spec)
    kept = "ema" if ema_val["accuracy"] >= last_val["accuracy"] else "last"
    if kept == "ema":
        model.load_state_dict(averaged.state_dict())
    model.eval()
    graph = ServingGraph(model, spec)
    test_data = ClutteredDigits("test", config.test_samples, seed=config.seed).batch()
    metrics: dict[str, Any] = {
        "architecture": config.architecture,
        "weights": {
            "kept": kept,
            "val_accuracy_last": last_val["accuracy"],
            "val_accuracy_ema": ema_val["accuracy"],
        },
        "val": score(run_graph(graph, val_data.images), val_data, graph.spec),
        "test": score(run_graph(graph, test_data.images), test_data, graph.spec),
        "train": {
            "steps": step,
            "epochs": round(step * config.batch_size / len(labels), 2),
            "samples_per_second": round(step * config.batch_size / train_seconds, 1),
            "data_seconds": round(data_seconds, 1),
            "train_seconds": round(train_seconds, 1),
            "total_seconds": round(time.monotonic() - started, 1),
        },
        "splits": {"train": "scans 0-1296", "val": "scans 1297-1496", "test": "scans 1497-1796"},
    }
    config_json = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
    metrics["config"] = config_json

    checkpoint_path = config.out_dir / "checkpoint.pt"
    metrics_path = config.out_dir / "metrics.json"
    save_checkpoint(
        checkpoint_path,
        Checkpoint(
            architecture=config.architecture,
            model=model,
            spec=serving_spec(spec, model),
            model_kwargs=config.model_kwargs,
            metrics=metrics,
            config=config_json,
        ),
    )
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
    return TrainResult(checkpoint_path, metrics_path, metrics)
