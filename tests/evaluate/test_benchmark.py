import json

import pandas as pd
import pytest

from changescope.errors import ParameterError
from changescope.evaluate import benchmark
from changescope.evaluate.benchmark import COLUMNS, available_baselines
from changescope.rundir import RunDir
from changescope.synthetic import make_aoi
from changescope.testing import shared_sample


@pytest.fixture(scope="module")
def aoi(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_aoi")
    make_aoi(root, seed=21, size=160, months=6)
    return root


def test_benchmark_missing_weights_row_and_reused_embeddings(aoi, tmp_path):
    out = tmp_path / "bench"
    df = benchmark(
        aoi,
        out,
        ["spectral", "resnet18"],
        "distance,lof",
        ["cva"],
        weights={"resnet18": "/nonexistent"},
        patch_size=32,
    )
    assert list(df.columns) == COLUMNS
    assert list(df["name"]) == [
        "spectral_distance",
        "spectral_lof",
        "resnet18_distance",
        "resnet18_lof",
        "baseline_cva",
    ]
    spectral = df[df.encoder == "spectral"]
    assert (spectral.status == "ok").all() and spectral.auc.between(0, 1).all()
    # the lof run resumed the distance run's embeddings: same embedding time recorded, files present
    assert spectral.embed_s.nunique() == 1 and not (out / "spectral_lof" / "embeddings.zarr").exists()
    reused = RunDir(out / "spectral_lof").embeddings_store()
    assert reused == out / "spectral_distance" / "embeddings.zarr" and reused.is_dir()
    for name in ("spectral_distance", "spectral_lof"):
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert df.set_index("name").loc[name, "auc"] == pytest.approx(metrics["patch"]["auc"])
    missing = df[df.encoder == "resnet18"]
    assert missing.status.str.contains("WeightsNotFoundError").all() and missing.auc.isna().all()
    cva = df.set_index("name").loc["baseline_cva"]
    if available_baselines()[1] is None:
        assert cva.status == "ok" and 0 <= cva.auc <= 1
        assert (out / "baseline_cva" / "patch_scores.parquet").exists()
    else:
        assert "unavailable" in cva.status
    on_disk = pd.read_csv(out / "benchmark.csv")
    assert list(on_disk["name"]) == list(df["name"])
    md = (out / "benchmark.md").read_text()
    assert md.startswith("| name |") and "resnet18_distance" in md and "WeightsNotFoundError" in md
    payload = json.loads((out / "benchmark.json").read_text())
    assert len(payload["rows"]) == 5 and "spectral_distance" in payload["roc"]
    assert (out / "roc.png").stat().st_size > 1000


def test_benchmark_bad_parameters(aoi, tmp_path):
    with pytest.raises(ParameterError, match="methods="):
        benchmark(aoi, tmp_path, ["spectral"], ["knn"])
    with pytest.raises(ParameterError, match="weights given for"):
        benchmark(aoi, tmp_path, ["spectral"], ["distance"], weights={"dinov2_s": "x"})
    with pytest.raises(ParameterError, match="both empty"):
        benchmark(aoi, tmp_path, [], ["distance"])


def test_unknown_baseline_row(aoi, tmp_path):
    df = benchmark(aoi, tmp_path / "b", [], [], ["nope"])
    assert len(df) == 1 and df.status.iloc[0] != "ok" and pd.isna(df.auc.iloc[0])


@pytest.mark.realdata
@pytest.mark.slow
def test_benchmark_on_oscd_with_baselines(shared_data, tmp_path):
    city = shared_sample(shared_data, "oscd/images/bercy")
    df = benchmark(
        city, tmp_path / "b", ["spectral"], ["distance", "lof"], ["cva", "irmad", "pcakmeans"], patch_size=16
    )
    rows = df.set_index("name")
    assert rows.loc["spectral_distance", "status"] == "ok" and 0 <= rows.loc["spectral_distance", "auc"] <= 1
    assert "two-date" in rows.loc["spectral_lof", "status"]  # lof needs reference dates: the row says so
    if available_baselines()[1] is None:
        for name in ("baseline_cva", "baseline_irmad", "baseline_pcakmeans"):
            assert rows.loc[name, "status"] == "ok" and 0 <= rows.loc[name, "auc"] <= 1
            assert 0 <= rows.loc[name, "pixel_f1"] <= 1
    assert (tmp_path / "b" / "benchmark.md").exists()
