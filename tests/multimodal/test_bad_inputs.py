"""The bad inputs of issue 13, each a one-line CLI error naming the file or parameter and what to do.

Mismatched pre/post sizes, a mask of the wrong shape, an unknown disaster, an empty split and a SAR file given as
optical, through ``evaluate`` (and ``index``); plus the errors of the new verbs. All are raised before a model is
loaded, so no training is needed here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from changescope.io.writers import write_geotiff
from changescope.multimodal.layout import DFC25_DIR, SPLIT_FILES, bright_paths
from changescope.multimodal.synthetic import SyntheticPair, write_bright

from .cli_helpers import fails


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SyntheticPair]]:
    root = tmp_path_factory.mktemp("bad") / "bright"
    return root, write_bright(root, n=2, size=64, seed=3, events=("libya-flood",))


def _evaluate(tmp_path: Path, *args: str) -> list[str]:
    model = tmp_path / "never_loaded.safetensors"
    return ["multimodal", "evaluate", "--model", str(model), "--out", str(tmp_path / "ev"), *args]


def test_mismatched_sizes_wrong_mask_and_sar_as_optical(
    tree: tuple[Path, list[SyntheticPair]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, pairs = tree
    pair = pairs[0]
    pre, post, target = bright_paths(root, pair.id)
    small = tmp_path / "small_sar.tif"
    write_geotiff(small, pair.sar[..., :40, :48], crs=pair.crs, transform=pair.transform)
    err = fails(_evaluate(tmp_path, "--pre", str(pre), "--post", str(small), "--truth", str(target)), capsys)
    assert "small_sar.tif" in err and "(40, 48)" in err and "(64, 64)" in err and "co-registered" in err

    mask = tmp_path / "mask.tif"
    write_geotiff(mask, np.zeros((32, 64), np.uint8), crs=pair.crs, transform=pair.transform)
    err = fails(_evaluate(tmp_path, "--pre", str(pre), "--post", str(post), "--truth", str(mask)), capsys)
    assert "mask.tif" in err and "(32, 64)" in err and "pass the mask of this pair" in err

    err = fails(_evaluate(tmp_path, "--pre", str(post), "--post", str(pre), "--truth", str(target)), capsys)
    assert "post_disaster.tif" in err and "has 1 band(s)" in err and "pre_modality='sar'" in err


def test_unknown_disaster_and_empty_split(
    tree: tuple[Path, list[SyntheticPair]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = tree
    err = fails(_evaluate(tmp_path, "--root", str(root), "--select-disaster", "mars-quake"), capsys)
    assert "'mars-quake' is not in this data" in err and "['libya-flood']" in err

    dfc = tmp_path / "dfc"
    write_bright(dfc, n=3, size=64, seed=1, layout="dfc25")
    (dfc / DFC25_DIR / SPLIT_FILES["val"]).write_text("# nothing left\n")
    err = fails(_evaluate(tmp_path, "--root", str(dfc), "--split", "val"), capsys)
    assert "split 'val' is empty" in err and SPLIT_FILES["val"] in err and "restore the file" in err
    err = fails(_evaluate(tmp_path, "--root", str(dfc), "--split", "holdout"), capsys)
    assert "'holdout' is not a DFC25 split" in err


def test_new_verbs_name_what_to_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = fails(["multimodal", "report", str(tmp_path)], capsys)
    assert "evaluation.json" in err and "run `changescope multimodal evaluate" in err
    err = fails(_evaluate(tmp_path), capsys)
    assert "give --root DIR" in err
    err = fails(_evaluate(tmp_path, "--pre", "a.tif", "--post", "b.tif", "--truth", "c.tif", "--split", "val"), capsys)
    assert "--split applies to --root only" in err


def test_explore_without_umap_learn_says_how_to_get_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "umap" else real(name, *a))
    args = ["multimodal", "explore", "--model", "m", "--index", "i.parquet", "--out", str(tmp_path)]
    err = fails([*args, "--method", "pca,umap"], capsys)
    assert "umap-learn" in err and "pip install umap-learn" in err and "'explore' extra" in err and "drop umap" in err
