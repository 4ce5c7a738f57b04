"""The training loop: frozen backbones, cached features, AdamW + warm-up/cosine, resumable.

Everything but ``panoptic_decoder`` is frozen (PanSt3R fact sheet §1.2). Each step runs only the
decoder on cached backbone features (:mod:`.cache`), for ``accum`` micro-batches of
``batch_size`` samples, then one optimiser step. Randomness is a pure function of the seed and
the position in the sample stream: the order is a seeded permutation per pass over the data and
each sample's loss points come from a generator seeded by its position, so ``--resume`` from
``last.pth`` reproduces an uninterrupted run and ``torchrun`` with N processes of batch b trains
on what one process of batch N*b would.

Run folder: ``last.pth`` (official layout plus optimiser, scheduler and step, every
``save_every`` steps), ``final.pth`` (official layout: ``args`` / ``weights`` / ``epoch``, plus the
classes' text embeddings ``class_embeddings`` [C, D], so ``run`` uses the trained classes by default),
``best.pth`` (with ``--val``: the best validation PQ^scene so far), ``classes.txt`` +
``classes.npz`` (the vocabulary and its text embeddings), ``log.jsonl``,
``log.csv`` and ``loss.png``, and ``cache/`` (frozen features).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from panst3r_engine.errors import OptionsError, PanSt3RError
from panst3r_engine.train.cache import FeatureCache, Features, compute_features
from panst3r_engine.train.data import Sample, load_training_data
from panst3r_engine.train.losses import LossConfig, PanopticCriterion
from panst3r_engine.train.options import TrainOptions
from panst3r_engine.train.schedule import make_optimizer, make_scheduler
from panst3r_engine.vocab.checkpoint import EMBEDDINGS_KEY, CheckpointClasses, checkpoint_classes
from panst3r_engine.vocab.embeddings import ClassEmbeddings
from panst3r_engine.vocab.vocabularies import Vocabulary

LAST, FINAL, BEST = "last.pth", "final.pth", "best.pth"


class TrainError(PanSt3RError):
    """A training run that cannot start or continue, with what to do."""

    code = "train"


@dataclass
class StepLog:
    step: int
    loss: float
    loss_class: float
    loss_mask: float
    loss_dice: float
    lr: float
    seconds: float
    extra: dict = field(default_factory=dict)


def class_embeddings(
    vocabulary: Vocabulary, spec: str | None, dim: int, seed: int, init: CheckpointClasses | None = None
) -> ClassEmbeddings:
    """Text embeddings of the training classes, in vocabulary order.

    ``None``: those the ``--init`` checkpoint stores when it holds every class (a checkpoint made by
    train, fine-tuned again), else the SigLIP text tower, cached as at inference
    (:func:`panst3r_engine.vocab.embeddings.embeddings_for`);
    ``'random'``: seeded unit vectors (tests, tiny checkpoints without a text tower); else an ``.npz``
    holding every class name.
    """
    from panst3r_engine.vocab.embeddings import (
        default_text_model_dir,
        embeddings_for,
        load_embeddings,
        random_embeddings,
        stored_rows,
    )

    names = list(vocabulary.names)
    stored = stored_rows(init, vocabulary) if not spec else None
    if stored is not None:
        emb = ClassEmbeddings(names, stored)
    elif spec == "random":
        emb = random_embeddings(names, dim, seed)
    elif spec:
        loaded = load_embeddings(spec, expected_dim=dim)
        row = {n: i for i, n in enumerate(loaded.names)}
        missing = [n for n in names if n not in row]
        if missing:
            raise TrainError(f"{spec} has no embedding for the classes {missing[:5]}; add them or drop the file")
        emb = ClassEmbeddings(names, loaded.vectors[[row[n] for n in names]])
    else:
        emb = embeddings_for(vocabulary, default_text_model_dir())
        if emb.vectors.shape[1] != dim:
            raise TrainError(f"the text model gives {emb.vectors.shape[1]}-d embeddings; the model expects {dim}-d")
    return ClassEmbeddings(names, emb.vectors.float(), list(vocabulary.isthing))


def distributed() -> tuple[int, int]:
    """(rank, world size): torch.distributed when ``torchrun`` started us, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def batch_slots(step: int, micro: int, accum: int, batch: int, rank: int, world: int) -> list[int]:
    """Global positions in the sample stream of one micro-batch on one process.

    Process r of w takes the r-th share of each global micro-batch, so w processes with batch b
    see the same samples as one process with batch w*b.
    """
    first = ((step * accum + micro) * world + rank) * batch
    return list(range(first, first + batch))


