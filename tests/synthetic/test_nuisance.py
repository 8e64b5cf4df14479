"""Non-semantic nuisances: illumination, haze, clouds and shadows, misregistration, gap filling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, shift

from changescope.synthetic import SyntheticAoi
from changescope.synthetic.nuisance import (
    MASK_CLOUD,
    MASK_SHADOW,
    NuisanceDraw,
    apply_nuisances,
    draw_nuisances,
    subpixel_shift,
)


def _draw(**kw: object) -> NuisanceDraw:
    base: dict[str, object] = {
        "gain": 1.0,
        "offset": 0.0,
        "haze": 0.0,
        "cloud_fraction": 0.0,
        "shift": (0.0, 0.0),
        "shadow_offset": (6, 4),
        "gap_windows": (),
        "field_seed": 3,
    }
    return NuisanceDraw(**{**base, **kw})  # type: ignore[arg-type]


def _flat(value: float = 0.2, size: int = 128) -> np.ndarray:
    return np.full((4, size, size), value, dtype=np.float32)


def test_cloud_masks_cover_bright_clouds_and_dark_shadows() -> None:
    scene = _flat()
    image, mask = apply_nuisances(scene, _draw(cloud_fraction=0.3), scene, scene)
    assert np.all(scene == 0.2)  # the input is left alone
    cloud, shadow, clear = mask == MASK_CLOUD, mask == MASK_SHADOW, mask == 0
    assert 0.2 < cloud.mean() < 0.5
    assert shadow.any()
    assert image[0][cloud].mean() > image[0][clear].mean() + 0.1
    assert image[3][shadow].mean() < image[3][clear].mean() - 0.02


def test_masked_pixels_are_brighter_in_generated_images(aoi: SyntheticAoi) -> None:
    cloudy = [t for t in range(aoi.params.months) if (aoi.masks[t] == MASK_CLOUD).mean() > 0.05]
    assert cloudy
    for t in cloudy:
        blue = aoi.images[t, 0]
        assert blue[aoi.masks[t] == MASK_CLOUD].mean() > 2 * blue[aoi.masks[t] == 0].mean()


def test_clear_dates_have_empty_masks() -> None:
    scene = _flat()
    _, mask = apply_nuisances(scene, _draw(cloud_fraction=0.0, haze=0.05), scene, scene)
    assert not mask.any()


def test_illumination_and_haze_vary_across_dates(aoi: SyntheticAoi) -> None:
    gains = np.array([n["gain"] for n in aoi.nuisances])
    hazes = np.array([n["haze"] for n in aoi.nuisances])
    assert gains.min() >= 0.85 and gains.max() <= 1.15 and np.ptp(gains) > 0.1
    assert hazes.min() >= 0 and hazes.max() <= 0.06 and np.ptp(hazes) > 0.01
    # stable, never-changing pixels (water) follow the logged gain and haze
    water = np.all(aoi.labels == 5, axis=0) & np.all(aoi.masks == 0, axis=0)
    assert water.sum() > 100
    blue = aoi.images[:, 0][:, water].mean(axis=1) * 1e-4
    assert np.ptp(blue) > 0.01
    predicted = gains * 0.05 + np.array([n["offset"] for n in aoi.nuisances]) + hazes
    assert np.corrcoef(blue, predicted)[0, 1] > 0.8


def test_haze_is_blue_heavy_and_smooth() -> None:
    scene = _flat(0.1)
    hazy, _ = apply_nuisances(scene, _draw(haze=0.05), scene, scene)
    added = hazy - scene
    means = added.reshape(4, -1).mean(axis=1)
    assert means[0] > means[1] > means[2] > means[3] > 0
    assert np.abs(np.diff(gaussian_filter(added[0], 2), axis=1)).mean() < 0.002


@pytest.mark.parametrize(("dy", "dx"), [(0.3, -0.2), (-0.5, 0.5), (0.0, 0.45), (-0.05, 0.0)])
def test_subpixel_shift_matches_scipy(dy: float, dx: float) -> None:
    rng = np.random.default_rng(0)
    image = rng.random((4, 40, 50), dtype=np.float32)
    expected = shift(image, (0, dy, dx), order=1, mode="nearest")
    assert np.allclose(subpixel_shift(image, dy, dx), expected, atol=1e-6)


def test_misregistration_is_subpixel_and_varies(aoi: SyntheticAoi) -> None:
    shifts = np.array([n["shift"] for n in aoi.nuisances])
    assert np.all(np.abs(shifts) <= 0.5)
    assert np.ptp(shifts[:, 0]) > 0.2 and np.ptp(shifts[:, 1]) > 0.2


def test_gap_filled_blocks_are_smooth_interpolations() -> None:
    rng = np.random.default_rng(1)
    before = rng.random((4, 96, 96), dtype=np.float32) * 0.2
    after = rng.random((4, 96, 96), dtype=np.float32) * 0.2
    now = rng.random((4, 96, 96), dtype=np.float32) * 0.2
    window = (20, 30, 40, 32)
    image, mask = apply_nuisances(now, _draw(cloud_fraction=0.3, gap_windows=(window,)), before, after)
    block = (slice(None), slice(20, 60), slice(30, 62))
    assert not mask[block[1:]].any()  # reconstructed pixels look valid
    expected = gaussian_filter(0.5 * (before[block] + after[block]), (0, 1.5, 1.5), mode="nearest")
    assert np.allclose(image[block], expected, atol=1e-6)
    rough = np.abs(np.diff(image, axis=2))
    assert rough[block].mean() < 0.5 * np.delete(rough, np.s_[30:62], axis=2).mean()


def test_draws_are_in_their_documented_ranges() -> None:
    draws = draw_nuisances(np.random.default_rng(0), 200, 1024)
    clouds = np.array([d.cloud_fraction for d in draws])
    assert 0.2 < (clouds == 0).mean() < 0.6
    assert clouds[clouds > 0].min() >= 0.02 and clouds.max() <= 0.35
    gaps = [w for d in draws for w in d.gap_windows]
    assert gaps and all(64 <= h <= 171 and 64 <= w <= 171 for _, _, h, w in gaps)
    assert all(y0 + h <= 1024 and x0 + w <= 1024 for y0, x0, h, w in gaps)
    assert all(10 <= np.hypot(*d.shadow_offset) <= 27 for d in draws)
