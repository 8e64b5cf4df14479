"""End to end on generated BRIGHT trees (flat and DFC25): index, tiny training with the auto class head, predict,
evaluate (sweep, baselines, 4-class mIoU), explore and the report; results recomputed independently."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

from changescope.multimodal.index import PatchDataset
from changescope.multimodal.layout import DFC25_DIR, SPLIT_FILES, bright_paths, read_bright
from changescope.multimodal.model import load_model
from changescope.multimodal.pairs import normalise_pair, read_pair_arrays
from changescope.multimodal.predict import change_map
from changescope.multimodal.synthetic import write_bright

from .cli_helpers import ok, train_tiny

pytestmark = pytest.mark.slow


def _read(path: str | Path) -> tuple[np.ndarray, float | None, object, object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return src.read(1), src.nodata, src.crs, src.transform


def _miou(preds: list[np.ndarray], targets: list[np.ndarray]) -> tuple[float, list[float]]:
    """Per-class IoU from pixel counts, written out independently of the package."""
    ious = []
    for c in range(4):
        tp = sum(int(((p == c) & (t == c)).sum()) for p, t in zip(preds, targets, strict=True))
        union = sum(int(((p == c) | (t == c)).sum()) for p, t in zip(preds, targets, strict=True))
        ious.append(tp / union if union else float("nan"))
    return float(np.nanmean(ious)), ious


def _check_evaluation(out: Path, samples: list, model: Path) -> dict:
    ev = json.loads((out / "evaluation.json").read_text())
    assert [s["id"] for s in ev["samples"]] == [s.id for s in samples]
    assert ev["class_head"] and load_model(model)[0].config.n_classes == 4  # resolved from the BRIGHT classes
    scores, labels, preds, targets = [], [], [], []
    for rec, sample in zip(ev["samples"], samples, strict=True):
        pair = read_pair_arrays(sample)
        score, _, crs, transform = _read(rec["change_map"])
        classes, nodata, ccrs, ctransform = _read(rec["class_map"])
        _, _, pre_crs, pre_transform = _read(sample.pre)
        assert crs == ccrs == pre_crs and transform == ctransform == pre_transform
        assert nodata == 255 and set(np.unique(classes)) <= {0, 1, 2, 3, 255}
        assert ((classes == 255) == ~pair.valid).all()
        keep = pair.valid & pair.truth.valid
        scores.append(score[keep])
        labels.append(pair.truth.damage[keep])
        preds.append(np.where(classes == 255, 0, classes))
        targets.append(pair.truth.classes)
    auc = roc_auc_score(np.concatenate(labels), np.concatenate(scores))
    assert ev["auc"] == pytest.approx(auc, abs=1e-9)
    assert ev["pixels"] == sum(len(s) for s in scores)
    miou, ious = _miou(preds, targets)
    assert ev["miou"]["miou"] == pytest.approx(miou, abs=1e-12)
    assert [v if v is not None else float("nan") for v in ev["miou"]["iou"]] == pytest.approx(ious, nan_ok=True)
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["auc"] == ev["auc"] and sweep["n_positive"] == int(np.concatenate(labels).sum())
    return ev


@pytest.fixture(scope="module")
def flat(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    base = tmp_path_factory.mktemp("flat")
    root = base / "bright"
    write_bright(root, n=4, size=64, seed=31, events=("la_palma-volcano", "turkey-earthquake"))
    return root, base, train_tiny(root, base, batches_per_epoch=3)[1]


def test_flat_tree_evaluate_explore_report(flat: tuple[Path, Path, Path]) -> None:
    root, base, model = flat
    out = base / "eval"
    text = ok(["evaluate", "--model", str(model), "--root", str(root), "--out", str(out), "--stride", "16"])
    ev = _check_evaluation(out, read_bright(root), model)
    assert f"{ev['auc']:.4f}" in text and f"mIoU {ev['miou']['miou']:.4f}" in text
    names = [b["name"] for b in ev["baselines"]]
    assert names == ["log-ratio", "CVA (rank)", "structure consistency"]
    assert all(0.0 <= b["auc"] <= 1.0 for b in ev["baselines"])

    explore = out / "explore"
    index = base / "index.parquet"
    args = ["--model", str(model), "--index", str(index), "--out", str(explore), "--max-points", "40"]
    ok(["explore", *args, "--method", "pca,tsne", "--split", "val", "--seed", "2"])
    data = json.loads((explore / "explore.json").read_text())
    assert data["n"] == 40 and set(data["coordinates"]) == {"pca", "tsne"}
    ds = PatchDataset(index, split="val")
    rows = [p["row"] for p in data["points"]]
    assert [p["label"] for p in data["points"]] == ds.labels[rows].tolist()
    from changescope.multimodal.explore import projections

    opt, sar, score = projections(load_model(model)[0], ds, rows)
    np.testing.assert_allclose([p["score"] for p in data["points"]], score, atol=1e-5)
    want = PCA(n_components=2, random_state=2).fit_transform(np.concatenate([opt, sar]).astype(np.float64))
    got = np.asarray(data["coordinates"]["pca"]["optical"] + data["coordinates"]["pca"]["sar"])
    np.testing.assert_allclose(np.abs(got), np.abs(want), atol=1e-4)  # PCA axes are defined up to sign
    for method in ("pca", "tsne"):
        assert (explore / f"explore_{method}.png").read_bytes()[:4] == b"\x89PNG"

    ok(["report", str(out)])
    page = (out / "report.html").read_text()
    for section in ("summary", "sweep", "baselines", "overview", "gallery", "explore"):
        assert f'<section id="{section}">' in page
    assert "http://" not in page and "https://" not in page and "<link" not in page  # offline, one file
    n_images = len(re.findall(r"<img ", page))
    # 2 sweep figures + colour bar + 5 per image (pre, post, truth, score, classes) + 4 per gallery card + 2 explore
    cards = page.count('<div class="card">')
    assert n_images == 3 + 5 * 4 + 4 * cards + 2 and cards >= 8
    assert f"{ev['miou']['miou']:.4f}" in page and "structure consistency" in page


def test_predict_writes_the_damage_class_map(flat: tuple[Path, Path, Path], tmp_path: Path) -> None:
    root, _, model = flat
    pre, post, target = bright_paths(root, read_bright(root)[0].id)
    out = tmp_path / "map.tif"
    text = ok(["predict", "--model", str(model), "--pre", str(pre), "--post", str(post), "--out", str(out)])
    classes_path = tmp_path / "map_damage.tif"
    assert f"class map {classes_path}" in text
    classes, nodata, crs, transform = _read(classes_path)
    _, _, pre_crs, pre_transform = _read(pre)
    assert crs == pre_crs and transform == pre_transform and nodata == 255
    sweep = tmp_path / "s.json"
    args = ["--scores", str(out), "--truth", str(target), "--truth-kind", "damage", "--out", str(sweep)]
    text = ok(["threshold", *args, "--classes", str(classes_path)])
    truth = _read(target)[0]
    miou, _ = _miou([np.where(classes == 255, 0, classes)], [truth])
    assert json.loads(sweep.read_text())["miou"]["miou"] == pytest.approx(miou, abs=1e-12)
    assert f"mIoU {miou:.4f}" in text


def test_dfc25_tree_end_to_end(tmp_path: Path) -> None:
    root = tmp_path / "dfc"
    pairs = write_bright(root, n=5, size=64, seed=5, layout="dfc25")
    model = train_tiny(root, tmp_path, batches_per_epoch=3)[1]
    test_ids = (root / DFC25_DIR / SPLIT_FILES["test"]).read_text().split()
    assert test_ids and set(test_ids) < {p.id for p in pairs}
    out = tmp_path / "eval"
    args = ["--model", str(model), "--root", str(root), "--split", "test", "--out", str(out), "--no-baselines"]
    ok(["evaluate", *args, "--no-report", "--paint", "roi"])
    samples = read_bright(root, splits=["test"])
    assert [s.id for s in samples] == sorted(test_ids) and all(s.split == "test" for s in samples)
    ev = _check_evaluation(out, samples, model)
    net = load_model(model)[0]
    assert ev["settings"]["paint"] == "roi" and ev["settings"]["stride"] == net.config.roi // 2
    optical, sar, _ = normalise_pair(read_pair_arrays(samples[0]))
    expected = change_map(net, optical, sar, window=net.config.context, stride=net.config.roi // 2, paint="roi")
    np.testing.assert_allclose(_read(ev["samples"][0]["change_map"])[0], expected, rtol=1e-6)
    assert ev["baselines"] == [] and not (out / "report.html").exists()
    ok(["report", str(out)])
    assert '<section id="baselines">' not in (out / "report.html").read_text()
