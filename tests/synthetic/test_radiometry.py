"""Land cover, phenology and crop rotation (a reflectance change that is not a label change)."""

from __future__ import annotations

import numpy as np

from changescope.synthetic import SyntheticAoi
from changescope.synthetic.landscape import SURFACE_LABEL, Surface
from changescope.synthetic.radiometry import render_scene


def _ndvi(image: np.ndarray) -> np.ndarray:
    red, nir = image[2].astype(float), image[3].astype(float)
    ndvi: np.ndarray = (nir - red) / (nir + red)
    return ndvi


def test_landscape_has_parcels_stands_town_and_texture(aoi: SyntheticAoi) -> None:
    ls = aoi.landscape
    surfaces = set(np.unique(ls.surface).tolist())
    wanted = {Surface.ROOF, Surface.ASPHALT, Surface.CROP, Surface.GRASS, Surface.WETLAND, Surface.SOIL, Surface.WATER}
    assert {int(s) for s in wanted} <= surfaces
    assert surfaces & {int(Surface.DECIDUOUS), int(Surface.CONIFER)}
    crop_objects = np.unique(ls.obj[ls.surface == Surface.CROP])
    assert crop_objects.size >= 10  # many parcels, not one field
    assert np.array_equal(ls.labels, SURFACE_LABEL[ls.surface])
    # textured, not flat: pixels of one parcel differ on a clear date
    parcel = np.bincount(ls.obj[ls.surface == Surface.CROP]).argmax()
    pixels = aoi.images[0, 3][(ls.obj == parcel) & (aoi.masks[0] == 0) & (aoi.labels[0] == 1)]
    assert pixels.std() > 5


def test_vegetation_follows_the_seasons(aoi: SyntheticAoi) -> None:
    ls = aoi.landscape
    forest = ls.surface == Surface.DECIDUOUS
    winter = render_scene(ls, ls.surface, ls.obj, 0, 0)
    summer = render_scene(ls, ls.surface, ls.obj, 6, 0)
    assert np.mean(_ndvi(summer)[forest]) > np.mean(_ndvi(winter)[forest]) + 0.2
    water = ls.surface == Surface.WATER
    assert np.allclose(winter[:, water].mean(axis=1), summer[:, water].mean(axis=1), atol=0.01)


def test_crop_rotation_changes_reflectance_not_labels(two_year_aoi: SyntheticAoi) -> None:
    aoi = two_year_aoi
    ls = aoi.landscape
    touched = np.zeros(ls.surface.shape, dtype=bool)
    for ev in aoi.event_list:
        touched[ev.window] |= ev.mask
    cropland = (ls.surface == Surface.CROP) & ~touched
    # labels stay agriculture on every date
    assert np.all(aoi.labels[:, cropland] == 1)
    parcels = np.unique(ls.obj[cropland])
    assert np.all(ls.crops[parcels, 0] != ls.crops[parcels, 1])
    # the same month a year apart looks different (clean scenes, July 2018 vs July 2019)
    july_2018 = render_scene(ls, ls.surface, ls.obj, 6, 0)
    july_2019 = render_scene(ls, ls.surface, ls.obj, 6, 1)
    ndvi_change = np.abs(_ndvi(july_2018) - _ndvi(july_2019))[cropland]
    assert np.median(ndvi_change) > 0.1
    forest = (ls.surface == Surface.DECIDUOUS) | (ls.surface == Surface.CONIFER)
    assert np.allclose(july_2018[:, forest], july_2019[:, forest])


def test_crop_rotation_is_visible_in_the_images(two_year_aoi: SyntheticAoi) -> None:
    aoi = two_year_aoi
    ls = aoi.landscape
    cropland = (ls.surface == Surface.CROP) & (aoi.labels[6] == 1) & (aoi.labels[18] == 1)
    clear = (aoi.masks[6] == 0) & (aoi.masks[18] == 0) & cropland
    ndvi = np.abs(_ndvi(aoi.images[6]) - _ndvi(aoi.images[18]))
    forest = (ls.surface == Surface.CONIFER) & (aoi.masks[6] == 0) & (aoi.masks[18] == 0)
    assert np.median(ndvi[clear]) > 2 * np.median(ndvi[forest])
