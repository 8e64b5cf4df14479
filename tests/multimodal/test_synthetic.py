"""Synthetic optical/SAR scenes and their BRIGHT files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import rasterio

from changescope.errors import ParameterError
from changescope.multimodal.layout import SPLIT_FILES, read_bright
from changescope.multimodal.synthetic import SYNTHETIC_CRS, make_pair, write_bright


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    write_bright(tmp_path / "a", n=3, size=64, seed=5)
    write_bright(tmp_path / "b", n=3, size=64, seed=5)
    write_bright(tmp_path / "c", n=3, size=64, seed=6)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert len(a) == 9
    assert a == b
    assert a.keys() == c.keys()
    assert a != c


@pytest.mark.parametrize("event", ["turkey-earthquake", "libya-flood", "la_palma-volcano"])
def test_pair_arrays_have_the_bright_shapes_and_codes(event: str) -> None:
    pair = make_pair(3, size=96, event=event, index=7)
    assert pair.id == f"{event}_00000007"
    assert pair.optical.shape == (3, 96, 96) and pair.optical.dtype == np.uint8
    assert pair.sar.shape == (1, 96, 96) and pair.sar.dtype == np.uint8
    assert pair.target.shape == (96, 96)
    assert set(np.unique(pair.target)) <= {0, 1, 2, 3}
    assert (pair.target >= 1).any()
    # no exact zeros, which BRIGHT readers treat as fill
    assert pair.optical.min() >= 1 and pair.sar.min() >= 1
    # every damaged building counts as change; intact buildings never do
    assert pair.change[pair.target > 1].all()
    assert not pair.change[pair.target == 1].any()


def test_sar_shows_water_dark_and_buildings_bright() -> None:
    from changescope.synthetic.landscape import Surface, make_landscape

    pair = make_pair(0, size=128, event="turkey-earthquake")
    # rebuild the landscape draw to find open water (the first draw of the same generator)
    rng = np.random.default_rng(np.random.SeedSequence([0, 0]))
    land = make_landscape(rng, 128, 1, 6)
    water = land.surface == Surface.WATER
    sar = pair.sar[0].astype(float)
    assert water.sum() > 20
    assert np.median(sar[water]) < 0.5 * np.median(sar[pair.target == 0])
    assert np.percentile(sar[pair.target == 1], 90) > np.percentile(sar[pair.target == 0], 90)


def test_flood_darkens_the_post_event_sar() -> None:
    pair = make_pair(2, size=128, event="libya-flood")
    flooded_ground = pair.change & (pair.target == 0)
    assert flooded_ground.mean() > 0.1
    sar = pair.sar[0].astype(float)
    dry = ~pair.change & (pair.target == 0)
    assert np.median(sar[flooded_ground]) < 0.5 * np.median(sar[dry])


def test_damaged_buildings_are_partly_collapsed() -> None:
    from scipy import ndimage

    from changescope.multimodal.synthetic import _collapsed

    rng = np.random.default_rng(0)
    buildings, n = ndimage.label(rng.random((96, 96)) < 0.55)  # random blobs stand in for roofs
    buildings = buildings.astype(np.int32)
    cls = rng.integers(1, 4, n + 1).astype(np.uint8)
    cls[0] = 0
    collapsed = _collapsed(np.random.default_rng(1), buildings, cls)
    pixel_cls = cls[buildings]
    assert not (collapsed & (pixel_cls != 2)).any()  # only damaged roofs collapse in part
    sizes = np.bincount(buildings.ravel(), minlength=n + 1)
    share = np.bincount(buildings.ravel(), weights=collapsed.ravel(), minlength=n + 1) / np.maximum(sizes, 1)
    big = (cls == 2) & (sizes >= 20)
    assert big.sum() >= 5
    assert (share[big] >= 0.2 - 1 / sizes[big]).all() and (share[big] <= 0.6 + 1 / sizes[big]).all()
    assert share[big].std() > 0.05  # each building draws its own share


def test_sar_ranks_intact_damaged_destroyed_roofs_by_brightness() -> None:
    # intact roofs keep their double bounce; damaged ones keep a third of it on their standing part; destroyed
    # ones are rubble: the mean amplitude falls in that order
    pair = make_pair(11, size=256, event="turkey-earthquake")
    sar = pair.sar[0].astype(float)
    means = [sar[pair.target == c].mean() for c in (1, 2, 3)]
    assert min((pair.target == c).sum() for c in (1, 2, 3)) > 200
    assert means[0] > means[1] > means[2]


def test_files_are_georeferenced_geotiffs(tmp_path: Path) -> None:
    pairs = write_bright(tmp_path, n=2, size=64, seed=1)
    pre = tmp_path / "pre-event" / f"{pairs[1].id}_pre_disaster.tif"
    with rasterio.open(pre) as src:
        assert src.count == 3
        assert src.crs.to_string() == SYNTHETIC_CRS
        assert src.transform == pairs[1].transform
        np.testing.assert_array_equal(src.read(), pairs[1].optical)
    with rasterio.open(tmp_path / "post-event" / f"{pairs[1].id}_post_disaster.tif") as src:
        assert src.count == 1
        np.testing.assert_array_equal(src.read(), pairs[1].sar)
    with rasterio.open(tmp_path / "target" / f"{pairs[1].id}_building_damage.tif") as src:
        np.testing.assert_array_equal(src.read(1), pairs[1].target)
    assert pairs[0].transform != pairs[1].transform


def test_dfc25_layout_writes_split_files(tmp_path: Path) -> None:
    pairs = write_bright(tmp_path, n=5, size=64, seed=2, layout="dfc25")
    base = tmp_path / "dfc25_track2_trainval"
    listed = {s: (base / f).read_text().split() for s, f in SPLIT_FILES.items()}
    assert sorted(i for ids in listed.values() for i in ids) == sorted(p.id for p in pairs)
    assert all(listed.values())
    for sample_id in listed["test"]:
        assert (base / "val" / "pre-event" / f"{sample_id}_pre_disaster.tif").is_file()
    for sample_id in listed["train"] + listed["val"]:
        assert (base / "train" / "post-event" / f"{sample_id}_post_disaster.tif").is_file()
    samples = read_bright(tmp_path)
    assert {s.id: s.split for s in samples} == {i: s for s, ids in listed.items() for i in ids}


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="size"):
        make_pair(0, size=32)
    with pytest.raises(ParameterError, match="layout"):
        write_bright(tmp_path, layout="xbd")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="n=2"):
        write_bright(tmp_path, n=2, layout="dfc25")
    with pytest.raises(ParameterError, match="8 digits"):
        make_pair(0, size=64, event="bad event!", index=123456789)
