"""``changescope multimodal default-config | train | predict | threshold``: end to end on a tiny BRIGHT tree."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.errors import NotGeoreferencedWarning

from changescope.cli.app import app
from changescope.io.writers import write_geotiff
from changescope.multimodal.config import DEFAULT_CONFIG_YAML, load_config
from changescope.multimodal.layout import bright_paths
from changescope.multimodal.synthetic import SyntheticPair, write_bright

from .cli_helpers import fails, ok, runner, train_tiny

EVENTS = ("la_palma-volcano", "turkey-earthquake")


def _png(path: Path, array: np.ndarray) -> Path:
    arr = array if array.ndim == 3 else array[None]
    profile = {"driver": "PNG", "width": arr.shape[2], "height": arr.shape[1], "count": arr.shape[0]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", dtype="uint8", **profile) as dst:
            dst.write(arr)
    return path


class Run:
    """The tiny BRIGHT tree, its index, config and trained model (built once per module)."""

    def __init__(self, root: Path, pairs: list[SyntheticPair], config: Path, model: Path, train_output: str) -> None:
        self.root, self.pairs, self.config, self.model, self.train_output = root, pairs, config, model, train_output

    def paths(self, pair: SyntheticPair) -> tuple[Path, Path, Path]:
        return bright_paths(self.root, pair.id)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    base = tmp_path_factory.mktemp("mm")
    root = base / "bright"
    pairs = write_bright(root, n=4, size=64, seed=31, events=EVENTS)
    config, model, output = train_tiny(root, base, batches_per_epoch=2)
    return Run(root, pairs, config, model, output)


def test_default_config_prints_writes_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert runner.invoke(app, ["multimodal", "default-config"]).output == DEFAULT_CONFIG_YAML
    out = tmp_path / "cfg.yaml"
    ok(["default-config", "--out", str(out)])
    assert out.read_text() == DEFAULT_CONFIG_YAML and load_config(out).optim.lr == 1e-5
    out.write_text("mine\n")
    assert "already exists; pass --force" in fails(["multimodal", "default-config", "--out", str(out)], capsys)
    assert out.read_text() == "mine\n"
    ok(["default-config", "--out", str(out), "--force"])
    assert out.read_text() == DEFAULT_CONFIG_YAML


def test_train_reports_the_best_epoch_and_checkpoint(run: Run) -> None:
    history = json.loads((run.model.parent / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    best = min(history, key=lambda h: h["val_loss"])
    assert f"best epoch {best['epoch']}" in run.train_output
    assert f"best val loss {best['val_loss']:.4f}" in run.train_output
    assert run.model.is_file() and str(run.model.name) in run.train_output
    # a finished run is not overwritten; --resume with the same epochs is a no-op that still reports
    out = ok(["train", "--config", str(run.config), "--resume"])
    assert f"best epoch {best['epoch']}" in out


def test_predict_and_threshold_end_to_end(run: Run, tmp_path: Path) -> None:
    pair = next(p for p in run.pairs if (p.target > 1).any() and (p.target <= 1).any())
    pre, post, target = run.paths(pair)
    out = tmp_path / "map.tif"
    ok(["predict", "--model", str(run.model), "--pre", str(pre), "--post", str(post), "--out", str(out)])
    with rasterio.open(out) as src, rasterio.open(pre) as ref:
        assert src.crs == ref.crs and src.crs is not None
        assert src.transform == ref.transform
        assert (src.height, src.width, src.count) == (ref.height, ref.width, 1)
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        scores = src.read(1)
    assert np.isfinite(scores).all() and scores.min() >= 0.0 and scores.max() <= 2.0
    assert scores.std() > 0
    dome = tmp_path / "dome.tif"
    args = ["--pre", str(pre), "--post", str(post), "--window", "32", "--stride", "8", "--weighting", "dome"]
    ok(["predict", "--model", str(run.model), *args, "--out", str(dome)])
    with rasterio.open(dome) as src:
        assert src.read(1).shape == scores.shape

    sweep_path = tmp_path / "sweep.json"
    text = ok(
        ["threshold", "--scores", str(out), "--truth", str(target), "--truth-kind", "damage", "--out", str(sweep_path)]
    )
    sweep = json.loads(sweep_path.read_text())
    assert 0.0 <= sweep["auc"] <= 1.0 and f"ROC AUC {sweep['auc']:.4f}" in text
    assert sweep["n_positive"] == int((pair.target > 1).sum())
    assert sweep["n_positive"] + sweep["n_negative"] == pair.target.size
    assert set(sweep["best"]) == {"accuracy", "balanced_accuracy", "precision", "recall", "f1", "youden"}
    assert all(0.0 <= b["value"] <= 1.0 for k, b in sweep["best"].items() if k != "youden")
    assert f"{sweep['best']['f1']['threshold']:.4f}" in text
    curves = sweep["curves"]
    assert len(curves["fpr"]) == len(curves["thresholds"]) == sweep["n_thresholds"]
    png = sweep_path.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a binary change mask (default --truth-kind change) over the same map
    mask = tmp_path / "change.tif"
    write_geotiff(mask, pair.change.astype(np.uint8), crs=pair.crs, transform=pair.transform)
    ok(["threshold", "--scores", str(out), "--truth", str(mask), "--out", str(tmp_path / "c.json")])
    assert json.loads((tmp_path / "c.json").read_text())["n_positive"] == int(pair.change.sum())


def test_predict_without_georeference_and_sar_first(run: Run, tmp_path: Path) -> None:
    pair = run.pairs[0]
    optical = _png(tmp_path / "optical.png", pair.optical)
    sar = _png(tmp_path / "sar.png", np.clip(pair.sar * 60.0, 0, 255).astype(np.uint8))
    out = tmp_path / "plain.tif"
    args = ["--pre", str(sar), "--post", str(optical), "--pre-modality", "sar", "--post-modality", "optical"]
    text = ok(["predict", "--model", str(run.model), *args, "--out", str(out)])
    assert "without georeference" in text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(out) as src:
            assert src.crs is None and src.transform.is_identity
            values = src.read(1)
    assert values.shape == pair.optical.shape[1:]
    assert np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 2.0


def test_bad_inputs_get_one_line_errors(run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = fails(["multimodal", "train", "--config", str(tmp_path / "none.yaml")], capsys)
    assert "does not exist; write one with `changescope multimodal default-config`" in missing

    data = yaml.safe_load(run.config.read_text())
    cfg = tmp_path / "noindex.yaml"
    cfg.write_text(yaml.safe_dump(data | {"data": data["data"] | {"index": str(tmp_path / "no.parquet")}}))
    assert "build it with `changescope multimodal index" in fails(["multimodal", "train", "-c", str(cfg)], capsys)
    cfg.write_text(yaml.safe_dump(data | {"model": data["model"] | {"context": 64}}))
    assert "make them equal" in fails(["multimodal", "train", "-c", str(cfg)], capsys)

    pair = run.pairs[0]
    pre, post, target = run.paths(pair)
    small = tmp_path / "small_sar.tif"
    write_geotiff(small, pair.sar[..., :48, :48], crs=pair.crs, transform=pair.transform)
    base = ["multimodal", "predict", "--model", str(run.model), "--out", str(tmp_path / "m.tif")]
    err = fails([*base, "--pre", str(pre), "--post", str(small)], capsys)
    assert "(48, 48)" in err and "(64, 64)" in err and "co-registered" in err
    err = fails([*base, "--pre", str(pre), "--post", str(post), "--post-modality", "optical"], capsys)
    assert "one optical and one SAR" in err
    err = fails([*base, "--pre", str(post), "--post", str(pre)], capsys)
    assert "needs 3 (RGB)" in err
    no_model = ["multimodal", "predict", "--model", str(tmp_path / "no.safetensors"), *base[4:]]
    assert "does not exist" in fails([*no_model, "--pre", str(pre), "--post", str(post)], capsys)

    scores = tmp_path / "scores.tif"
    write_geotiff(scores, np.zeros((64, 64), dtype=np.float32), crs=pair.crs, transform=pair.transform)
    wrong = tmp_path / "mask48.tif"
    write_geotiff(wrong, np.zeros((48, 48), dtype=np.uint8), crs=pair.crs, transform=pair.transform)
    args = ["multimodal", "threshold", "--scores", str(scores), "--out", str(tmp_path / "s.json")]
    err = fails([*args, "--truth", str(wrong)], capsys)
    assert "(48, 48)" in err and "(64, 64)" in err and "pass the mask of this pair" in err
    nothing = tmp_path / "nothing.tif"
    write_geotiff(nothing, np.zeros((64, 64), dtype=np.uint8), crs=pair.crs, transform=pair.transform)
    assert "a sweep needs both classes" in fails([*args, "--truth", str(nothing)], capsys)
    assert "1-band map" in fails([*args[:3], str(pre), *args[4:], "--truth", str(target)], capsys)


def test_predict_paints_rois_at_half_the_roi_by_default(run: Run, tmp_path: Path) -> None:
    from changescope.multimodal.model import load_model
    from changescope.multimodal.pairs import normalise_pair, pair_sample, read_pair_arrays
    from changescope.multimodal.predict import change_map

    pre, post, _ = run.paths(run.pairs[0])
    out, whole = tmp_path / "roi.tif", tmp_path / "window.tif"
    ok(
        [
            "predict",
            "--model",
            str(run.model),
            "--pre",
            str(pre),
            "--post",
            str(post),
            "--out",
            str(out),
            "--paint",
            "roi",
        ]
    )
    ok(["predict", "--model", str(run.model), "--pre", str(pre), "--post", str(post), "--out", str(whole)])
    net, _ = load_model(run.model)
    optical, sar, _ = normalise_pair(read_pair_arrays(pair_sample(pre, post)))
    roi = int(net.config.roi)
    expected = change_map(net, optical, sar, window=net.config.context, stride=roi // 2, paint="roi")
    with rasterio.open(out) as src, rasterio.open(whole) as other:
        got, tags, windowed = src.read(1), src.tags(), other.read(1)
        assert tags["paint"] == "roi" and tags["stride"] == str(roi // 2)
        assert other.tags()["paint"] == "window" and other.tags()["stride"] == "64"
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert not np.allclose(got, windowed)  # the two paintings differ


def test_predict_tta_averages_the_views_and_records_them(run: Run, tmp_path: Path) -> None:
    from changescope.multimodal.model import load_model
    from changescope.multimodal.pairs import normalise_pair, pair_sample, read_pair_arrays
    from changescope.multimodal.predict import change_map

    pre, post, _ = run.paths(run.pairs[0])
    out = tmp_path / "tta.tif"
    ok(["predict", "--model", str(run.model), "--pre", str(pre), "--post", str(post), "--out", str(out), "--tta", "4"])
    net, _ = load_model(run.model)
    optical, sar, _ = normalise_pair(read_pair_arrays(pair_sample(pre, post)))
    expected = change_map(net, optical, sar, window=net.config.context, stride=64, tta=4)
    single = change_map(net, optical, sar, window=net.config.context, stride=64)
    with rasterio.open(out) as src:
        got, tags = src.read(1), src.tags()
    assert tags["tta"] == "4"
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert not np.allclose(got, single)
