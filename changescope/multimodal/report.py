"""``OUT/report.html``: the offline single-file report of ``changescope multimodal evaluate OUT``.

Built by :func:`build_report` from what ``evaluate`` wrote (``evaluation.json``, ``sweep.json``, the maps under
``maps/``) and, when present, the feature explorer's output (``OUT/explore/`` or the folder given). Every image is
a base64 PNG ``data:`` URI (the helpers of :mod:`changescope.report.images`), the CSS is inline and the only script
records on ``<body data-images-loaded="OK/TOTAL">`` how many images decoded (for headless checks). Sections:

- **summary**: model, pixels, ROC AUC, best F1, and the DFC25 4-class mIoU with the per-class IoU (class head);
- **threshold sweep**: the best threshold per metric, the ROC curve and the metrics against the threshold;
- **baselines**: the model's ROC AUC beside each training-free baseline on the same pixels;
- **full-image overview**: per image (at most ``max_images``) the pre image, the post image, the truth, the change
  map and, with a class head, the damage class map;
- **patch-pair gallery**: the images are cut into ``patch`` px squares; the ``top`` squares of highest mean score
  (top-scoring) and the ``top`` squares with more than 5 % changed truth (a changed
  window's rule) and the lowest mean score (missed), each as
  pre / post / truth / score crops with ``patch`` px of context around the outlined square;
- **feature explorer**: the ``explore_*.png`` figures.

The score maps share one colour scale (2nd-98th percentile of all scored pixels, ``inferno``). Optical images are
shown with a 2-98 % stretch per band, SAR images in grey with the same stretch.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from changescope.errors import ParameterError
from changescope.io.writers import atomic_path
from changescope.multimodal.evaluate import read_evaluation
from changescope.multimodal.pairs import Sample, read_pair_arrays
from changescope.report.figures import colorbar_figure, curve_figure
from changescope.report.images import block_mean, bytes_uri, figure_uri, outline, png_uri, stretch_limits, to_uint8
from changescope.types import PathLike

__all__ = ["REPORT_FILE", "build_report"]

REPORT_FILE = "report.html"
CMAP = "inferno"
MISSED_MIN_CHANGED = 0.05
THUMB = 96
_CSS = """body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1240px;padding:0 16px 40px;color:#222;
background:#fafafa}h2{border-bottom:2px solid #ccd;padding-bottom:4px;margin-top:30px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px}
th{background:#eef}.figs{display:flex;flex-wrap:wrap;gap:12px}.figs img{max-width:600px}
.row{display:flex;gap:6px;align-items:flex-start;margin:6px 0}.row figure{margin:0}
.row img{width:220px;image-rendering:pixelated}figcaption{font-size:12px;color:#555;text-align:center}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(410px,1fr));gap:10px}
.card{background:#fff;border:1px solid #ddd;padding:6px}.card img{width:96px;image-rendering:pixelated}
.card p{font-size:12px;margin:4px 0 0}.wide img{max-width:100%}"""
_SCRIPT = (
    "<script>window.addEventListener('load',function(){var a=document.images,n=0;"
    "for(var i=0;i<a.length;i++){if(a[i].complete&&a[i].naturalWidth>0){n++;}}"
    "document.body.setAttribute('data-images-loaded',n+'/'+a.length);});</script>"
)
_CLASS_RGB = np.array([[0, 0, 0], [46, 160, 67], [255, 176, 0], [220, 30, 30]], dtype=np.uint8)


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{_esc(alt)}">'


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else _esc(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _read_map(path: str) -> NDArray[np.float32]:
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    from changescope.io.raster import open_raster

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with open_raster(Path(path)) as src:
            band: NDArray[np.float32] = src.read(1).astype(np.float32)
            nodata = src.nodata
    if nodata is not None and math.isfinite(nodata):
        band[band == np.float32(nodata)] = np.nan
    return band


class _Image:
    """One evaluated image: its pixels, truth and maps, and how to draw them."""

    def __init__(self, rec: dict[str, Any], vmin: float, vmax: float) -> None:
        self.rec = rec
        sample = Sample(
            id=rec["id"], event=rec["event"], pre=Path(rec["pre"]), post=Path(rec["post"]),
            target=None if rec["target"] is None else Path(rec["target"]), split=rec.get("split"),
            pre_modality=rec["pre_modality"], post_modality=rec["post_modality"], target_kind=rec["target_kind"],
            zero_nodata=bool(rec["zero_nodata"]),
        )  # fmt: skip
        pair = read_pair_arrays(sample)
        if pair.truth is None:
            raise ParameterError(f"sample {rec['id']!r} of the evaluation has no truth; evaluate it again")
        self.sides = [(pair.pre.image, pair.pre.modality), (pair.post.image, pair.post.modality)]
        self.valid, self.truth = pair.valid, pair.truth
        self.score = _read_map(rec["change_map"])
        self.classes = _read_map(rec["class_map"]) if rec.get("class_map") else None
        self.vmin, self.vmax = vmin, vmax
        self.limits = [stretch_limits(self._rgb(img)[:, self.valid][:, None]) for img, _ in self.sides]

    @staticmethod
    def _rgb(image: NDArray[np.float32]) -> NDArray[np.float32]:
        return image if image.shape[0] == 3 else np.repeat(image[:1], 3, axis=0)

    def side(self, i: int, box: tuple[slice, slice] | None = None, factor: int = 1) -> NDArray[np.uint8]:
        img = self._rgb(self.sides[i][0])
        img = img if box is None else img[:, box[0], box[1]]
        return to_uint8(block_mean(img, factor), self.limits[i])

    def truth_rgb(self, box: tuple[slice, slice] | None = None, factor: int = 1) -> NDArray[np.uint8]:
        if self.truth.classes is not None:
            rgb = _CLASS_RGB[self.truth.classes]
        else:
            rgb = np.where(self.truth.damage[..., None], 255, 0).astype(np.uint8).repeat(3, axis=2)
        rgb = rgb if box is None else rgb[box[0], box[1]]
        return np.ascontiguousarray(rgb[::factor, ::factor])

    def score_rgb(self, box: tuple[slice, slice] | None = None, factor: int = 1) -> NDArray[np.uint8]:
        from matplotlib import colormaps

        s = self.score if box is None else self.score[box[0], box[1]]
        s = block_mean(s, factor)
        scaled = np.clip((s - self.vmin) / max(self.vmax - self.vmin, 1e-9), 0, 1)
        rgb: NDArray[np.uint8] = (colormaps[CMAP](np.nan_to_num(scaled))[..., :3] * 255 + 0.5).astype(np.uint8)
        rgb[~np.isfinite(s)] = 0
        return rgb

    def class_rgb(self, factor: int = 1) -> NDArray[np.uint8]:
        c = self.classes if self.classes is not None else np.zeros_like(self.score)
        idx = np.where(np.isfinite(c), c, 0).astype(np.int64)[::factor, ::factor]
        return np.ascontiguousarray(_CLASS_RGB[np.clip(idx, 0, 3)])


def _sweep_section(sweep: dict[str, Any], ev: dict[str, Any]) -> str:
    from matplotlib.figure import Figure

    curves = sweep["curves"]
    rows = [[name, b["threshold"], b["value"]] for name, b in sweep["best"].items()]
    fig = Figure(figsize=(5.6, 3.4), layout="constrained")
    ax = fig.add_subplot()
    for name in ("accuracy", "balanced_accuracy", "precision", "recall", "f1"):
        ax.plot(curves["thresholds"][1:], curves[name][1:], linewidth=1.4, label=name.replace("_", " "))
    best = sweep["best"]["f1"]["threshold"]
    ax.axvline(best, color="#888", linestyle=":", linewidth=1)
    ax.set(xlabel="threshold (score >= threshold = changed)", ylabel="metric", title="metrics vs threshold")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, frameon=False)
    roc = curve_figure(curves["fpr"], curves["tpr"], "roc", sweep["auc"])
    figs = f'<div class="figs">{_img(figure_uri(roc), "ROC")}{_img(figure_uri(fig), "metrics vs threshold")}</div>'
    text = (
        f"<p>{ev['pixels']} pixels ({ev['changed']} changed) of {len(ev['samples'])} image(s); "
        f"{sweep['n_thresholds']} thresholds swept.</p>"
    )
    return (
        f'<section id="sweep"><h2>Threshold sweep</h2>{text}'
        f"{_table(['metric', 'best threshold', 'value'], rows)}{figs}</section>"
    )


def _summary(ev: dict[str, Any]) -> str:
    from changescope.multimodal.layout import CLASSES

    scored = "held-out pixels" if ev["settings"].get("holdout") else "all pixels"
    rows = [["model", ev["model"]], [f"ROC AUC ({scored})", ev["auc"]], ["best F1", ev["best"]["f1"]["value"]]]
    rows += [["window / stride", f"{ev['settings']['window']} / {ev['settings']['stride']} px"]]
    out = f'<section id="summary"><h2>Summary</h2>{_table(["", "value"], rows)}'
    miou = ev.get("miou")
    if miou:
        cells = [[name, iou] for name, iou in zip(CLASSES, miou["iou"], strict=True)]
        out += "<h3>DFC25 4-class mIoU: " + _fmt(float(miou["miou"])) + "</h3>" + _table(["class", "IoU"], cells)
    elif ev.get("class_head"):
        out += "<p>The model has a damage class head; the truth has no BRIGHT classes, so no mIoU.</p>"
    return out + "</section>"


def _baselines(ev: dict[str, Any]) -> str:
    if not ev.get("baselines"):
        return ""
    rows = [["trained pseudo-siamese", ev["auc"]]] + [[b["name"], b["auc"]] for b in ev["baselines"]]
    return f'<section id="baselines"><h2>Baselines</h2>{_table(["method", "ROC AUC"], rows)}</section>'


def _overview(images: list[_Image], max_px: int) -> str:
    parts = []
    for im in images:
        h, w = im.score.shape
        f = max(1, math.ceil(max(h, w) / max_px))
        (_, m0), (_, m1) = im.sides
        cards = [
            (im.side(0, factor=f), f"pre ({m0})"),
            (im.side(1, factor=f), f"post ({m1})"),
            (im.truth_rgb(factor=f), "truth"),
            (im.score_rgb(factor=f), "change score"),
        ]
        if im.classes is not None:
            cards.append((im.class_rgb(f), "damage classes"))
        figs = "".join(f"<figure>{_img(png_uri(a), c)}<figcaption>{c}</figcaption></figure>" for a, c in cards)
        auc = im.rec.get("auc")
        parts.append(f"<h3>{_esc(im.rec['id'])} (AUC {_fmt(auc)})</h3><div class='row'>{figs}</div>")
    bar = figure_uri(colorbar_figure(images[0].vmin, images[0].vmax, CMAP, "change score (1 - cos)"))
    legend = "truth and classes: black background, green intact, amber damaged, red destroyed (change masks: white)"
    return (
        f'<section id="overview"><h2>Full-image overview</h2><p>{legend}</p>'
        f'<div class="wide">{_img(bar, "score scale")}</div>{"".join(parts)}</section>'
    )


def _patches(images: list[_Image], patch: int) -> list[tuple[float, float, int, int, int]]:
    """``(mean score, changed share, image, y, x)`` of every fully valid ``patch`` px square."""
    out = []
    for i, im in enumerate(images):
        h, w = im.score.shape
        for y in range(0, h - patch + 1, patch):
            for x in range(0, w - patch + 1, patch):
                ok = im.valid[y : y + patch, x : x + patch] & im.truth.valid[y : y + patch, x : x + patch]
                if ok.mean() < 0.8:
                    continue
                s = im.score[y : y + patch, x : x + patch][ok]
                changed = float(im.truth.damage[y : y + patch, x : x + patch][ok].mean())
                out.append((float(np.nanmean(s)), changed, i, y, x))
    return out


def _crop(im: _Image, y: int, x: int, patch: int) -> list[NDArray[np.uint8]]:
    h, w = im.score.shape
    box = (slice(max(0, y - patch), min(h, y + 2 * patch)), slice(max(0, x - patch), min(w, x + 2 * patch)))
    crops = [im.side(0, box), im.side(1, box), im.truth_rgb(box), im.score_rgb(box)]
    oy, ox = y - box[0].start, x - box[1].start
    out = []
    for c in crops:
        c = np.ascontiguousarray(c)
        outline(c, oy, ox, oy + patch, ox + patch, (0, 255, 255))
        k = max(1, THUMB // max(c.shape[:2]))
        out.append(np.ascontiguousarray(c.repeat(k, axis=0).repeat(k, axis=1)))
    return out


def _gallery(images: list[_Image], patch: int, top: int) -> str:
    cells = _patches(images, patch)
    if not cells:
        return ""
    by_score = sorted(cells, key=lambda c: (-c[0], c[2], c[3], c[4]))[:top]
    missed = sorted((c for c in cells if c[1] > MISSED_MIN_CHANGED), key=lambda c: (c[0], c[2], c[3], c[4]))[:top]
    html_parts = []
    for title, chosen in (("Top-scoring patches", by_score), ("Missed changes (lowest scores)", missed)):
        cards = []
        for score, changed, i, y, x in chosen:
            im = images[i]
            (_, m0), (_, m1) = im.sides
            names = (f"pre ({m0})", f"post ({m1})", "truth", "score")
            imgs = "".join(_img(png_uri(c), n) for c, n in zip(_crop(im, y, x, patch), names, strict=True))
            text = f"{_esc(im.rec['id'])} y {y} x {x}: mean score {score:.3f}, changed {changed:.0%}"
            cards.append(f'<div class="card">{imgs}<p>{text}</p></div>')
        body = "".join(cards) or "<p>none</p>"
        html_parts.append(f'<h3>{title}</h3><div class="cards">{body}</div>')
    note = (
        f"<p>{patch} px squares (outlined) with {patch} px of context; crops left to right: pre, post, truth, "
        f"score. Missed: over {MISSED_MIN_CHANGED:.0%} changed truth, lowest mean score.</p>"
    )
    return f'<section id="gallery"><h2>Patch-pair gallery</h2>{note}{"".join(html_parts)}</section>'


def _explore(folder: Path | None) -> str:
    if folder is None or not folder.is_dir():
        return ""
    figs = sorted(folder.glob("explore_*.png"))
    if not figs:
        return ""
    meta = folder / "explore.json"
    n = json.loads(meta.read_text(encoding="utf-8")).get("n") if meta.is_file() else None
    text = f"<p>{n} indexed windows, optical and SAR projections mapped together.</p>" if n else ""
    imgs = "".join(f'<div class="wide">{_img(bytes_uri(p.read_bytes()), p.stem)}</div>' for p in figs)
    return f'<section id="explore"><h2>Feature explorer</h2>{text}{imgs}</section>'


def build_report(
    out: PathLike,
    *,
    explore_dir: PathLike | None = None,
    max_images: int = 6,
    max_px: int = 220,
    patch: int = 32,
    top: int = 8,
) -> Path:
    """Write ``OUT/report.html`` from an evaluation folder (module docstring).

    Args:
        out: The folder of ``changescope multimodal evaluate``.
        explore_dir: Folder of ``changescope multimodal explore`` (default ``OUT/explore`` when present).
        max_images: Most images in the overview (the gallery uses them all).
        max_px: Longest side of an overview image.
        patch: Side of the gallery squares in pixels.
        top: Patches per gallery row.

    Returns:
        The report's path.

    Raises:
        ParameterError: No evaluation in ``out``, or bad sizes.
    """
    for name, value, least in (("max_images", max_images, 1), ("max_px", max_px, 16), ("patch", patch, 4)):
        if value < least:
            raise ParameterError(f"{name}={value!r} must be at least {least}")
    root = Path(out)
    ev = read_evaluation(root)
    sweep_path = root / "sweep.json"
    if not sweep_path.is_file():
        raise ParameterError(f"{str(sweep_path)!r} does not exist; run `changescope multimodal evaluate` again")
    sweep = json.loads(sweep_path.read_text(encoding="utf-8"))
    scores = np.concatenate([_read_map(r["change_map"]).ravel() for r in ev["samples"]])
    lo, hi = np.nanpercentile(scores, [2, 98]) if np.isfinite(scores).any() else (0.0, 2.0)
    images = [_Image(rec, float(lo), float(max(hi, lo + 1e-6))) for rec in ev["samples"]]
    explore = Path(explore_dir) if explore_dir is not None else root / "explore"
    body = "".join(
        [
            _summary(ev),
            _sweep_section(sweep, ev),
            _baselines(ev),
            _overview(images[:max_images], max_px),
            _gallery(images, patch, top),
            _explore(explore),
        ]
    )
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>multimodal change detection: {_esc(root.name)}</title><style>{_CSS}</style></head><body>"
        f"<h1>Optical / SAR change detection: {_esc(root.name)}</h1>{body}{_SCRIPT}</body></html>\n"
    )
    path = root / REPORT_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
