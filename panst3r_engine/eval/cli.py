"""``eval run DATASET`` and ``eval make-scene OUT``: the command-line face of :mod:`panst3r_engine.eval.run`.

``add_eval_commands(subparsers)`` adds the ``eval`` group to the engine's CLI;
``main(argv)`` runs it on its own (``python -m panst3r_engine.eval.cli``).
Exit codes: 0 done, 2 an error (one line on stderr; with several scenes: any scene failed, the report still
lists every scene), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import TextIO

import numpy as np

from panst3r_engine.pipeline.progress import Progress

METHODS = ("standard_v1", "standard_v2", "qubo")


def add_eval_commands(subparsers) -> argparse.ArgumentParser:
    """Add ``eval`` (with ``run`` and ``make-scene``) to a top-level subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "eval",
        help="benchmark: score the pipeline on a scene with ground truth",
        description="Score the pipeline against ground truth (PQ^scene, mIoU, cameras, points).",
    )
    sub = p.add_subparsers(dest="eval_command", required=True)
    _add_run(sub)
    _add_make_scene(sub)
    return p


def _add_run(sub) -> None:
    r = sub.add_parser(
        "run",
        help="run the pipeline on a scene folder and score it",
        description="DATASET: a panst3r-synthetic-1 scene folder (scene.json) or a Panoptic Lifting "
        "scene folder (color/, pose/, rs_semantics/, rs_instance/, splits.json). Several scenes: each bundle "
        "goes to OUT/<scene folder name>/bundle and one report lists them all (--cluster runs them at once).",
    )
    r.add_argument("dataset", nargs="+", help="scene folder(s)")
    r.add_argument("--weights", required=True, help="v1, v2, a registry id, or a checkpoint path")
    r.add_argument(
        "--protocol",
        choices=["input-views", "held-out"],
        default="input-views",
        help="score the photos the job saw, or views held out of the job (default input-views)",
    )
    r.add_argument(
        "--holdout-every",
        type=int,
        default=4,
        help="held-out: views 0, K, 2K, ... are held out (default 4; a Panoptic Lifting scene uses "
        "its splits.json test list instead)",
    )
    r.add_argument("--keyframes", type=int, default=None, help="number of keyframes (default: all, at most 50)")
    r.add_argument("--postprocess", choices=METHODS, default=None, help="default: the checkpoint's own")
    r.add_argument(
        "--vocab-embeddings",
        default=None,
        help="an .npz of class text embeddings for the dataset's class names, or 'random' (smoke tests); "
        "default: those a checkpoint written by train stores when it holds every class, else computed/cached "
        "SigLIP embeddings",
    )
    r.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (with --cluster: the workers')")
    r.add_argument(
        "--resize",
        choices=["512", "none"],
        default="512",
        help="512: the official loader (crop + resize); none: photos as they are (multiples of 16)",
    )
    r.add_argument("--conf-threshold", type=float, default=3.0, help="keep points with confidence >= T (default 3)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument(
        "--point-radius",
        type=int,
        default=0,
        help="held-out projection: point footprint radius in px (default 0; raise it for sparse points)",
    )
    r.add_argument("--fill-radius", type=float, default=2.0, help="held-out projection: hole filling distance (px)")
    r.add_argument(
        "--max-points",
        type=int,
        default=200_000,
        help="points used for the alignment and chamfer (seeded subsample; default 200000)",
    )
    r.add_argument(
        "--splat-steps",
        type=int,
        default=0,
        help="fit Gaussian splats for N steps after the job; held-out views are then rendered from them "
        "(the paper scores 3DGS renders); default 0: project the points",
    )
    r.add_argument("--no-splats", action="store_true", help="held-out: project points even if the bundle has splats")
    r.add_argument("--out", default=None, help="output folder for bundle/ and eval.json (default ./eval_<dataset>)")
    r.add_argument("--json", default=None, help="where to write the numbers (default <out>/eval.json)")
    r.add_argument("--overwrite", action="store_true", help="replace <out>/bundle if it exists")
    r.add_argument(
        "--cluster",
        default=None,
        metavar="ray|auto|ray://HOST:PORT",
        help="run the scenes at the same time on Ray workers, one warm model per GPU (as serve --cluster); "
        "needs panst3r-engine[cluster]",
    )
    r.add_argument(
        "--cluster-cpu-workers",
        type=int,
        default=0,
        metavar="N",
        help="with --cluster: this many CPU workers instead of one per GPU",
    )
    r.set_defaults(func=cmd_eval_run)


def _add_make_scene(sub) -> None:
    from panst3r_engine.eval.synthetic import add_scene_arguments

    add_scene_arguments(
        sub.add_parser("make-scene", help="render a seeded synthetic room with ground truth (needs bpy)")
    )


def _fmt(x, pct: bool = True) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{100 * x:.1f}" if pct else f"{x:.4g}"


def print_report(report: dict, stream: TextIO | None = None) -> None:
    """The headline numbers as a plain table (PQ-like scores in percent)."""
    w = (stream or sys.stdout).write
    pan = report["panoptic"]
    w(
        f"\nprotocol: {report['protocol']}   post-processing: {report.get('postprocess')}   "
        f"scored views: {len(report['views']['held_out'] or report['views']['input'])} "
        f"({pan.get('label_source')})\n"
    )
    w(f"{'PQ':>7}{'PQ_th':>7}{'PQ_st':>7}{'SQ':>7}{'RQ':>7}{'mIoU':>7}{'PQ_img':>8}\n")
    w(
        "".join(f"{_fmt(pan.get(k)):>7}" for k in ("pq", "pq_th", "pq_st", "sq", "rq", "miou"))
        + f"{_fmt(pan.get('pq_image_wise')):>8}\n"
    )
    w("per-view PQ: " + " ".join(_fmt(v) for v in pan.get("per_view_pq", [])) + "\n")
    w(
        f"PQ without the 0.5 % class filter: {_fmt(pan.get('unfiltered', {}).get('pq'))}   "
        f"classes scored: {len(pan.get('classes_scored', []))}, dropped: {len(pan.get('classes_dropped', []))}\n"
    )
    if "panoptic_input_views" in report:
        w(
            f"input views: PQ {_fmt(report['panoptic_input_views']['pq'])}   "
            f"mIoU {_fmt(report['panoptic_input_views']['miou'])}\n"
        )
    names = report["classes"]
    w(f"\n{'class':<20}{'PQ':>7}{'SQ':>7}{'RQ':>7}{'TP':>5}{'FP':>5}{'FN':>5}\n")
    for cid, c in sorted(pan.get("per_class", {}).items(), key=lambda kv: int(kv[0])):
        w(
            f"{names[cid]['name'][:19]:<20}{_fmt(c['pq']):>7}{_fmt(c['sq']):>7}{_fmt(c['rq']):>7}"
            f"{c['tp']:>5}{c['fp']:>5}{c['fn']:>5}\n"
        )
    geo = report["geometry"]
    cams, pts = geo["cameras"], geo["points"]
    w(
        f"\ncameras ({cams.get('alignment_from')}): rotation {_fmt(cams.get('rot_err_deg_mean'), False)} deg mean, "
        f"translation {_fmt(cams.get('trans_err_mean'), False)} mean (GT units); "
        f"focal error {_fmt(geo['focal'].get('mean'))} % mean\n"
    )
    w(
        f"points: accuracy {_fmt(pts.get('accuracy'), False)}  completeness {_fmt(pts.get('completeness'), False)}  "
        f"chamfer {_fmt(pts.get('chamfer'), False)} (GT units, {pts.get('points', 0)} points)\n"
    )
    for note in report.get("notes", []):
        w(f"note: {note}\n")


def cmd_eval_run(args: argparse.Namespace) -> int:
    """Run and score; numbers to ``--json`` and a table on stdout."""
    from panst3r_engine.errors import OptionsError
    from panst3r_engine.eval.batch import ClusterOptions, combined_report, evaluate_scenes, scene_out_dirs
    from panst3r_engine.eval.dataset import DatasetError
    from panst3r_engine.eval.run import EvalOptions, run_evaluation
    from panst3r_engine.pipeline.progress import TextProgress

    datasets = [Path(d) for d in args.dataset]
    for dataset in datasets:
        if not dataset.is_dir():
            raise DatasetError(
                f"dataset folder {dataset} does not exist"
                if not dataset.exists()
                else f"{dataset} is not a folder (expected a scene folder)"
            )
    if args.cluster_cpu_workers and not args.cluster:
        raise OptionsError("--cluster-cpu-workers needs --cluster (ray, auto or ray://HOST:PORT)")
    default_out = f"eval_{datasets[0].resolve().name}" if len(datasets) == 1 else "eval_scenes"
    out = Path(args.out) if args.out else Path(default_out)
    opts = EvalOptions(
        weights=args.weights,
        protocol=args.protocol,
        holdout_every=args.holdout_every,
        keyframes=args.keyframes,
        postprocess=args.postprocess,
        vocab_embeddings=args.vocab_embeddings,
        device=args.device,
        resize=args.resize,
        conf_threshold=args.conf_threshold,
        seed=args.seed,
        point_radius=args.point_radius,
        fill_radius=args.fill_radius,
        use_splats=not args.no_splats,
        max_points=args.max_points,
        splat_steps=args.splat_steps,
        overwrite=args.overwrite,
    )
    if len(datasets) == 1 and not args.cluster:
        report = run_evaluation(datasets[0], out, opts, TextProgress(stream=sys.stderr))
        return _finish_one(report, args.json or out / "eval.json")
    cluster = ClusterOptions(args.cluster, args.cluster_cpu_workers) if args.cluster else None
    names, out_dirs = [d.resolve().name for d in datasets], scene_out_dirs(datasets, out)
    try:
        results = evaluate_scenes(
            datasets, out_dirs, opts, cluster, lambda index: SceneProgress(names[index], stream=sys.stderr)
        )
    except KeyboardInterrupt:
        kept = [str(d / "bundle") for d in out_dirs if (d / "bundle").is_dir()]
        print(
            "\ncancelled; no report was written" + (f"; finished bundles kept: {', '.join(kept)}" if kept else ""),
            file=sys.stderr,
        )
        return 130
    if len(datasets) == 1:
        if results[0].error is not None:
            raise results[0].error
        return _finish_one(results[0].report, args.json or out / "eval.json")
    report = combined_report(results)
    path = write_report(report, args.json or out / "eval.json")
    print_scenes(to_json(report))
    print(f"\nbundles: {out}/<scene>/bundle\nnumbers: {path}")
    if report["failed"]:
        print(f"\nerror: {report['failed']} of {len(results)} scenes failed (see above and {path})", file=sys.stderr)
        return 2
    return 0


def _finish_one(report: dict, json_path) -> int:
    path = write_report(report, json_path)
    print_report(to_json(report))
    print(f"\nbundle: {report['bundle']}\nnumbers: {path}")
    return 0


class SceneProgress(Progress):
    """One plain line when a stage starts and one when it ends, prefixed with the scene (several scenes may
    run at once, so redrawn bars would mix)."""

    def __init__(self, name: str, stream: TextIO | None = None, **kw) -> None:
        super().__init__(**kw)
        self.name, self.stream, self._shown = name, stream or sys.stderr, None

    def show(self) -> None:
        key = (self.stage, self.fraction >= 1.0)
        if key == self._shown:
            return
        self._shown = key
        state = "done" if key[1] else "started"
        self.stream.write(f"[{self.name}] {self.stage} {state} {self.message[:40]}".rstrip() + "\n")
        self.stream.flush()


def print_scenes(report: dict, stream: TextIO | None = None) -> None:
    """One line per scene (PQ-like scores in percent), then the means over the scenes that finished."""
    w = (stream or sys.stdout).write
    w(f"\n{'scene':<24}{'PQ':>7}{'PQ_th':>7}{'PQ_st':>7}{'mIoU':>7}{'rot deg':>9}{'chamfer':>9}  state\n")
    for scene in report["scenes"]:
        name = Path(scene["dataset"]).name[:23]
        if scene["state"] != "done":
            w(f"{name:<24}{'':>46}  failed: {scene['error']['message']}\n")
            continue
        pan, geo = scene["panoptic"], scene["geometry"]
        w(
            f"{name:<24}"
            + "".join(f"{_fmt(pan.get(k)):>7}" for k in ("pq", "pq_th", "pq_st", "miou"))
            + f"{_fmt(geo['cameras'].get('rot_err_deg_mean'), False):>9}"
            + f"{_fmt(geo['points'].get('chamfer'), False):>9}  done\n"
        )
    mean = report["mean"]
    w(
        f"{'mean (' + str(report['done']) + ' scenes)':<24}"
        + "".join(f"{_fmt(mean.get(k)):>7}" for k in ("pq", "pq_th", "pq_st", "miou"))
        + "\n"
    )


def to_json(value):
    """Plain JSON values: numpy to Python, NaN/inf to null, tuples to lists, dict keys to strings."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_report(report: dict, path: str | os.PathLike) -> Path:
    """Write the report as strict JSON (no NaN), creating the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(report), indent=1, allow_nan=False), encoding="utf-8")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m panst3r_engine")
    add_eval_commands(parser.add_subparsers(dest="command", required=True))
    return parser
