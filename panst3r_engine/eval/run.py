"""Evaluation driver: run the pipeline on a benchmark scene and score it against its ground truth.

Protocols (PanSt3R, arXiv 2506.21348, evaluation; Panoptic Lifting, arXiv 2212.09802):

- ``input-views``: the job sees every view; its panoptic maps are scored on
  the same views. GT maps are brought into the processed-image frame exactly
  as the photos were (the manifest's ``crop_box``, then nearest-neighbour
  resize to ``processed_size``), so nothing predicted is resampled.
- ``held-out``: every k-th view (indices 0, k, 2k, ... as Panoptic Lifting's
  ``create_validation_set``) or the dataset's own test split is held out; the
  job runs on the rest. A held-out view gets labels by projecting the bundle's
  labelled points (z-buffer, square point footprint, small hole filling) or,
  when the bundle has ``splats.ply``, by rendering the splats. Its GT camera is
  put into the predicted frame by the similarity fitted between predicted and
  GT points at the same pixels (camera centres when there are no points).

Geometry (both): rotation/translation errors after aligning camera centres,
focal error against GT focal scaled to the processed size, accuracy /
completeness / chamfer of the predicted points after the points similarity.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from panst3r_engine.errors import OptionsError
from panst3r_engine.eval.dataset import DatasetError, SceneDataset, gt_pointmaps, project, read_scene
from panst3r_engine.eval.geometry_metrics import apply_similarity, camera_errors, chamfer, focal_error, umeyama
from panst3r_engine.eval.metrics import mean_iou, panoptic_quality_per_view, panoptic_quality_scene

PROTOCOLS = ("input-views", "held-out")
Box = tuple[int, int, int, int]
Similarity = tuple[float, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class EvalOptions:
    """Job options passed through to the pipeline, plus the protocol's own knobs."""

    weights: str = "v2"
    protocol: str = "input-views"
    holdout_every: int = 4
    keyframes: int | None = None
    postprocess: str | None = None
    vocab_embeddings: str | None = None
    device: str = "auto"
    resize: str = "512"
    conf_threshold: float = 3.0
    seed: int = 0
    point_radius: int = 0  # held-out projection: footprint (2r+1)^2 px for sparse points (see zbuffer_labels)
    fill_radius: float = 2.0  # then holes up to this distance take the nearest label
    max_points: int = 200_000  # subsample for the Umeyama fit and chamfer (seeded)
    use_splats: bool = True  # held-out: render the bundle's splats.ply when it has one
    splat_steps: int = 0  # > 0: fit splats after the job (the paper's held-out protocol scores 3DGS renders)
    overwrite: bool = False

    def validate(self) -> EvalOptions:
        if self.protocol not in PROTOCOLS:
            raise OptionsError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if self.holdout_every < 2:
            raise OptionsError("holdout_every must be at least 2 (1 would hold out every view)")
        if self.point_radius < 0 or self.fill_radius < 0 or self.max_points < 3 or self.splat_steps < 0:
            raise OptionsError("point_radius, fill_radius and splat_steps must be >= 0 and max_points >= 3")
        return self


@dataclass
class Prediction:
    """What scoring needs from a job, one entry per input image (input order); ids as in the bundle."""

    pan: list[np.ndarray]  # [H, W] segment ids in the processed frame, 0 = void
    seg_class: np.ndarray  # lookup: segment id -> dataset class id (0 = void or unknown class)
    crop_boxes: list[Box]
    K: np.ndarray  # [V, 3, 3] processed pixels
    cam_to_world: np.ndarray  # [V, 4, 4] predicted frame
    focal: np.ndarray  # [V]
    xyz: np.ndarray  # [N, 3] predicted frame
    view: np.ndarray  # [N] input image index
    pixel: np.ndarray  # [N, 2] (x, y) processed pixels
    segment: np.ndarray  # [N]
    bundle_path: Path | None = None
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- dataset and views


