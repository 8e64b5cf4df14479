"""The window index (ratios, labels, splits, Parquet) and the on-the-fly patch dataset."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from affine import Affine

from changescope.errors import CorruptFileError, EmptySeriesError, ParameterError
from changescope.io.writers import write_geotiff
from changescope.multimodal.index import (
    IndexParams,
    PatchDataset,
    build_index,
    read_index,
    window_ratios,
    write_index,
)
from changescope.multimodal.layout import bright_paths, read_bright
from changescope.multimodal.pairs import PairArrays, Side, Truth, crop_window, normalise_pair, read_pair_arrays
from changescope.multimodal.regions import val_region
from changescope.multimodal.synthetic import write_bright

SMALL = IndexParams(roi=16, context=32, stride=8)
CRS = "EPSG:32633"


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bright")
    write_bright(root, n=5, size=64, seed=21)
    return root


def _tile(root: Path, sample_id: str, target: np.ndarray, optical: np.ndarray | None = None) -> None:
    """Write one BRIGHT tile with a given damage raster (random optical and SAR)."""
    rng = np.random.default_rng(zlib.crc32(sample_id.encode()))
    h, w = target.shape
    opt = rng.integers(1, 255, (3, h, w), dtype=np.uint8) if optical is None else optical
    pre, post, tgt = bright_paths(root, sample_id)
    transform = Affine(1.0, 0.0, 500_000.0, 0.0, -1.0, 4_000_000.0)
    write_geotiff(pre, opt, crs=CRS, transform=transform)
    write_geotiff(post, rng.integers(1, 255, (1, h, w), dtype=np.uint8), crs=CRS, transform=transform)
    write_geotiff(tgt, target.astype(np.uint8), crs=CRS, transform=transform)


@pytest.mark.parametrize(("h", "w", "roi", "stride"), [(20, 24, 4, 2), (33, 17, 8, 3), (16, 16, 16, 8), (9, 30, 5, 5)])
def test_window_ratios_match_a_naive_loop(h: int, w: int, roi: int, stride: int) -> None:
    rng = np.random.default_rng(h * w + roi)
    valid = rng.random((h, w)) > 0.2
    classes = rng.integers(0, 4, (h, w))
    side = Side(np.zeros((1, h, w), np.float32), valid, "sar", False)
    full = Side(np.zeros((3, h, w), np.float32), np.ones((h, w), bool), "optical", False)
    pair = PairArrays(full, side, Truth(classes > 1, classes >= 1, np.ones((h, w), bool)))
    got = window_ratios(pair, roi, stride)
    rows = []
    for y in range(0, h - roi + 1, stride):
        for x in range(0, w - roi + 1, stride):
            v = valid[y : y + roi, x : x + roi]
            c = classes[y : y + roi, x : x + roi][v]
            n = max(int(v.sum()), 1)
            rows.append((y, x, v.mean(), (c > 1).sum() / n, (c >= 1).sum() / n))
    want = pd.DataFrame(rows, columns=["y", "x", "valid_ratio", "damage_ratio", "building_ratio"])
    assert len(got) == len(want)
    np.testing.assert_array_equal(got[["y", "x"]].to_numpy(), want[["y", "x"]].to_numpy())
    np.testing.assert_allclose(got[["valid_ratio", "damage_ratio", "building_ratio"]], want.iloc[:, 2:], atol=1e-12)


def test_labels_follow_the_published_thresholds(tmp_path: Path) -> None:
    # four 16 px ROIs side by side, stride 16: damaged pixels 12, 13 (ratios 0.047, 0.051); building 51, 52 px
    target = np.zeros((16, 64), np.uint8)
    counts = [(12, 0), (13, 0), (0, 51), (0, 52)]
    for k, (damaged, buildings) in enumerate(counts):
        roi = target[:, 16 * k : 16 * (k + 1)].reshape(-1)
        roi[:damaged] = 2 + (k % 2)
        roi[damaged : damaged + buildings] = 1
        target[:, 16 * k : 16 * (k + 1)] = roi.reshape(16, 16)
    _tile(tmp_path, "test-quake_00000001", target)
    _tile(tmp_path, "test-quake_00000002", target)
    frame = build_index(read_bright(tmp_path), IndexParams(roi=16, context=32, stride=16))
    first = frame[frame["sample"] == "test-quake_00000001"].sort_values("x")
    np.testing.assert_allclose(first["damage_ratio"], [12 / 256, 13 / 256, 0, 0])
    assert list(first["positive"]) == [True, False, True, True]
    assert list(first["label"]) == [0, 1, 0, 0]  # 1 = changed (damaged), 0 = unchanged
    assert list(first["building"]) == [False, False, False, True]  # building present from 20 % (52 px of 256)
    assert list(first["building_ratio"] * 256) == [12, 13, 51, 52]  # damaged pixels are buildings too


def test_rois_with_too_few_valid_pixels_are_skipped(tmp_path: Path) -> None:
    optical = np.full((3, 32, 64), 100, np.uint8)
    optical[:, :, :16] = 0  # fill: invalid in BRIGHT tiles
    optical[:, :4, 16:32] = 0  # a quarter of the second ROI column
    optical[:, :3, 32:48] = 0  # 3/16 of the third
    for i in (1, 2):
        _tile(tmp_path, f"edge-flood_0000000{i}", np.zeros((32, 64), np.uint8), optical)
    frame = build_index(read_bright(tmp_path), IndexParams(roi=16, context=32, stride=16))
    kept = frame[(frame["sample"] == "edge-flood_00000001") & (frame["y"] == 0)]
    assert sorted(kept["x"]) == [32, 48]
    assert (frame["valid_ratio"] >= 0.8).all()


def test_random_split_is_by_image_and_seeded(synthetic_root: Path) -> None:
    samples = read_bright(synthetic_root)
    a, b = build_index(samples, SMALL), build_index(samples, SMALL)
    pd.testing.assert_frame_equal(a, b)
    per_image = a.groupby("sample")["split"].nunique()
    assert (per_image == 1).all()
    splits = a.drop_duplicates("sample")["split"].value_counts()
    assert splits["val"] == 1 and splits["train"] == 4
    chosen = {
        seed: frozenset(
            build_index(samples, IndexParams(roi=16, context=32, stride=8, seed=seed)).query("split == 'val'")["sample"]
        )
        for seed in range(6)
    }
    assert len(set(chosen.values())) > 1


def test_single_scene_needs_a_region_split(synthetic_root: Path) -> None:
    one = read_bright(synthetic_root, limit=1)
    with pytest.raises(ParameterError, match="split='halves'"):
        build_index(one, SMALL)


@pytest.mark.parametrize("val_half", ["left", "right"])
def test_halves_split(synthetic_root: Path, val_half: str) -> None:
    one = read_bright(synthetic_root, limit=1)
    frame = build_index(one, IndexParams(roi=16, context=32, stride=8, split="halves", val_half=val_half))  # type: ignore[arg-type]
    left = frame["x"] + 16 <= 32
    right = frame["x"] >= 32
    assert (left | right).all()  # nothing straddles the middle
    val = right if val_half == "right" else left
    assert (frame.loc[val, "split"] == "val").all() and (frame.loc[~val, "split"] == "train").all()
    assert val.any() and (~val).any()


def test_blocks_split(synthetic_root: Path) -> None:
    one = read_bright(synthetic_root, limit=1)
    params = IndexParams(roi=8, context=32, stride=4, split="blocks", blocks=4)
    frame = build_index(one, params)
    by, bx = frame["y"] // 16, frame["x"] // 16
    assert ((frame["y"] + 7) // 16 == by).all() and ((frame["x"] + 7) // 16 == bx).all()
    block_split = frame.assign(block=by * 4 + bx).groupby("block")["split"].agg(["nunique", "first"])
    assert (block_split["nunique"] == 1).all()
    assert (block_split["first"] == "val").sum() == round(0.2 * 16)
    pd.testing.assert_frame_equal(frame, build_index(one, params))


@pytest.mark.parametrize(
    "params",
    [
        IndexParams(roi=8, context=32, stride=4, split="blocks", blocks=4, val_share=0.5),
        IndexParams(roi=8, context=32, stride=4, split="halves", val_half="left"),
    ],
)
def test_val_region_holds_exactly_the_val_rois(synthetic_root: Path, params: IndexParams) -> None:
    one = read_bright(synthetic_root, limit=1)
    frame = build_index(one, params)
    region = val_region((64, 64), params)
    assert 0 < region.mean() < 1
    inside = [bool(region[y : y + 8, x : x + 8].all()) for y, x in frame[["y", "x"]].to_numpy()]
    outside = [not region[y : y + 8, x : x + 8].any() for y, x in frame[["y", "x"]].to_numpy()]
    assert list(frame["split"] == "val") == inside and list(frame["split"] == "train") == outside


def test_val_region_needs_a_region_split() -> None:
    with pytest.raises(ParameterError, match="not a region split"):
        val_region((64, 64), IndexParams(split="random"))


def test_layout_split_wins(tmp_path: Path) -> None:
    write_bright(tmp_path, n=4, size=64, seed=8, layout="dfc25")
    samples = read_bright(tmp_path)
    frame = build_index(samples, SMALL)
    assert dict(frame.drop_duplicates("sample")[["sample", "split"]].to_numpy()) == {s.id: s.split for s in samples}


def test_parquet_round_trip(synthetic_root: Path, tmp_path: Path) -> None:
    frame = build_index(read_bright(synthetic_root), SMALL)
    path = write_index(frame, tmp_path / "sub" / "index.parquet")
    assert [p.name for p in path.parent.iterdir()] == ["index.parquet"]  # no temporary file left
    back = read_index(path)
    assert back.attrs["params"] == frame.attrs["params"]
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(CorruptFileError, match="not a window index"):
        read_index(tmp_path / "other.parquet")
    (tmp_path / "junk.parquet").write_text("nope")
    with pytest.raises(CorruptFileError, match="junk"):
        read_index(tmp_path / "junk.parquet")


def test_dataset_items(synthetic_root: Path) -> None:
    torch = pytest.importorskip("torch")
    frame = build_index(read_bright(synthetic_root), SMALL)
    ds = PatchDataset(frame, split="train", cache_size=2)
    train = frame[frame["split"] == "train"].reset_index(drop=True)
    assert len(ds) == len(train)
    np.testing.assert_array_equal(ds.labels, train["label"])
    for i in (0, len(ds) // 2, len(ds) - 1):
        item = ds[i]
        assert item["optical"].shape == (3, 32, 32) and item["optical"].dtype == torch.float32
        assert item["sar"].shape == (1, 32, 32) and item["sar"].dtype == torch.float32
        assert item["label"].dtype == torch.int64 and int(item["label"]) == train["label"][i]
        assert item["ratio"].dtype == torch.float32
        assert float(item["ratio"]) == pytest.approx(train["damage_ratio"][i])
        samples = {s.id: s for s in read_bright(synthetic_root)}
        optical, sar, _ = normalise_pair(read_pair_arrays(samples[train["sample"][i]]))
        y0, x0 = int(train["y"][i]) + 8 - 16, int(train["x"][i]) + 8 - 16
        np.testing.assert_allclose(item["optical"].numpy(), crop_window(optical, y0, x0, 32), atol=1e-6)
        np.testing.assert_allclose(item["sar"].numpy(), crop_window(sar, y0, x0, 32), atol=1e-6)
    assert len(ds._cache) <= 2
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["optical"].shape == (4, 3, 32, 32) and batch["label"].shape == (4,)


def test_dataset_errors(synthetic_root: Path, tmp_path: Path) -> None:
    frame = build_index(read_bright(synthetic_root), SMALL)
    with pytest.raises(EmptySeriesError, match="'test'"):
        PatchDataset(frame, split="test")
    same = frame.assign(post_modality="optical")
    with pytest.raises(ParameterError, match="optical"):
        PatchDataset(same)
    path = write_index(frame, tmp_path / "i.parquet")
    assert len(PatchDataset(path)) == len(frame)


def test_pairs_without_truth_get_label_minus_one(synthetic_root: Path) -> None:
    from dataclasses import replace

    samples = [replace(s, target=None) for s in read_bright(synthetic_root)]
    frame = build_index(samples, SMALL)
    assert (frame["label"] == -1).all() and frame["damage_ratio"].isna().all() and not frame["positive"].any()
    with pytest.raises(EmptySeriesError):
        PatchDataset(frame)
    assert len(PatchDataset(frame, labelled_only=False)) == len(frame)


@pytest.mark.parametrize(
    "kwargs",
    [{"roi": 0}, {"context": 8}, {"min_valid": 1.5}, {"val_share": 1.0}, {"split": "diagonal"}, {"blocks": 1}],
)
def test_bad_params_name_the_option(kwargs: dict[str, object]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ParameterError, match=name):
        IndexParams(**kwargs)  # type: ignore[arg-type]


def test_the_data_layer_imports_without_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, changescope.multimodal as mm; mm.build_index; mm.read_bright; mm.write_bright; mm.pair_sample; "
        "mm.PatchDataset; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
