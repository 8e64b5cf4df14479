import itertools
import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from sklearn.metrics import average_precision_score, roc_auc_score

import changescope
from changescope.errors import GridMismatchError, ParameterError
from changescope.evaluate import Truth, evaluate_run, score_metrics
from changescope.grid import PatchGrid
from changescope.run import RunConfig, run_pipeline
from changescope.series import class_table
from changescope.synthetic import make_aoi
from changescope.testing import shared_sample
from changescope.truth import series_truth


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("aoi")
    make_aoi(root, seed=11, size=192, months=6)
    out = root.parent / f"{root.name}_run"
    run_pipeline(root, out, RunConfig(method="distance", patch_size=32), progress=False)
    return root, out


def _independent(root, out, min_fraction=0.05):
    """The documented rules, recomputed from patch_scores.parquet and changescope.truth only."""
    ds = changescope.open(root)
    grid = PatchGrid.for_series(ds, 32)
    truth = series_truth(ds.load(), grid, reference="previous", min_fraction=min_fraction)
    frac = truth.fraction.values
    pos = (truth.changed.values).any(axis=0)
    neg = truth.known.values.all(axis=0) & (np.nan_to_num(frac, nan=1.0) == 0).all(axis=0) & ~pos
    scores = pd.read_parquet(out / "patch_scores.parquet")
    smax = (
        scores.groupby(["row", "col"])["score"]
        .max()
        .unstack()
        .reindex(index=range(grid.n_rows), columns=range(grid.n_cols))
    ).to_numpy(dtype=float)
    return ds, grid, truth, pos, neg, smax


def _fill(s):
    return np.where(np.isfinite(s), s, np.nanmin(s) - 1)