def load_dataset(path: str | os.PathLike) -> tuple[SceneDataset, list[str] | None]:
    """A ``panst3r-synthetic-1`` folder, or a Panoptic Lifting folder with its test stems (if it has splits)."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    if (root / "scene.json").is_file():
        return read_scene(root), None
    if (root / "color").is_dir():
        from panst3r_engine.eval.panoptic_lifting import read_panoptic_lifting

        scene = read_panoptic_lifting(root, split="all")
        splits = json.loads((root / "splits.json").read_text()) if (root / "splits.json").is_file() else {}
        test = {str(s) for s in splits.get("test", splits.get("val", []))}
        return scene, [v.stem for v in scene.views if v.stem in test] or None
    raise DatasetError(f"{root} is neither a scene folder (scene.json) nor a Panoptic Lifting scene (color/)")


def split_views(
    n: int, every: int, test_stems: list[str] | None = None, stems: list[str] | None = None
) -> tuple[list[int], list[int]]:
    """(input, held-out) view indices: the dataset's test stems if given, else indices 0, k, 2k, ..."""
    held = [i for i, s in enumerate(stems or []) if s in set(test_stems)] if test_stems else list(range(0, n, every))
    inputs = [i for i in range(n) if i not in set(held)]
    if len(inputs) < 2 or not held:
        raise DatasetError(f"{n} views with holdout every {every}: need >= 2 input and >= 1 held-out view")
    return inputs, held


def vocabulary_lines(scene: SceneDataset) -> str:
    """The dataset's classes as a vocabulary file (';stuff' marks), so class names match by construction."""
    for c in scene.classes:
        if "#" in c.name or ";" in c.name or not c.name.strip():
            raise DatasetError(f"class name {c.name!r} cannot go into a vocabulary file ('#' and ';' are reserved)")
    return "".join(f"{c.name}{'' if c.isthing else ';stuff'}\n" for c in scene.classes)


def processing_frame(width: int, height: int, resize: str) -> tuple[Box, tuple[int, int]]:
    """(crop_box, processed (W, H)) the pipeline's loader gives a photo of this size (no pixels needed)."""
    if resize == "none":
        return (0, 0, width, height), (width, height)
    import torch

    from panst3r_engine.pipeline.images import resize_512

    out, box = resize_512(torch.zeros(1, height, width))
    return tuple(int(b) for b in box), (int(out.shape[-1]), int(out.shape[-2]))


