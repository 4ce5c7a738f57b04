"""Training logs: ``log.jsonl`` / ``log.csv`` (one row per step) and a loss-curve ``loss.png`` (PIL, no matplotlib)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path

from PIL import Image, ImageDraw

COLUMNS = ("step", "loss", "loss_class", "loss_mask", "loss_dice", "lr", "seconds", "val_pq", "val_pq_all", "val_miou")


def write_logs(out: Path, history: list) -> None:
    rows = []
    for h in history:
        flat = {**asdict(h), **h.extra}
        rows.append({k: flat.get(k) for k in COLUMNS})
    (out / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with open(out / "log.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    if rows:
        loss_curve([r["step"] for r in rows], [r["loss"] for r in rows]).save(out / "loss.png")


def loss_curve(steps: list[int], losses: list[float], size: tuple[int, int] = (640, 360)) -> Image.Image:
    """Total loss against step on a log axis, with min/max labels."""
    width, height = size
    margin = 40
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    values = [math.log10(max(v, 1e-12)) for v in losses]
    lo, hi = min(values), max(values)
    hi = hi if hi > lo else lo + 1
    first, last = steps[0], max(steps[-1], steps[0] + 1)

    def xy(step: int, value: float) -> tuple[float, float]:
        x = margin + (step - first) / (last - first) * (width - 2 * margin)
        y = height - margin - (value - lo) / (hi - lo) * (height - 2 * margin)
        return x, y

    draw.rectangle([margin, margin, width - margin, height - margin], outline="black")
    points = [xy(s, v) for s, v in zip(steps, values)]
    draw.line(points if len(points) > 1 else points * 2, fill="blue", width=2)
    draw.text((margin, 10), f"training loss (log scale): {max(losses):.3g} -> {losses[-1]:.3g}", fill="black")
    draw.text((margin, height - margin + 8), f"step {steps[0]}", fill="black")
    draw.text((width - margin - 60, height - margin + 8), f"step {steps[-1]}", fill="black")
    return image