def test_metrics_json_recomputed_independently(small_run):
    root, out = small_run
    returned = evaluate_run(out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["patch"]["auc"] == pytest.approx(returned["patch"]["auc"])
    ds, grid, truth, pos, neg, smax = _independent(root, out)
    keep = pos | neg
    y, s = pos[keep], _fill(smax[keep])
    assert metrics["patch"]["n_pos"] == pos.sum() > 0 and metrics["patch"]["n_neg"] == neg.sum() > 0
    assert metrics["patch"]["n_left_out"] == (~keep).sum()
    assert metrics["patch"]["auc"] == pytest.approx(roc_auc_score(y, s))
    assert metrics["patch"]["ap"] == pytest.approx(average_precision_score(y, s))
    thr = metrics["patch"]["threshold"]
    pred = s >= thr
    tp = (pred & y).sum()
    assert metrics["patch"]["precision"] == pytest.approx(tp / pred.sum())
    assert metrics["patch"]["recall"] == pytest.approx(tp / y.sum())
    assert 2 <= len(metrics["patch"]["roc"]["fpr"]) <= 200
    # by type: the dominant transition at each positive patch's largest change, against all negatives
    at = np.nan_to_num(truth.fraction.values, nan=-1).argmax(axis=0)
    names = class_table(ds)
    fc = np.take_along_axis(truth.from_class.values, at[None], 0)[0]
    tc = np.take_along_axis(truth.to_class.values, at[None], 0)[0]
    types = np.array(
        [
            [f"{names[a]} -> {names[b]}" if a >= 0 else "" for a, b in zip(r1, r2, strict=True)]
            for r1, r2 in zip(fc, tc, strict=True)
        ]
    )
    assert set(metrics["by_type"]) == set(types[pos])
    assert sum(m["n_pos"] for m in metrics["by_type"].values()) == pos.sum()
    for kind, m in metrics["by_type"].items():
        sel = (pos & (types == kind)) | neg
        assert m["auc"] == pytest.approx(roc_auc_score(pos[sel], _fill(smax[sel])))
    # by date: changes appearing at that date, scored at that date
    scores = pd.read_parquet(out / "patch_scores.parquet")
    for when, m in metrics["by_date"].items():
        i = list(pd.DatetimeIndex(truth.time.values).strftime("%Y-%m-%d")).index(when)
        day = scores[scores.time == pd.Timestamp(when)].set_index(["row", "col"])["score"]
        s_day = day.unstack().reindex(index=range(grid.n_rows), columns=range(grid.n_cols)).to_numpy(dtype=float)
        ch = truth.changed.values[i]
        sel = ch | neg
        assert m["n_pos"] == ch.sum()
        assert m["auc"] == pytest.approx(roc_auc_score(ch[sel], _fill(s_day[sel])))
    # pixel level: painted max scores at the patch threshold vs labels changed anywhere
    lab = ds["labels"].values
    changed_px = np.zeros(lab.shape[1:], bool)
    for a, b in itertools.pairwise(lab):
        changed_px |= (a >= 0) & (b >= 0) & (a != b)
    painted = grid.paint(smax)
    p_pix = np.nan_to_num(painted, nan=-np.inf) >= thr
    tp_px = (p_pix & changed_px).sum()
    assert metrics["pixel"]["precision"] == pytest.approx(tp_px / p_pix.sum())
    assert metrics["pixel"]["recall"] == pytest.approx(tp_px / changed_px.sum())
    assert metrics["params"]["min_fraction"] == 0.05 and metrics["params"]["method"] == "distance"
    assert (out / "figures" / "roc.png").stat().st_size > 1000 and (out / "figures" / "pr.png").exists()


def test_truth_path_and_min_fraction(small_run, tmp_path):
    root, out = small_run
    default = evaluate_run(out)
    explicit = evaluate_run(out, truth=root)
    assert explicit["patch"]["auc"] == pytest.approx(default["patch"]["auc"])
    assert explicit["params"]["truth"] == str(root)
    strict = evaluate_run(out, min_fraction=0.5)
    assert strict["patch"]["n_pos"] <= default["patch"]["n_pos"]


def test_grid_mismatch_names_both_shapes(small_run, tmp_path):
    _, out = small_run
    other = tmp_path / "other"
    make_aoi(other, seed=2, size=128, months=3)
    with pytest.raises(GridMismatchError, match=r"EPSG:32633.*do not overlap"):
        evaluate_run(out, truth=other)


def test_no_run_and_no_truth(tmp_path):
    with pytest.raises(ParameterError, match="no finished run"):
        evaluate_run(tmp_path)


def _truth_case():
    """8x8 pixels, 4x4 patches of 2 px; two truth dates; classes 0 = forest, 1 = water, 2 = urban."""
    grid = PatchGrid(size=2, height=8, width=8)
    times = pd.to_datetime(["2020-02-01", "2020-03-01"])
    shape = (2, 4, 4)
    fraction = np.zeros(shape)
    frm = np.full(shape, -1)
    to = np.full(shape, -1)
    fraction[0, 0, 0], frm[0, 0, 0], to[0, 0, 0] = 1.0, 0, 1  # forest -> water at date 0
    fraction[1, 1, 1], frm[1, 1, 1], to[1, 1, 1] = 0.5, 0, 2  # forest -> urban at date 1
    fraction[1, 2, 2], frm[1, 2, 2], to[1, 2, 2] = 0.25, 0, 2
    fraction[1, 3, 3] = 0.02  # too little: left out
    known = np.ones(shape, bool)
    known[:, 3, 0] = False  # unknown: left out
    patches = xr.Dataset(
        {
            "fraction": (("time", "row", "col"), fraction),
            "known": (("time", "row", "col"), known),
            "changed": (("time", "row", "col"), fraction >= 0.05),
            "from_class": (("time", "row", "col"), frm),
            "to_class": (("time", "row", "col"), to),
        },
        coords={"time": times, "row": range(4), "col": range(4)},
    )
    px = np.zeros((8, 8), bool)
    px[0:2, 0:2] = True
    px[2:4, 2:4] = True
    return Truth(grid, patches, px, np.ones((8, 8), bool), "labels", {0: "forest", 1: "water", 2: "urban"}, "hand")


def test_by_type_by_date_and_pixels_on_a_constructed_case():
    truth = _truth_case()
    s = np.zeros((3, 4, 4))
    s[:] = np.linspace(0, 1, 16).reshape(4, 4) * 0.1  # background
    s[1, 0, 0] = 5.0  # forest -> water found at its date
    s[2, 1, 1] = 0.05  # forest -> urban missed (below several negatives)
    s[2, 2, 2] = 3.0  # forest -> urban found
    s[:, 2, 3] = np.nan  # never scored: ranks last
    times = pd.to_datetime(["2020-01-01", "2020-02-01", "2020-03-01"])
    tt, rr, cc = np.meshgrid(range(3), range(4), range(4), indexing="ij")
    frame = pd.DataFrame({"row": rr.ravel(), "col": cc.ravel(), "time": times[tt.ravel()], "score": s.ravel()})
    m = score_metrics(frame, truth)
    assert m["patch"]["n_pos"] == 3 and m["patch"]["n_neg"] == 11 and m["patch"]["n_left_out"] == 2
    assert set(m["by_type"]) == {"forest -> water", "forest -> urban"}
    assert m["by_type"]["forest -> water"]["auc"] == 1.0 and m["by_type"]["forest -> water"]["n_pos"] == 1
    assert m["by_type"]["forest -> urban"]["n_pos"] == 2 and m["by_type"]["forest -> urban"]["auc"] < 1.0
    assert set(m["by_date"]) == {"2020-02-01", "2020-03-01"}
    assert m["by_date"]["2020-02-01"]["n_pos"] == 1 and m["by_date"]["2020-02-01"]["auc"] == 1.0
    # best F1: the two high scores (3.0, 5.0) -> P 1, R 2/3, F1 0.8 at threshold 3.0
    assert m["patch"]["threshold"] == 3.0 and m["patch"]["best_f1"] == pytest.approx(0.8)
    # pixels >= 3.0: patches (0,0) and (2,2) = 8 px, truth (0,0) and (1,1) -> precision 0.5, recall 0.5
    assert m["pixel"]["precision"] == 0.5 and m["pixel"]["recall"] == 0.5 and m["pixel"]["n_pixels"] == 64


def test_mask_truth_on_a_constructed_case(tmp_path):
    from changescope.evaluate.evaluate import load_truth
    from changescope.io.writers import write_geotiff
    from changescope.testing import TEST_CRS, make_test_series, utm_transform

    ds = make_test_series(seed=0, n_time=2, height=64, width=64)
    mask = np.ones((64, 64), np.uint8)  # OSCD: 1 = no change, 2 = change
    mask[:32, :32] = 2
    path = write_geotiff(tmp_path / "x-cm.tif", mask[None], crs=TEST_CRS, transform=utm_transform())
    truth = load_truth(ds, path, 32)
    assert truth.kind == "change_mask" and truth.patches.changed.values.sum() == 1
    frame = pd.DataFrame(
        {"row": [0, 0, 1, 1], "col": [0, 1, 0, 1], "time": ds.time.values[-1], "score": [2.0, 1, 0, 0]}
    )
    m = score_metrics(frame, truth)
    assert m["patch"]["auc"] == 1.0 and list(m["by_type"]) == ["change"] and m["pixel"]["f1"] == 1.0
    # a georeferenced truth larger than the series is put on the series' grid (the crop), with a warning
    with pytest.warns(UserWarning, match="another grid"):
        crop = load_truth(ds.isel(y=slice(0, 32), x=slice(0, 32)), path, 16)
    assert crop.patches.changed.values.all() and crop.grid.shape == (2, 2)
    with pytest.warns(UserWarning, match="another grid"):
        clear = load_truth(ds.isel(y=slice(32, 64), x=slice(32, 64)), path, 16)
    assert not clear.patches.changed.values.any()


@pytest.mark.realdata
@pytest.mark.slow
def test_oscd_city_patch_auc_and_pixel_f1(shared_data, tmp_path):
    city = shared_sample(shared_data, "oscd/images/bercy")
    out = tmp_path / "run"
    run_pipeline(city, out, RunConfig(method="distance", patch_size=16), progress=False)
    m = evaluate_run(out)
    assert m["params"]["truth_kind"] == "change_mask"
    assert m["patch"]["auc"] is not None and 0.0 <= m["patch"]["auc"] <= 1.0
    assert m["patch"]["n_pos"] > 0 and list(m["by_type"]) == ["change"]
    assert 0.0 <= m["pixel"]["f1"] <= 1.0 and m["pixel"]["n_changed"] > 0
    cm = shared_sample(shared_data, "oscd/train_labels/bercy/cm/bercy-cm.tif")
    again = evaluate_run(out, truth=cm)
    assert again["patch"]["auc"] == pytest.approx(m["patch"]["auc"])
    assert again["pixel"]["f1"] == pytest.approx(m["pixel"]["f1"])
