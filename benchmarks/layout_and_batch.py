"""Why convolutional models are channels-last and inference batches are sized per model.

Side by side in one process, on random inputs: inference images/s of the MLP 784-1000-1000
and of ``convnet:32`` at several batch sizes, in NCHW and channels-last; and training-step
samples/s (forward, backward, SGD, batch 64) of ``convnet:32`` in both layouts. Also prints
the batch size :func:`lifelong_kd.models.inference_batch_size` picks for each model. Run from
the repository root::

    python benchmarks/layout_and_batch.py
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from lifelong_kd.models import build_model, inference_batch_size

BATCHES = (16, 32, 64, 256, 1024)
IMAGES = 4096


def images_per_second(model: torch.nn.Module, x: torch.Tensor, batch: int) -> float:
    """Inference throughput over ``x`` in batches of ``batch`` (after one warm-up pass)."""
    task = torch.zeros(len(x), dtype=torch.long)
    with torch.inference_mode():
        for start in range(0, 1024, batch):
            model(x[start : start + batch], task[start : start + batch])
        start_time = time.perf_counter()
        for start in range(0, len(x), batch):
            model(x[start : start + batch], task[start : start + batch])
    return len(x) / (time.perf_counter() - start_time)


def train_steps_per_second(model: torch.nn.Module, x: torch.Tensor, steps: int = 30) -> float:
    """Training samples/s of SGD steps on one batch ``x``."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    y = torch.randint(0, 2, (len(x),))
    task = torch.zeros(len(x), dtype=torch.long)
    for i in range(steps + 5):
        if i == 5:
            start = time.perf_counter()
        loss = F.cross_entropy(model(x, task), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * len(x) / (time.perf_counter() - start)


def main() -> None:
    """Print the two tables."""
    torch.manual_seed(0)
    print("| model | layout | " + " | ".join(f"batch {b}" for b in BATCHES) + " | picked batch |")
    print("|---|---|" + "---:|" * (len(BATCHES) + 1))
    for spec, shape in (("mlp:1000,1000", (1, 28, 28)), ("convnet:32", (3, 32, 32))):
        x = torch.randn(IMAGES, *shape)
        for channels_last in (False, True) if spec.startswith("convnet") else (False,):
            model = build_model(spec, shape, 5, 2, channels_last=channels_last).eval()
            speeds = [images_per_second(model, x, b) for b in BATCHES]
            layout = "channels-last" if channels_last else "NCHW"
            print(f"| {spec} | {layout} | " + " | ".join(f"{s:,.0f}" for s in speeds) + f" | {inference_batch_size(model, shape)} |")
    x = torch.randn(64, 3, 32, 32)
    for channels_last in (False, True):
        model = build_model("convnet:32", (3, 32, 32), 5, 2, channels_last=channels_last)
        layout = "channels-last" if channels_last else "NCHW"
        print(f"convnet:32 training step, batch 64, {layout}: {train_steps_per_second(model, x):,.0f} samples/s")


if __name__ == "__main__":
    main()
