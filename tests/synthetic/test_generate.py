"""The in-memory generator: determinism, parameters, array contracts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from changescope.errors import ParameterError
from changescope.series import validate_series
from changescope.synthetic import CLASS_NAMES, SyntheticAoi, generate_aoi
from changescope.synthetic.generate import one_hot


def test_same_seed_gives_identical_arrays() -> None:
    a = generate_aoi(seed=5, size=96, months=5)
    b = generate_aoi(seed=5, size=96, months=5)
    assert np.array_equal(a.images, b.images)
    assert np.array_equal(a.masks, b.masks)
    assert np.array_equal(a.labels, b.labels)
    assert a.nuisances == b.nuisances
    assert a.events.drop(columns="geometry").equals(b.events.drop(columns="geometry"))
    assert all(ga.equals_exact(gb, 0) for ga, gb in zip(a.events.geometry, b.events.geometry, strict=True))


def test_different_seed_differs() -> None:
    a = generate_aoi(seed=5, size=96, months=3)
    b = generate_aoi(seed=6, size=96, months=3)
    assert not np.array_equal(a.images, b.images)
    assert not np.array_equal(a.labels, b.labels)


def test_shapes_dtypes_and_dates(aoi: SyntheticAoi) -> None:
    assert aoi.images.shape == (12, 4, 192, 192)
    assert aoi.images.dtype == np.uint16
    assert aoi.masks.shape == aoi.labels.shape == (12, 192, 192)
    assert aoi.masks.dtype == aoi.labels.dtype == np.uint8
    assert list(aoi.dates) == list(pd.date_range("2018-01-01", periods=12, freq="MS"))
    assert aoi.transform.a == 3.0 and aoi.transform.e == -3.0
    assert aoi.crs == "EPSG:32633"


def test_reflectance_range_and_no_nodata(aoi: SyntheticAoi) -> None:
    assert aoi.images.min() >= 1  # 0 is nodata
    assert aoi.images.max() <= 10_000
    refl = aoi.images[:, :, aoi.masks[0] == 0].astype(float) * 1e-4
    assert 0.01 < float(np.median(refl)) < 0.3


def test_labels_cover_the_expected_classes(aoi: SyntheticAoi) -> None:
    present = set(np.unique(aoi.labels[0]).tolist())
    assert {0, 1, 2, 3, 4, 5} <= present
    assert 6 not in present  # no snow & ice is generated
    assert aoi.labels.max() < len(CLASS_NAMES)


def test_one_hot_has_exactly_one_255_per_pixel(aoi: SyntheticAoi) -> None:
    encoded = one_hot(aoi.labels[3])
    assert encoded.shape == (7, 192, 192)
    assert set(np.unique(encoded).tolist()) <= {0, 255}
    assert np.all((encoded == 255).sum(axis=0) == 1)
    assert np.array_equal(encoded.argmax(axis=0), aoi.labels[3])


def test_to_series_honours_the_contract(aoi: SyntheticAoi) -> None:
    ds = validate_series(aoi.to_series())
    assert list(ds["band"].values) == ["blue", "green", "red", "nir"]
    assert ds.rio.crs.to_epsg() == 32633
    assert np.allclose(ds["scale"].values, 1e-4)
    assert np.array_equal(ds["valid"].values, aoi.masks == 0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"size": 32}, "size"),
        ({"size": 63}, "size"),
        ({"months": 1}, "months"),
        ({"months": 0}, "months"),
        ({"seed": -1}, "seed"),
        ({"start": "2018-01-15"}, "start"),
        ({"start": "not a date"}, "start"),
        ({"aoi": "bad/name"}, "aoi"),
        ({"events_per_type": -2}, "events_per_type"),
    ],
)
def test_bad_parameters_name_the_parameter(kwargs: dict[str, object], name: str) -> None:
    params = {"size": 64, "months": 2, **kwargs}
    with pytest.raises(ParameterError, match=rf"^{name}="):
        generate_aoi(**params)  # type: ignore[arg-type]


def test_smallest_aoi_works() -> None:
    small = generate_aoi(seed=0, size=64, months=2)
    assert small.images.shape == (2, 4, 64, 64)
    assert (small.events["month"] == small.dates[1]).all()


def test_no_events_when_asked() -> None:
    quiet = generate_aoi(seed=0, size=64, months=4, events_per_type=0)
    assert len(quiet.events) == 0
    assert np.array_equal(quiet.labels[0], quiet.labels[-1])