def source_pixels(box: Box, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Original column and row index of every processed column/row: nearest neighbour of the crop+resize."""
    x0, y0, x1, y1 = box
    w, h = size
    cols = np.floor(x0 + (np.arange(w) + 0.5) * (x1 - x0) / w).astype(np.int64).clip(x0, x1 - 1)
    rows = np.floor(y0 + (np.arange(h) + 0.5) * (y1 - y0) / h).astype(np.int64).clip(y0, y1 - 1)
    return cols, rows


def to_processed(a: np.ndarray, box: Box, size: tuple[int, int]) -> np.ndarray:
    """A GT map ``[H0, W0, ...]`` in the processed frame ``[H, W, ...]`` (nearest neighbour)."""
    cols, rows = source_pixels(box, size)
    return a[rows][:, cols]


def processed_K(K: np.ndarray, box: Box, size: tuple[int, int]) -> np.ndarray:
    """GT intrinsics in processed pixels (index convention: pixel i is centred at i)."""
    x0, y0, x1, y1 = box
    sx, sy = size[0] / (x1 - x0), size[1] / (y1 - y0)
    k = np.asarray(K, np.float64)
    return np.array(
        [
            [k[0, 0] * sx, k[0, 1] * sx, (k[0, 2] + 0.5 - x0) * sx - 0.5],
            [0.0, k[1, 1] * sy, (k[1, 2] + 0.5 - y0) * sy - 0.5],
            [0.0, 0.0, 1.0],
        ]
    )


# --------------------------------------------------------------------------- bundle -> prediction


def prediction_from_bundle(bundle, scene: SceneDataset) -> Prediction:
    """Read what scoring needs; predicted classes map to dataset classes by name (unknown names -> void)."""
    by_name = {c.name: c.id for c in scene.classes}
    cls_name = {c["id"]: c["name"] for c in bundle.manifest["classes"]}
    segs = bundle.manifest["segments"]
    lut = np.zeros(max([s["id"] for s in segs], default=0) + 1, np.int64)
    unknown = sorted({cls_name.get(s["class_id"], "?") for s in segs} - set(by_name))
    for s in segs:
        lut[s["id"]] = by_name.get(cls_name.get(s["class_id"]), 0)
    cams = sorted(bundle.manifest["cameras"], key=lambda c: c["image"])
    pts = bundle.points
    notes = [f"predicted classes not in the dataset (scored as void): {unknown}"] if unknown else []
    return Prediction(
        pan=[bundle.panoptic(s) for s in bundle.stems],
        seg_class=lut,
        crop_boxes=[tuple(im["crop_box"]) for im in bundle.manifest["images"]],
        K=np.array([c["K"] for c in cams], np.float64),
        cam_to_world=np.array([c["cam_to_world"] for c in cams]),
        focal=np.array([c["focal"] for c in cams], np.float64),
        xyz=pts["xyz"].astype(np.float64),
        view=pts["view"].astype(np.int64),
        pixel=pts["pixel"].astype(np.int64),
        segment=pts["segment"].astype(np.int64),
        bundle_path=Path(bundle.path),
        notes=notes,
    )


def classes_of(pred: Prediction, ids: np.ndarray) -> np.ndarray:
    """Dataset class of segment ids (0 for void and ids the lookup does not know)."""
    ids = np.asarray(ids, np.int64)
    ok = (ids >= 0) & (ids < pred.seg_class.size)
    return np.where(ok, pred.seg_class[np.where(ok, ids, 0)], 0)


# --------------------------------------------------------------------------- scoring


def score_panoptic(
    pred_ids: list[np.ndarray],
    pred: Prediction,
    gt_sem: list[np.ndarray],
    gt_inst: list[np.ndarray],
    scene: SceneDataset,
) -> dict:
    """PQ^scene (+ things/stuff), image-wise PQ with per-view values, and mIoU of one set of views.

    ``unfiltered`` repeats PQ^scene without the 0.5 % class filter: the reference
    filter drops every class the prediction (almost) never uses, so a prediction
    that paints everything one correct class can still score a high filtered PQ.
    """
    pred_sem = [classes_of(pred, p) for p in pred_ids]
    pred_inst = [np.asarray(p, np.int64) for p in pred_ids]
    th, st = scene.thing_classes, scene.stuff_classes
    pq = panoptic_quality_scene(pred_sem, pred_inst, gt_sem, gt_inst, th, st)
    per_view = panoptic_quality_per_view(pred_sem, pred_inst, gt_sem, gt_inst, th, st)
    miou = mean_iou(pred_sem, gt_sem, [c.id for c in scene.classes])
    everything = panoptic_quality_scene(pred_sem, pred_inst, gt_sem, gt_inst, th, st, class_filter=None)
    return {
        **pq,
        "pq_image_wise": per_view["pq"],
        "per_view_pq": per_view["per_view_pq"],
        "miou": miou["miou"],
        "iou_per_class": miou["per_class"],
        "unfiltered": {k: everything[k] for k in ("pq", "pq_th", "pq_st", "sq", "rq", "classes_scored")},
    }


def _subsample(n: int, cap: int, seed: int) -> np.ndarray:
    idx = np.arange(n)
    return idx if n <= cap else np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


def correspondences(pred: Prediction, scene: SceneDataset, inputs: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Predicted points and GT world points at the same pixels (via the crop/resize), finite pairs only."""
    gt = np.full(pred.xyz.shape, np.nan)
    for i, v in enumerate(inputs):
        sel = pred.view == i
        if not sel.any() or scene.views[v].depth is None:
            continue
        cols, rows = source_pixels(pred.crop_boxes[i], pred.pan[i].shape[::-1])
        gt[sel] = gt_pointmaps(scene, v)[rows[pred.pixel[sel, 1]], cols[pred.pixel[sel, 0]]]
    ok = np.isfinite(gt).all(1) & np.isfinite(pred.xyz).all(1)
    return pred.xyz[ok], gt[ok]


def gt_cloud(pred: Prediction, scene: SceneDataset, inputs: list[int]) -> np.ndarray:
    """GT points of every processed pixel of the input views (what a complete prediction would cover)."""
    parts = [
        to_processed(gt_pointmaps(scene, v), pred.crop_boxes[i], pred.pan[i].shape[::-1]).reshape(-1, 3)
        for i, v in enumerate(inputs)
        if scene.views[v].depth is not None
    ]
    pts = np.concatenate(parts) if parts else np.zeros((0, 3))
    return pts[np.isfinite(pts).all(1)]


def point_metrics(
    pred: Prediction, scene: SceneDataset, inputs: list[int], opts: EvalOptions
) -> tuple[dict, Similarity | None]:
    """Chamfer-style errors after the Umeyama fit on pixel correspondences; returns the fit too.

    ``pointmap_error_*``: aligned distance between a predicted point and the GT
    point of the same pixel (GT units), the per-pixel counterpart of accuracy.
    """
    p, g = correspondences(pred, scene, inputs)
    if len(p) < 3:
        return {"error": f"only {len(p)} predicted points with GT depth: nothing to align"}, None
    sub = _subsample(len(p), opts.max_points, opts.seed)
    try:
        sim = umeyama(p[sub], g[sub])
    except ValueError as exc:
        return {"error": str(exc)}, None
    cloud = gt_cloud(pred, scene, inputs)
    out = chamfer(
        pred.xyz[_subsample(len(pred.xyz), opts.max_points, opts.seed)],
        cloud[_subsample(len(cloud), opts.max_points, opts.seed + 1)],
        transform=sim,
    )
    residual = np.linalg.norm(apply_similarity(p[sub], *sim) - g[sub], axis=1)
    return {
        **out,
        "pointmap_error_mean": float(residual.mean()),
        "pointmap_error_median": float(np.median(residual)),
        "points": int(len(pred.xyz)),
        "correspondences": int(len(p)),
    }, sim


def transform_pose(c2w: np.ndarray, sim: Similarity) -> np.ndarray:
    """Camera-to-world moved by the similarity ``x -> s R x + t`` (rotation turned, centre mapped)."""
    s, rot, t = sim
    out = np.array(c2w, np.float64)
    out[:3, :3] = rot @ out[:3, :3]
    out[:3, 3] = s * rot @ out[:3, 3] + t
    return out


def inverse_similarity(sim: Similarity) -> Similarity:
    s, rot, t = sim
    return 1.0 / s, rot.T, -rot.T @ t / s


def camera_metrics(pred: Prediction, scene: SceneDataset, inputs: list[int], sim: Similarity | None) -> dict:
    """Pose errors after aligning camera centres (points fit when centres are degenerate), focal errors."""
    gt_c2w = np.stack([scene.views[v].cam_to_world for v in inputs])
    try:
        cams, how = camera_errors(pred.cam_to_world, gt_c2w, align=True), "camera_centres"
    except ValueError as exc:
        if sim is None:
            cams, how = {"error": str(exc)}, None
        else:
            moved = np.stack([transform_pose(c, sim) for c in pred.cam_to_world])
            cams, how = camera_errors(moved, gt_c2w, align=False), "points"
    cams["alignment_from"] = how
    gt_f = [
        math.sqrt(np.prod(np.diag(processed_K(scene.views[v].K, pred.crop_boxes[i], pred.pan[i].shape[::-1]))[:2]))
        for i, v in enumerate(inputs)
    ]
    return {"cameras": cams, "focal": {**focal_error(pred.focal, gt_f), "predicted": pred.focal, "gt": gt_f}}


def _nearest(pix: np.ndarray, z: np.ndarray, ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel of ``n``: the smallest z and its label (inf and -1 where no point falls)."""
    best_z, label = np.full(n, np.inf), np.full(n, -1, np.int64)
    order = np.lexsort((z, pix))
    sel = order[np.unique(pix[order], return_index=True)[1]]
    best_z[pix[sel]], label[pix[sel]] = z[sel], ids[sel]
    return best_z, label


def zbuffer_labels(
    xyz: np.ndarray,
    ids: np.ndarray,
    K: np.ndarray,
    c2w: np.ndarray,
    size: tuple[int, int],
    point_radius: int = 0,
    fill_radius: float = 2.0,
    occlusion_tol: float = 0.05,
) -> np.ndarray:
    """Segment ids ``[H, W]`` seen by a camera: nearest point per pixel, then short-range hole filling.

    Direct hits win, except that the (2r+1)^2 footprint of a point more than
    ``occlusion_tol`` (relative) nearer replaces them: far surfaces seen through
    the gaps between near points are hidden, while neighbouring points of the
    same slanted surface do not bleed. Remaining holes within ``fill_radius``
    pixels take the nearest label; the rest is void (0). Unlabelled points occlude too.
    """
    w, h = size
    uv, z = project(xyz, K, c2w)
    ok = np.isfinite(uv).all(1) & (z > 1e-9)
    col, row, z, ids = np.rint(uv[ok, 0]).astype(np.int64), np.rint(uv[ok, 1]).astype(np.int64), z[ok], ids[ok]
    direct_z, label = np.full(h * w, np.inf), np.full(h * w, -1, np.int64)
    near_z, near_label = direct_z.copy(), label.copy()
    for dy in range(-point_radius, point_radius + 1):
        for dx in range(-point_radius, point_radius + 1):
            c, r = col + dx, row + dy
            inside = (c >= 0) & (c < w) & (r >= 0) & (r < h)
            zz, ll = _nearest((r * w + c)[inside], z[inside], ids[inside], h * w)
            if dx == 0 and dy == 0:
                direct_z, label = zz, ll
                continue
            closer = zz < near_z
            near_z[closer], near_label[closer] = zz[closer], ll[closer]
    hidden = near_z < (1.0 - occlusion_tol) * direct_z  # also every pixel without a direct hit
    label[hidden] = near_label[hidden]
    label = label.reshape(h, w)
    holes = label < 0
    if fill_radius > 0 and holes.any() and not holes.all():
        dist, (ri, ci) = ndimage.distance_transform_edt(holes, return_indices=True)
        fill = holes & (dist <= fill_radius)
        label[fill] = label[ri[fill], ci[fill]]
    return np.where(label < 0, 0, label)


def _splat_labels(pred: Prediction, K: np.ndarray, c2w: np.ndarray, size: tuple[int, int]) -> np.ndarray | None:
    """Segment ids rendered from the bundle's splats, or None when there are none or rendering fails."""
    if pred.bundle_path is None or not (pred.bundle_path / "splats.ply").is_file():
        return None
    try:
        from panst3r_engine.splats.render import render_view

        return render_view(pred.bundle_path, K, c2w, int(size[0]), int(size[1]))[1].astype(np.int64)
    except Exception as exc:  # noqa: BLE001 - optional path: fall back to the points, say why
        pred.notes.append(f"splat rendering failed ({exc}); projected points instead")
        return None


def heldout_labels(
    pred: Prediction, scene: SceneDataset, held: list[int], sim: Similarity, opts: EvalOptions
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], str]:
    """Predicted ids and GT maps of the held-out views, all in the frame the loader would give them."""
    back = inverse_similarity(sim)
    ids, sem, inst, source = [], [], [], "points"
    for v in held:
        view = scene.views[v]
        box, size = processing_frame(view.width, view.height, opts.resize)
        K, c2w = processed_K(view.K, box, size), transform_pose(view.cam_to_world, back)
        rendered = _splat_labels(pred, K, c2w, size) if opts.use_splats else None
        source = "splats" if rendered is not None else source
        ids.append(
            rendered
            if rendered is not None
            else zbuffer_labels(pred.xyz, pred.segment, K, c2w, size, opts.point_radius, opts.fill_radius)
        )
        sem.append(to_processed(view.semantic.astype(np.int64), box, size))
        inst.append(to_processed(view.instance.astype(np.int64), box, size))
    return ids, sem, inst, source


def evaluate_prediction(
    scene: SceneDataset, pred: Prediction, inputs: list[int], held: list[int], opts: EvalOptions
) -> dict:
    """All metrics of one prediction; ``held`` empty means the input-views protocol."""
    points, sim = point_metrics(pred, scene, inputs, opts)
    geometry = {**camera_metrics(pred, scene, inputs, sim), "points": points}
    gt_sem = [
        to_processed(scene.views[v].semantic.astype(np.int64), pred.crop_boxes[i], p.shape[::-1])
        for i, (v, p) in enumerate(zip(inputs, pred.pan))
    ]
    gt_inst = [
        to_processed(scene.views[v].instance.astype(np.int64), pred.crop_boxes[i], p.shape[::-1])
        for i, (v, p) in enumerate(zip(inputs, pred.pan))
    ]
    on_inputs = score_panoptic(pred.pan, pred, gt_sem, gt_inst, scene)
    out = {
        "views": {"input": [scene.views[v].stem for v in inputs], "held_out": [scene.views[v].stem for v in held]},
        "classes": {c.id: {"name": c.name, "isthing": c.isthing} for c in scene.classes},
        "geometry": geometry,
    }
    if not held:
        return {**out, "panoptic": {**on_inputs, "label_source": "panoptic_maps"}}
    if sim is None:
        sim = geometry["cameras"].get("alignment")
    if sim is None:
        raise ValueError("cannot place the held-out cameras: neither points nor camera centres could be aligned")
    ids, sem, inst, source = heldout_labels(pred, scene, held, sim, opts)
    return {
        **out,
        "panoptic": {**score_panoptic(ids, pred, sem, inst, scene), "label_source": source},
        "panoptic_input_views": on_inputs,
    }


# --------------------------------------------------------------------------- the job


@dataclass
class EvalScene:
    """A scene ready to run: its ground truth and which views the job sees (``inputs``) or is scored on."""

    dataset: Path
    scene: SceneDataset
    inputs: list[int]
    held: list[int]


def load_eval_scene(dataset: str | os.PathLike, opts: EvalOptions) -> EvalScene:
    """Read the scene and split its views for the protocol; every scored view needs its ground truth."""
    scene, test_stems = load_dataset(dataset)
    n = len(scene.views)
    if opts.protocol == "held-out":
        inputs, held = split_views(n, opts.holdout_every, test_stems, [v.stem for v in scene.views])
    else:
        inputs, held = list(range(n)), []
    missing = [
        scene.views[v].stem for v in inputs + held if scene.views[v].semantic is None or scene.views[v].instance is None
    ]
    if missing:
        raise DatasetError(f"views without semantic/instance ground truth: {missing[:5]}")
    return EvalScene(Path(dataset), scene, inputs, held)


def write_job_inputs(ev: EvalScene, folder: Path, opts: EvalOptions):
    """The job's photos (the input views' decoded pixels, so GT and photo never disagree: EXIF, JPEG) and its
    class list, written into ``folder``; returns ``(photos, vocab file, JobOptions)`` (splats when asked)."""
    from panst3r_engine.pipeline.options import JobOptions

    photos = [folder / f"{i:05d}.png" for i in range(len(ev.inputs))]
    for path, v in zip(photos, ev.inputs):
        Image.fromarray(ev.scene.views[v].image).save(path)
    vocab = folder / "classes.txt"
    vocab.write_text(vocabulary_lines(ev.scene), encoding="utf-8")
    job = JobOptions(
        weights=opts.weights,
        keyframes=opts.keyframes,
        postprocess=opts.postprocess,
        vocab=str(vocab),
        vocab_embeddings=opts.vocab_embeddings,
        conf_threshold=opts.conf_threshold,
        device=opts.device,
        resize=opts.resize,
        seed=opts.seed,
        overwrite=opts.overwrite,
        splats=opts.splat_steps > 0,
        splat_steps=opts.splat_steps or None,
    )
    return photos, vocab, job


def score_bundle(ev: EvalScene, bundle_path: Path, opts: EvalOptions, timings: dict, started: float) -> dict:
    """The report of one scene from its bundle (wherever the job ran); ``timings``: the job's stages."""
    from panst3r_engine.bundle.read import read_bundle

    bundle = read_bundle(bundle_path)
    pred = prediction_from_bundle(bundle, ev.scene)
    scoring = time.perf_counter()
    report = evaluate_prediction(ev.scene, pred, ev.inputs, ev.held, opts)
    return {
        "dataset": str(ev.dataset),
        "protocol": opts.protocol,
        "bundle": str(bundle_path),
        "options": asdict(opts),
        "postprocess": bundle.manifest["options"].get("postprocess"),
        **report,
        "notes": pred.notes,
        "timings": {**timings, "scoring": time.perf_counter() - scoring, "total": time.perf_counter() - started},
    }


def run_evaluation(dataset: str | os.PathLike, out_dir: str | os.PathLike, opts: EvalOptions, progress=None) -> dict:
    """Run the pipeline on the dataset's (input) photos into ``out_dir/bundle`` and score it; returns the report."""
    from panst3r_engine.pipeline.run import run_job

    opts = opts.validate()
    started = time.perf_counter()
    ev = load_eval_scene(dataset, opts)
    with tempfile.TemporaryDirectory(prefix="panst3r-eval-") as tmp:
        photos, _, job = write_job_inputs(ev, Path(tmp), opts)
        result = run_job(photos, Path(out_dir) / "bundle", job, progress)
    return score_bundle(ev, result.bundle, opts, result.timings, started)