def sample_at(slot: int, count: int, seed: int) -> int:
    """The sample at a stream position: a seeded permutation per pass over the data."""
    perm = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 100_003 + slot // count))
    return int(perm[slot % count])


def slot_generator(seed: int, slot: int) -> torch.Generator:
    """Loss points of the sample at a stream position (the same on any number of processes)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + slot)


def checkpoint_args(model, vocabulary: Vocabulary, opts: TrainOptions) -> argparse.Namespace:
    """Official constructor strings plus the vocabulary and the training options."""
    from panst3r_engine.model.constructor_args import args_from_config

    return argparse.Namespace(
        **args_from_config(model.cfg),
        classes=list(vocabulary.names),
        class_isthing=list(vocabulary.isthing),
        training={k: list(v) if isinstance(v, tuple) else v for k, v in asdict(opts).items()},
    )


def _atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".partial")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_run_state(path: Path) -> dict:
    """``last.pth`` of an earlier run (weights-only unpickling, ``argparse.Namespace`` allowed)."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means the same thing to the user
        raise TrainError(f"cannot resume from {path} ({type(exc).__name__}: {exc}); start a new --out") from exc


class Trainer:
    """One training run; :meth:`run` is the sequence setup → steps → final checkpoint."""

    def __init__(self, opts: TrainOptions, log: Callable[[str], None] | None = None) -> None:
        self.opts = opts.validate()
        self.out = Path(opts.out)
        self.rank, self.world = distributed()
        self.print = log or (lambda line: print(line, file=sys.stderr, flush=True))
        if self.rank:
            self.print = lambda line: None
        self.history: list[StepLog] = []
        self.best: float | None = None  # best validation PQ(all) so far

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        from panst3r_engine.devices import resolve_device
        from panst3r_engine.model.checkpoints import load_model
        from panst3r_engine.model.loading import resolve_weights_path

        opts = self.opts
        self._check_out()
        samples, vocabulary = load_training_data(opts.datasets, opts.views, opts.resize)
        self.samples, self.vocabulary = samples, vocabulary
        try:
            self.device = resolve_device(opts.device)
        except ValueError as exc:
            raise OptionsError(str(exc)) from exc
        path, _ = resolve_weights_path(opts.init)
        model, info = load_model(path, device=self.device)
        init = checkpoint_classes(info.args, info.class_embeddings, model.text_dim, f"checkpoint {path.name}")
        model.requires_grad_(False)
        model.panoptic_decoder.requires_grad_(True)
        self.model = model.train()
        self.amp_dtype = self._amp_dtype()
        self.text = class_embeddings(vocabulary, opts.vocab_embeddings, model.text_dim, opts.seed, init)
        self.text_vectors = self.text.vectors.to(self.device)
        self.decoder = self._trainable(model.panoptic_decoder)
        self.optimizer = make_optimizer(model.panoptic_decoder, opts.lr, opts.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, opts.steps, opts.warmup_steps, opts.lr, opts.min_lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.criterion = PanopticCriterion(LossConfig(num_points=opts.num_points))
        self.out.mkdir(parents=True, exist_ok=True)  # only once data, weights and classes are known to be usable
        self.cache = None
        if opts.use_cache:
            self.cache = FeatureCache(opts.cache_dir or self.out / "cache", model, amp=self.amp_dtype is not None)
            started = time.perf_counter()
            for sample in samples:
                self.cache.get(sample.images)
            self.print(
                f"features of {len(samples)} samples: {self.cache.misses} computed, {self.cache.hits} cached "
                f"({self.cache.size_bytes() / 2**20:.1f} MiB, {time.perf_counter() - started:.1f} s)"
            )
        self.start = 0
        if opts.resume:
            self._resume()
        self._write_vocabulary()

    def _trainable(self, decoder: torch.nn.Module) -> torch.nn.Module:
        """The decoder's batch forward; under torchrun wrapped in DDP (the frozen backbones stay outside it)."""
        module = DecoderBatch(decoder, self.amp_dtype)
        if self.world == 1:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.print(f"DistributedDataParallel over {self.world} processes ({dist.get_backend()})")
        return DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)

    def _check_out(self) -> None:
        if self.opts.resume:
            if not (self.out / LAST).is_file():
                raise TrainError(f"nothing to resume in {self.out}: it has no {LAST}; drop --resume to start a run")
        elif self.out.exists() and any(self.out.glob("*.pth")):
            raise TrainError(
                f"{self.out} already holds a training run; pass --resume to continue it or pick another --out"
            )

    def _amp_dtype(self) -> torch.dtype | None:
        """Autocast dtype on CUDA (bf16 where supported, else fp16 with loss scaling); None = fp32."""
        if self.device.type != "cuda" or self.opts.amp == "off":
            return None
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        if self.opts.amp == "fp16" or (self.opts.amp == "auto" and not torch.cuda.is_bf16_supported()):
            return torch.float16
        return torch.bfloat16

    def _resume(self) -> None:
        state = read_run_state(self.out / LAST)
        args = vars(state["args"]) if isinstance(state.get("args"), argparse.Namespace) else {}
        if args.get("classes") != list(self.vocabulary.names):
            raise TrainError(
                f"{self.out / LAST} was trained on other classes than these datasets give; "
                "resume with the same datasets or start a new --out"
            )
        self.model.load_state_dict({k: v.to(self.device) for k, v in state["weights"].items()})
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        self.start = int(state["step"])
        self.best = state.get("best")
        self.history = [StepLog(**h) for h in json.loads(state.get("history", "[]"))]
        self.print(f"resumed {self.out / LAST} at step {self.start}")

    def _write_vocabulary(self) -> None:
        from panst3r_engine.vocab.embeddings import save_embeddings

        if self.rank:
            return
        lines = [f"{n}{'' if t else ';stuff'}\n" for n, t in zip(self.vocabulary.names, self.vocabulary.isthing)]
        (self.out / "classes.txt").write_text("".join(lines), encoding="utf-8")
        save_embeddings(self.out / "classes.npz", list(self.text.names), self.text.vectors)

    # ------------------------------------------------------------------ steps
    def features(self, sample: Sample) -> Features:
        if self.cache is not None:
            return self.cache.get(sample.images)
        return compute_features(self.model, sample.images, amp=self.amp_dtype is not None)

    def forward(self, batch: list[Sample]) -> list[dict]:
        """The panoptic decoder on the samples' cached features, with per-layer outputs (through DDP under torchrun)."""
        inputs = []
        for sample in batch:
            feats = self.features(sample)
            inputs.append((feats.tokens.to(self.device), feats.pos.to(self.device), sample.images.to(self.device)))
        return self.decoder(inputs, self.text_vectors)

    def _synchronising(self, last_micro: bool):
        """DDP all-reduces gradients on the last micro-batch's backward only (``no_sync`` before it)."""
        if isinstance(self.decoder, DistributedDataParallel) and not last_micro:
            return self.decoder.no_sync()
        return contextlib.nullcontext()

    def step(self, step: int) -> StepLog:
        opts = self.opts
        started = time.perf_counter()
        sums = {"total": 0.0, "class": 0.0, "mask": 0.0, "dice": 0.0}
        for micro in range(opts.accum):
            slots = batch_slots(step, micro, opts.accum, opts.batch_size, self.rank, self.world)
            batch = [self.samples[sample_at(i, len(self.samples), opts.seed)] for i in slots]
            with self._synchronising(micro == opts.accum - 1):
                outputs = self.forward(batch)
                generators = [slot_generator(opts.seed, i) for i in slots]
                losses = self.criterion(outputs, [s.targets(self.device) for s in batch], generators)
                self.scaler.scale(losses["total"] / opts.accum).backward()
            for key in sums:
                sums[key] += float(losses[key].detach()) / opts.accum
        if not math.isfinite(sums["total"]):
            raise TrainError(f"the loss became {sums['total']} at step {step + 1}; lower --lr or use --amp off")
        lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return StepLog(
            step + 1, sums["total"], sums["class"], sums["mask"], sums["dice"], lr, time.perf_counter() - started
        )

    # ------------------------------------------------------------------ checkpoints
    def _official(self, step: int) -> dict:
        weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        return {
            "args": checkpoint_args(self.model, self.vocabulary, self.opts),
            "weights": weights,
            "epoch": step,
            EMBEDDINGS_KEY: self.text.vectors.detach().to("cpu", torch.float32, copy=True),
        }

    def save_last(self, step: int) -> None:
        if self.rank:
            return
        state = {
            **self._official(step),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": torch.get_rng_state(),
            "step": step,
            "history": json.dumps([asdict(h) for h in self.history]),
        }
        if self.best is not None:
            state["best"] = self.best
        _atomic_save(state, self.out / LAST)

    def save_final(self, step: int) -> Path:
        path = self.out / FINAL
        if not self.rank:
            _atomic_save(self._official(step), path)
        return path

    def validate(self, step: int) -> dict:
        """Score the current weights on ``--val`` scenes through ``eval run``; keep ``best.pth`` on a new best."""
        from panst3r_engine.train.evaluate import evaluate_checkpoint

        candidate = self.out / "validation.pth"
        _atomic_save(self._official(step), candidate)
        scores = evaluate_checkpoint(
            candidate,
            self.opts.val,
            str(self.out / "classes.npz"),
            self.out / "validation",
            self.opts.resize,
            str(self.device),
        )
        score = scores["pq_all"] if scores["pq_all"] is not None else -1.0
        if self.best is None or score > self.best:
            self.best = score
            os.replace(candidate, self.out / BEST)
        else:
            candidate.unlink()
        self.print(
            f"validation at step {step}: PQ {_pct(scores['pq_all'])}  mIoU {_pct(scores['miou'])}  "
            f"(best PQ {_pct(self.best)})"
        )
        return {f"val_{k}": v for k, v in scores.items()}

    # ------------------------------------------------------------------ the run
    def run(self, stop_after: int | None = None) -> Path | None:
        """Train to ``opts.steps`` (or stop after ``stop_after`` steps, as a killed run would); returns final.pth."""
        from panst3r_engine.train.report import write_logs

        self.setup()
        opts = self.opts
        end = opts.steps if stop_after is None else min(opts.steps, stop_after)
        began, done = time.perf_counter(), 0
        for step in range(self.start, end):
            entry = self.step(step)
            self.history.append(entry)
            done += 1
            if (step + 1) % opts.log_every == 0 or step + 1 == end:
                rate = done / (time.perf_counter() - began)
                self.print(progress_line(entry, opts.steps, rate))
            if not self.rank and opts.val_every and ((step + 1) % opts.val_every == 0 or step + 1 == opts.steps):
                entry.extra = self.validate(step + 1)
            if (step + 1) % opts.save_every == 0 or step + 1 == end:
                self.save_last(step + 1)
        if not self.rank:
            write_logs(self.out, self.history)
        if end < opts.steps:
            return None
        path = self.save_final(opts.steps)
        self.print(f"wrote {path}")
        return path


