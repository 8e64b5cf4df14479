"""Generic pre/post pairs: formats, grey detection, modalities, normalisation and the bad-input errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from changescope.errors import (
    BandMismatchError,
    CRSMismatchError,
    GridMismatchError,
    NoImagesFoundError,
    ParameterError,
)
from changescope.multimodal.pairs import crop_window, normalise_pair, pair_sample, read_pair_arrays, read_side

DRIVERS = {".tif": "GTiff", ".png": "PNG", ".bmp": "BMP", ".jpg": "JPEG"}


def _write(path: Path, array: np.ndarray, *, crs: str | None = None, transform: Affine | None = None) -> Path:
    arr = array if array.ndim == 3 else array[None]
    profile = {"driver": DRIVERS[path.suffix], "width": arr.shape[2], "height": arr.shape[1], "count": arr.shape[0]}
    profile["dtype"] = arr.dtype.name
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(arr)
    return path


def _images(seed: int, h: int = 40, w: int = 48) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(10, 250, (3, h, w), dtype=np.uint8)
    sar = rng.integers(1, 250, (h, w), dtype=np.uint8)
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[5:15, 8:30] = 255
    return rgb, sar, mask


@pytest.mark.parametrize("suffix", [".tif", ".png", ".bmp", ".jpg"])
def test_every_format_reads_with_grey_as_rgb_detected(tmp_path: Path, suffix: str) -> None:
    rgb, sar, mask = _images(1)
    # smooth images survive JPEG; the grey SAR is stored as three equal bands
    rgb = np.repeat(np.linspace(20, 230, rgb.shape[2], dtype=np.uint8)[None, None], 40, 1).repeat(3, 0)
    rgb[1] = 255 - rgb[1]
    pre = _write(tmp_path / f"pre{suffix}", rgb)
    post = _write(tmp_path / f"post{suffix}", np.repeat(sar[None], 3, 0))
    truth = _write(tmp_path / f"truth{suffix if suffix != '.jpg' else '.png'}", mask)
    sample = pair_sample(pre, post, truth, pre_modality="optical", post_modality="sar")
    assert sample.crs is None and sample.target_kind == "change"
    pair = read_pair_arrays(sample)
    assert pair.pre.image.shape == (3, 40, 48) and not pair.pre.grey
    assert pair.post.image.shape == (1, 40, 48) and pair.post.grey
    assert pair.truth is not None
    np.testing.assert_array_equal(pair.truth.damage, mask == 255)
    if suffix != ".jpg":
        np.testing.assert_array_equal(pair.post.image[0], sar)


def test_modality_is_a_parameter_not_an_assumption(tmp_path: Path) -> None:
    rgb, sar, _ = _images(2)
    pre = _write(tmp_path / "sar_before.tif", sar)
    post = _write(tmp_path / "optical_after.tif", rgb)
    sample = pair_sample(pre, post, pre_modality="sar", post_modality="optical")
    optical, sar_norm, valid = normalise_pair(read_pair_arrays(sample))
    assert optical.shape == (3, 40, 48) and sar_norm.shape == (1, 40, 48)
    # optical: z-score per channel of the *post* file; SAR: log1p then z-score of the *pre* file
    expected = (rgb[1] - rgb[1].mean()) / rgb[1].std()
    np.testing.assert_allclose(optical[1], expected, atol=1e-4)
    logged = np.log1p(sar.astype(np.float64))
    np.testing.assert_allclose(sar_norm[0], (logged - logged.mean()) / logged.std(), atol=1e-4)
    assert valid.all()


def test_sar_file_given_as_optical_is_refused(tmp_path: Path) -> None:
    rgb, sar, _ = _images(3)
    pre = _write(tmp_path / "pre.tif", rgb)
    post = _write(tmp_path / "post_sar.tif", sar)
    with pytest.raises(BandMismatchError, match=r"post_sar\.tif.*1 band.*post_modality='sar'"):
        pair_sample(pre, post, post_modality="optical")
    with pytest.raises(BandMismatchError, match="post_modality='sar'"):
        read_side(post, "optical", role="post")


def test_optical_file_given_as_sar_is_refused(tmp_path: Path) -> None:
    rgb, _, _ = _images(4)
    path = _write(tmp_path / "colour.png", rgb)
    with pytest.raises(BandMismatchError, match=r"colour\.png.*3 different bands.*pre_modality='optical'"):
        read_side(path, "sar", role="pre")


def test_mismatched_sizes_and_mask_shape_are_refused(tmp_path: Path) -> None:
    rgb, sar, mask = _images(5)
    pre = _write(tmp_path / "pre.tif", rgb)
    small = _write(tmp_path / "small.tif", sar[:30, :30])
    post = _write(tmp_path / "post.tif", sar)
    with pytest.raises(GridMismatchError, match=r"small\.tif.*\(30, 30\).*\(40, 48\)"):
        pair_sample(pre, small)
    bad_mask = _write(tmp_path / "mask.png", mask[:, :20])
    with pytest.raises(GridMismatchError, match=r"mask\.png.*\(40, 20\)"):
        pair_sample(pre, post, bad_mask)


def test_georeferenced_pairs_keep_crs_and_refuse_another_crs(tmp_path: Path) -> None:
    rgb, sar, _ = _images(6)
    transform = Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 5000000.0)
    pre = _write(tmp_path / "pre.tif", rgb, crs="EPSG:32633", transform=transform)
    post = _write(tmp_path / "post.tif", sar, crs="EPSG:32633", transform=transform)
    sample = pair_sample(pre, post)
    assert sample.crs == "EPSG:32633" and sample.transform == transform
    other = _write(tmp_path / "other.tif", sar, crs="EPSG:32632", transform=transform)
    with pytest.raises(CRSMismatchError, match=r"other\.tif"):
        pair_sample(pre, other)
    shifted = _write(tmp_path / "shifted.tif", sar, crs="EPSG:32633", transform=transform * Affine.translation(5, 0))
    with pytest.raises(GridMismatchError, match=r"shifted\.tif"):
        pair_sample(pre, shifted)


def test_nodata_and_alpha_make_pixels_invalid(tmp_path: Path) -> None:
    rgb, sar, _ = _images(7)
    rgba = np.concatenate([rgb, np.full((1, 40, 48), 255, np.uint8)])
    rgba[3, :4] = 0
    side = read_side(_write(tmp_path / "rgba.png", rgba), "optical")
    assert side.image.shape[0] == 3
    assert not side.valid[:4].any() and side.valid[4:].all()
    path = tmp_path / "nd.tif"
    profile = {"driver": "GTiff", "width": 48, "height": 40, "count": 1, "dtype": "uint8", "nodata": 7}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.where(np.arange(48)[None] < 10, 7, np.maximum(sar, 8)).astype(np.uint8)[None])
    side = read_side(path, "sar")
    assert not side.valid[:, :10].any() and side.valid[:, 10:].all()


def test_missing_file_and_bad_modality(tmp_path: Path) -> None:
    rgb, _, _ = _images(8)
    pre = _write(tmp_path / "pre.tif", rgb)
    with pytest.raises(NoImagesFoundError, match=r"nope\.tif"):
        pair_sample(pre, tmp_path / "nope.tif")
    with pytest.raises(ParameterError, match="post_modality='lidar'"):
        pair_sample(pre, pre, post_modality="lidar")


def test_crop_window_pads_outside_the_image() -> None:
    image = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    out = crop_window(image, -2, 3, 4)
    assert out.shape == (2, 4, 4)
    np.testing.assert_array_equal(out[:, :2], 0)
    np.testing.assert_array_equal(out[:, 2:, :3], image[:, 0:2, 3:6])
    np.testing.assert_array_equal(out[:, 2:, 3], 0)


HETCD = [
    ("shuguang", "shuguang_1.bmp", "shuguang_2.bmp", "shuguang_gt.bmp", "sar", "optical", (593, 921)),
    ("yellowriver", "YellowRiver_1.jpg", "YellowRiver_2.jpg", "YellowRiver_gt.bmp", "sar", "optical", (343, 291)),
    ("italy", "Italy_1.bmp", "Italy_2.bmp", "Italy_gt.bmp", "sar", "optical", (300, 412)),
    ("img7", "Img7-Bc.tif", "Img7-Ac.tif", "Img7-C.tif", "optical", "optical", (500, 500)),
]


@pytest.mark.realdata
@pytest.mark.parametrize(("folder", "pre", "post", "truth", "pre_mod", "post_mod", "shape"), HETCD)
def test_real_hetcd_pairs(
    shared_data: Path, folder: str, pre: str, post: str, truth: str, pre_mod: str, post_mod: str, shape: tuple[int, int]
) -> None:
    base = shared_data / "hetcd" / folder
    if not base.is_dir():
        pytest.skip(f"{base} is absent")
    sample = pair_sample(base / pre, base / post, base / truth, pre_modality=pre_mod, post_modality=post_mod)
    pair = read_pair_arrays(sample)
    assert pair.valid.shape == shape
    assert pair.truth is not None
    share = float(pair.truth.damage.mean())
    assert 0.01 < share < 0.3  # the README: 3.4 % to 15 % change
    if pre_mod == "sar":
        assert pair.pre.image.shape[0] == 1 and pair.pre.grey  # grey stored as three bands
        optical, sar, _ = normalise_pair(pair)
        assert optical.shape == (3, *shape) and sar.shape == (1, *shape)
        assert abs(float(sar.mean())) < 1e-3 and abs(float(sar.std()) - 1) < 1e-3
    else:
        with pytest.raises(ParameterError, match="one optical and one SAR"):
            normalise_pair(pair)
