"""Damage classes: the per-ROI class of the index, the dataset item, the auto class head, ROI-painted class maps."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from changescope.errors import MissingDependencyError, ParameterError
from changescope.multimodal.config import ModelConfig, config_from_dict
from changescope.multimodal.explore import check_methods
from changescope.multimodal.index import IndexParams, PatchDataset, build_index, window_ratios
from changescope.multimodal.io import CLASS_COLORS, write_class_map
from changescope.multimodal.layout import read_bright
from changescope.multimodal.model import PseudoSiamese
from changescope.multimodal.pairs import PairArrays, Side, Truth, crop_window, pair_sample
from changescope.multimodal.predict import CLASS_NODATA, class_map, damage_classes, window_starts
from changescope.multimodal.synthetic import write_bright
from changescope.multimodal.train import resolve_config

SMALL = IndexParams(roi=8, context=32, stride=8, seed=3)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bright")
    write_bright(out, n=3, size=64, seed=11, events=("turkey-earthquake", "la_palma-volcano"))
    return out


def _naive_class(classes: np.ndarray, valid: np.ndarray, rule: str) -> int:
    c = classes[valid]
    if c.size == 0:
        return -1
    if rule == "maximum":
        return int(c.max())
    counts = np.bincount(c, minlength=4)
    return int(max(range(4), key=lambda k: (counts[k], k)))  # most frequent, ties to the more severe


@pytest.mark.parametrize("rule", ["majority", "maximum"])
@pytest.mark.parametrize(("h", "w", "roi", "stride"), [(20, 24, 4, 2), (33, 17, 8, 3), (40, 24, 16, 8)])
def test_roi_damage_class_matches_a_naive_loop(rule: str, h: int, w: int, roi: int, stride: int) -> None:
    rng = np.random.default_rng(h * w + roi)
    valid = rng.random((h, w)) > 0.3
    valid[:roi, :roi] = False  # the first ROI has no valid pixel: class -1
    b = max(3, roi // 2)  # blobs of half an ROI, so ROIs differ in majority
    blocks = rng.choice(4, size=(h // b + 1, w // b + 1), p=[0.4, 0.3, 0.15, 0.15])
    classes = np.kron(blocks, np.ones((b, b), int))[:h, :w].astype(np.uint8)
    full = Side(np.zeros((3, h, w), np.float32), np.ones((h, w), bool), "optical", False)
    side = Side(np.zeros((1, h, w), np.float32), valid, "sar", False)
    truth = Truth(classes > 1, classes >= 1, np.ones((h, w), bool), classes)
    got = window_ratios(PairArrays(full, side, truth), roi, stride, rule)  # type: ignore[arg-type]
    want = [
        _naive_class(classes[y : y + roi, x : x + roi], valid[y : y + roi, x : x + roi], rule)
        for y in range(0, h - roi + 1, stride)
        for x in range(0, w - roi + 1, stride)
    ]
    assert got["damage_class"].tolist() == want
    assert want[0] == -1 and len(set(want)) >= (3 if rule == "majority" else 2)


def test_index_and_dataset_carry_the_damage_class(root: Path, tmp_path: Path) -> None:
    frame = build_index(read_bright(root), SMALL)
    assert frame["damage_class"].dtype == np.int8 and set(frame["damage_class"]) <= {0, 1, 2, 3}
    assert (frame.loc[frame["damage_class"] >= 2, "damage_ratio"] > 0).all()  # a damaged majority is damage
    maximum = build_index(read_bright(root), IndexParams(roi=8, context=32, stride=8, seed=3, class_rule="maximum"))
    assert (maximum["damage_class"] >= frame["damage_class"]).all()
    assert (maximum["damage_class"] > frame["damage_class"]).any()
    ds = PatchDataset(frame, split="train")
    part = frame[frame["split"] == "train"].reset_index(drop=True)
    for i in (0, len(ds) // 2, len(ds) - 1):
        assert int(ds[i]["damage_class"]) == int(part["damage_class"][i])
    assert ds.has_classes

    sample = read_bright(root)[0]
    mask = tmp_path / "mask.tif"
    with rasterio.open(sample.target) as src:  # type: ignore[arg-type]
        profile, data = src.profile, src.read()
    with rasterio.open(mask, "w", **profile) as dst:
        dst.write((data > 1).astype(data.dtype))
    pair = pair_sample(sample.pre, sample.post, mask)
    other = pair_sample(read_bright(root)[1].pre, read_bright(root)[1].post)
    change = build_index([pair, other], SMALL)
    assert (change["damage_class"] == -1).all() and not PatchDataset(change).has_classes
    with pytest.raises(ParameterError, match="class_rule"):
        IndexParams(class_rule="mean")  # type: ignore[arg-type]


def test_class_head_is_on_when_the_training_windows_have_classes(root: Path) -> None:
    frame = build_index(read_bright(root), SMALL)
    cfg = config_from_dict({"data": {"index": "i.parquet"}, "out": "o"})
    assert cfg.model.n_classes is None and PseudoSiamese(cfg.model).class_head is None
    assert resolve_config(cfg, PatchDataset(frame, split="train")).model.n_classes == 4
    no_classes = frame.assign(damage_class=np.int8(-1))
    assert resolve_config(cfg, PatchDataset(no_classes, split="train")).model.n_classes == 0
    fixed = config_from_dict({"data": {"index": "i.parquet"}, "out": "o", "model": {"n_classes": 0}})
    assert resolve_config(fixed, PatchDataset(frame, split="train")).model.n_classes == 0


def _tiny_head() -> PseudoSiamese:
    torch.manual_seed(3)
    cfg = ModelConfig(architecture="test_resnet", hidden_dim=16, proj_dim=8, context=32, roi=8, n_classes=4)
    return PseudoSiamese(cfg).eval()


def test_roi_painted_class_map_gives_each_roi_its_own_window(root: Path) -> None:
    model = _tiny_head()
    rng = np.random.default_rng(0)
    h, w = 40, 44
    optical = rng.standard_normal((3, h, w)).astype(np.float32)
    sar = rng.standard_normal((1, h, w)).astype(np.float32)
    probs = class_map(model, optical, sar, window=32, stride=8, paint="roi")
    assert probs.shape == (4, h, w) and np.allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    pair = np.concatenate([optical, sar])
    ys, xs = window_starts(h, 8, 8), window_starts(w, 8, 8)
    assert ys[-1] == h - 8 == ys[-2] + 8 and xs[-1] == w - 8 == xs[-2] + 4  # the far-edge column ROI overlaps
    for y in ys:
        for x in xs[:-2]:
            crop = torch.from_numpy(crop_window(pair, y - 12, x - 12, 32)[None])
            with torch.no_grad():
                want = torch.softmax(model(crop[:, :3], crop[:, 3:]).logits, dim=1)[0].numpy()  # type: ignore[arg-type]
            block = probs[:, y : y + 8, x : x + 8].reshape(4, -1)
            np.testing.assert_allclose(block, np.repeat(want[:, None], 64, axis=1), atol=1e-5)
    window = class_map(model, optical, sar, window=32, stride=8, paint="window")
    assert not np.allclose(window, probs, atol=1e-3)  # spreading over the whole window is another map


def test_damage_classes_and_the_class_raster(tmp_path: Path) -> None:
    probs = np.zeros((4, 3, 2), np.float32)
    probs[[0, 3, 2, 1, 1, 0], [0, 0, 1, 1, 2, 2], [0, 1, 0, 1, 0, 1]] = 1.0
    valid = np.ones((3, 2), bool)
    valid[2, 1] = False
    got = damage_classes(probs, valid)
    assert got.tolist() == [[0, 3], [2, 1], [1, CLASS_NODATA]]
    with pytest.raises(ParameterError, match="does not match"):
        damage_classes(probs, valid[:2])
    arr = np.tile(np.array([0, 1, 2, 3, CLASS_NODATA], np.uint8), (320, 64))
    from affine import Affine

    transform = Affine(0.5, 0, 500_000, 0, -0.5, 4_200_000)
    path = write_class_map(tmp_path / "c.tif", arr, crs="EPSG:32633", transform=transform)
    with rasterio.open(path) as src:
        assert src.crs.to_string() == "EPSG:32633" and src.transform == transform and src.nodata == CLASS_NODATA
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG" and src.descriptions == ("damage_class",)
        np.testing.assert_array_equal(src.read(1), arr)
        assert src.colormap(1)[3] == CLASS_COLORS[3]
        assert set(np.unique(src.read(1, out_shape=(1, 40, 40)))) <= {0, 1, 2, 3, CLASS_NODATA}  # nearest overviews
    with pytest.raises(ParameterError, match="0-3 and 255"):
        write_class_map(tmp_path / "bad.tif", np.full((4, 4), 7, np.uint8))


def test_explore_methods_and_the_missing_umap(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_methods(["PCA", " tsne", "pca"]) == ["pca", "tsne"]
    with pytest.raises(ParameterError, match="choose among"):
        check_methods(["isomap"])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "umap" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"umap-learn.*'explore' extra.*pip install umap-learn"):
        check_methods(["pca", "umap"])
    assert check_methods(["pca"]) == ["pca"]
