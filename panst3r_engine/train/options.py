"""Training options: one frozen dataclass, validated once at the entry point."""

from __future__ import annotations

from dataclasses import dataclass

from panst3r_engine.errors import OptionsError

AMP_MODES = ("auto", "bf16", "fp16", "off")
RESIZE_MODES = ("512", "none")


@dataclass(frozen=True)
class TrainOptions:
    datasets: tuple[str, ...]
    init: str  # registry id ('v1', 'v2', ...) or a checkpoint file
    out: str  # run folder: checkpoints, logs, cache
    steps: int = 1000  # optimiser steps
    device: str = "auto"
    lr: float = 1e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    warmup: int | None = None  # optimiser steps; default steps // 40 (the official 5 of 200 epochs)
    batch_size: int = 2  # samples per micro-batch
    accum: int = 2  # micro-batches per optimiser step
    views: int = 5  # views per sample
    resize: str = "512"
    num_points: int = 12_288
    seed: int = 777
    save_every: int = 100
    log_every: int = 1
    resume: bool = False
    vocab_embeddings: str | None = None  # None: SigLIP text tower; 'random': seeded vectors; or an .npz
    cache_dir: str | None = None  # default <out>/cache
    use_cache: bool = True
    amp: str = "auto"
    val: tuple[str, ...] = ()  # validation datasets, scored every val_every steps
    val_every: int = 0

    @property
    def warmup_steps(self) -> int:
        return self.warmup if self.warmup is not None else max(1, self.steps // 40)

    def validate(self) -> TrainOptions:
        if not self.datasets:
            raise OptionsError("give at least one dataset folder to train on")
        checks = [
            (self.steps >= 1, "--steps must be at least 1"),
            (self.lr > 0 and 0 <= self.min_lr <= self.lr, "--lr must be > 0 and --min-lr between 0 and --lr"),
            (self.weight_decay >= 0, "--weight-decay must be >= 0"),
            (self.warmup is None or 0 < self.warmup <= self.steps, "--warmup must be between 1 and --steps"),
            (self.batch_size >= 1 and self.accum >= 1, "--batch-size and --accum must be at least 1"),
            (1 <= self.views <= 64, "--views must be between 1 and 64"),
            (16 <= self.num_points <= 1_000_000, "--num-points must be between 16 and 1000000"),
            (self.save_every >= 1 and self.log_every >= 1, "--save-every and --log-every must be at least 1"),
            (self.val_every >= 0, "--val-every must be >= 0"),
            (self.amp in AMP_MODES, f"--amp must be one of {', '.join(AMP_MODES)}"),
            (self.resize in RESIZE_MODES, f"--resize must be one of {', '.join(RESIZE_MODES)}"),
            (not (self.val_every and not self.val), "--val-every needs --val DATASET"),
        ]
        for ok, message in checks:
            if not ok:
                raise OptionsError(message)
        return self