class DecoderBatch(torch.nn.Module):
    """The trainable panoptic decoder as one module whose forward covers a whole micro-batch.

    DDP synchronises gradients for one forward followed by one backward, so the samples of a
    micro-batch go through a single ``forward`` call.
    """

    def __init__(self, decoder: torch.nn.Module, amp_dtype: torch.dtype | None) -> None:
        super().__init__()
        self.decoder, self.amp_dtype = decoder, amp_dtype

    def forward(self, batch: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], text: torch.Tensor) -> list[dict]:
        return [self.sample(tokens, pos, images, text) for tokens, pos, images in batch]

    def sample(self, tokens: torch.Tensor, pos: torch.Tensor, images: torch.Tensor, text: torch.Tensor) -> dict:
        """One sample's views [V, ...] -> the decoder's outputs with the per-layer (auxiliary) ones, in fp32."""
        fpn, mask_feats = [], []
        enabled = self.amp_dtype is not None
        with torch.autocast(images.device.type, dtype=self.amp_dtype or torch.float32, enabled=enabled):
            for v in range(len(images)):  # one view at a time: LoftUp's min-max stays per view, as at inference
                f, m = self.decoder.encode_views(tokens[v : v + 1], pos[v : v + 1], images[v : v + 1])
                fpn.append(f[0])
                mask_feats.append(m[0])
            out = self.decoder.decode(fpn, mask_feats, text, aux_outputs=True)
        return _to_float(out)


def _to_float(out: dict) -> dict:
    """Decoder outputs in float32 (the loss is computed in fp32, as released)."""

    def cast(value):
        if isinstance(value, torch.Tensor):
            return value.float()
        if isinstance(value, list):
            return [cast(v) for v in value]
        if isinstance(value, dict):
            return {k: cast(v) for k, v in value.items()}
        return value

    return cast(out)


def _pct(value: float | None) -> str:
    return "n/a" if value is None or value < 0 else f"{100 * value:.1f}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def progress_line(entry: StepLog, total: int, steps_per_s: float) -> str:
    eta = _duration((total - entry.step) / steps_per_s) if steps_per_s > 0 else "?"
    return (
        f"step {entry.step}/{total}  loss {entry.loss:.4f} (class {entry.loss_class:.4f} mask {entry.loss_mask:.4f} "
        f"dice {entry.loss_dice:.4f})  lr {entry.lr:.2e}  {steps_per_s:.2f} steps/s  ETA {eta}"
    )


def train(opts: TrainOptions, log: Callable[[str], None] | None = None) -> Path | None:
    return Trainer(opts, log).run()
