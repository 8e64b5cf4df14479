"""Semantic change events: the labels inside each polygon change from the event's month on, and not before."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import rasterio.features

from changescope.synthetic import CLASS_NAMES, EVENT_TYPES, SyntheticAoi, generate_aoi
from changescope.synthetic.events import state_at
from changescope.synthetic.radiometry import render_scene

CLASS_ID = {name: i for i, name in enumerate(CLASS_NAMES)}


def _polygon_mask(aoi: SyntheticAoi, geometry: object) -> np.ndarray:
    size = aoi.params.size
    burnt = rasterio.features.rasterize([(geometry, 1)], out_shape=(size, size), transform=aoi.transform, dtype="uint8")
    return np.asarray(burnt, dtype=bool)


def _index(aoi: SyntheticAoi, date: pd.Timestamp) -> int:
    return int(np.flatnonzero(aoi.dates == date)[0])


def test_every_type_is_present(aoi: SyntheticAoi) -> None:
    assert set(aoi.events["type"]) == set(EVENT_TYPES)
    assert aoi.events["event_id"].is_unique


def test_events_start_after_the_first_three_months(aoi: SyntheticAoi) -> None:
    assert (aoi.events["month"] >= aoi.dates[3]).all()
    ends = aoi.events["end_month"].dropna()
    assert (ends <= aoi.dates[-1]).all()
    assert (ends > aoi.events.loc[ends.index, "month"]).all()


def test_polygons_are_valid_in_the_crs_and_match_the_masks(aoi: SyntheticAoi) -> None:
    assert aoi.events.crs.to_epsg() == 32633
    for ev, geom in zip(aoi.event_list, aoi.events.geometry, strict=True):
        assert geom.geom_type == "Polygon" and geom.is_valid
        expected = np.zeros((aoi.params.size,) * 2, dtype=bool)
        expected[ev.window] = ev.mask
        assert np.array_equal(_polygon_mask(aoi, geom), expected)


def test_events_do_not_overlap(aoi: SyntheticAoi) -> None:
    for a, b in itertools.combinations(aoi.events.geometry, 2):
        assert not a.intersects(b)


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_labels_change_inside_the_polygon_from_the_event_month(aoi: SyntheticAoi, kind: str) -> None:
    rows = aoi.events[aoi.events["type"] == kind]
    assert len(rows) >= 1
    for _, row in rows.iterrows():
        inside = _polygon_mask(aoi, row.geometry)
        before = aoi.labels[0][inside]
        assert (before == CLASS_ID[row["from_class"]]).mean() > 0.5
        start = _index(aoi, row["month"])
        end = None if pd.isna(row["end_month"]) else _index(aoi, row["end_month"])
        change = end if kind == "drought" else start
        assert change is not None
        for t in range(aoi.params.months):
            labels = aoi.labels[t][inside]
            if t < change:
                assert np.array_equal(labels, before), (kind, t)
            elif end is not None and t >= end and kind == "flooding":
                assert np.array_equal(labels, before), (kind, t)  # the water receded
            elif end is not None and t >= end and kind != "drought":
                assert np.all(labels == CLASS_ID[row["end_class"]]), (kind, t)
            else:
                assert np.all(labels == CLASS_ID[row["to_class"]]), (kind, t)
                assert np.all(labels != before), (kind, t)


def test_labels_outside_events_never_change(aoi: SyntheticAoi) -> None:
    touched = np.zeros((aoi.params.size,) * 2, dtype=bool)
    for geom in aoi.events.geometry:
        touched |= _polygon_mask(aoi, geom)
    assert np.all(aoi.labels[:, ~touched] == aoi.labels[0, ~touched])


def test_type_rules(aoi: SyntheticAoi) -> None:
    by_type = {row["type"]: row for _, row in aoi.events.iterrows()}
    assert by_type["deforestation"]["from_class"] == "forest & other vegetation"
    assert by_type["deforestation"]["to_class"] == "soil"
    assert by_type["construction"]["to_class"] == "impervious surface"
    assert by_type["farmland_to_builtup"]["from_class"] == "agriculture"
    assert by_type["farmland_to_builtup"]["to_class"] == "impervious surface"
    assert by_type["flooding"]["to_class"] == "water"
    assert by_type["drought"]["to_class"] == "soil"


def test_drought_lowers_ndvi_gradually(aoi: SyntheticAoi) -> None:
    ev = next(e for e in aoi.event_list if e.type == "drought")
    assert ev.end is not None
    dates = aoi.dates
    gaps = []
    for t in range(aoi.params.months):
        date = dates[t]
        surface, obj, dryness = state_at(aoi.landscape, aoi.event_list, t)
        clean, _, _ = state_at(aoi.landscape, [], t)
        with_drought = render_scene(aoi.landscape, surface, obj, date.month - 1, 0, dryness)[:, *ev.window]
        without = render_scene(aoi.landscape, clean, aoi.landscape.obj, date.month - 1, 0, None)[:, *ev.window]

        def ndvi(x: np.ndarray) -> float:
            red, nir = x[2][ev.mask], x[3][ev.mask]
            return float(np.mean((nir - red) / (nir + red)))

        gaps.append(ndvi(without) - ndvi(with_drought))
        if t >= ev.start:
            assert with_drought[2][ev.mask].mean() > without[2][ev.mask].mean()  # red up
            if ndvi(without) > 0.5:  # NIR falls wherever there is green vegetation to dry out
                assert with_drought[3][ev.mask].mean() < without[3][ev.mask].mean()
    gaps_arr = np.array(gaps)
    assert np.allclose(gaps_arr[: ev.start], 0.0)
    assert np.all(gaps_arr[ev.start : ev.end + 1] > 0)
    assert np.all(np.diff([ev.dryness(t) for t in range(ev.start, ev.end + 1)]) > 0)


@pytest.mark.slow
def test_default_size_has_several_events_of_each_type() -> None:
    big = generate_aoi(seed=0)
    counts = big.events["type"].value_counts()
    assert set(counts.index) == set(EVENT_TYPES)
    assert counts.min() >= 3
    assert (big.events["month"] >= big.dates[3]).all()
