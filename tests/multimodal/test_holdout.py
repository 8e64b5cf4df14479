"""``multimodal evaluate --holdout INDEX``: a region-split pair is scored only on the pixels held out from training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rasterio
import torch
from sklearn.metrics import roc_auc_score

from changescope.multimodal.config import ModelConfig
from changescope.multimodal.index import IndexParams, build_index, holdout_region, write_index
from changescope.multimodal.layout import read_bright
from changescope.multimodal.model import PseudoSiamese, save_model
from changescope.multimodal.pairs import read_pair_arrays
from changescope.multimodal.regions import val_region
from changescope.multimodal.synthetic import write_bright

from .cli_helpers import fails, ok

PARAMS = IndexParams(roi=8, context=32, stride=4, split="blocks", blocks=4, val_share=0.5, seed=5)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """A generated pair, its blocks-split index and a tiny random model: (index, model, the pair's CLI options)."""
    base = tmp_path_factory.mktemp("holdout")
    write_bright(base / "bright", n=2, size=96, seed=17, events=("libya-flood",))
    sample = read_bright(base / "bright")[0]
    index = write_index(build_index([sample], PARAMS), base / "index.parquet")
    torch.manual_seed(0)
    model = save_model(
        PseudoSiamese(ModelConfig(architecture="test_resnet", hidden_dim=16, proj_dim=8, context=32, roi=8)),
        base / "model",
    )
    pair = ["--pre", str(sample.pre), "--post", str(sample.post), "--truth", str(sample.target)]
    return index, model, [*pair, "--truth-kind", "damage", "--no-baselines", "--no-report", "--paint", "roi"]


def _evaluation(out: Path) -> dict:
    return json.loads((out / "evaluation.json").read_text())


def test_holdout_scores_only_the_held_out_blocks(scene, tmp_path: Path) -> None:
    index, model, pair = scene
    ok(["evaluate", "--model", str(model), "--out", str(tmp_path / "all"), *pair])
    ok(["evaluate", "--model", str(model), "--out", str(tmp_path / "held"), *pair, "--holdout", str(index)])
    everything, held = _evaluation(tmp_path / "all"), _evaluation(tmp_path / "held")
    sample = read_bright(Path(held["samples"][0]["pre"]).parents[1])[0]
    truth = read_pair_arrays(sample)
    keep = truth.valid & truth.truth.valid
    region = val_region(keep.shape, PARAMS)
    assert 0.3 < region.mean() < 0.7
    with rasterio.open(held["samples"][0]["change_map"]) as src:
        score = src.read(1)
    labels = truth.truth.damage
    assert everything["pixels"] == int(keep.sum()) and held["pixels"] == int((keep & region).sum())
    assert held["samples"][0]["region"] == "held out" and held["settings"]["holdout"]
    assert not everything["settings"]["holdout"] and "region" not in everything["samples"][0]
    assert held["auc"] == pytest.approx(roc_auc_score(labels[keep & region], score[keep & region]), abs=1e-9)
    assert everything["auc"] == pytest.approx(roc_auc_score(labels[keep], score[keep]), abs=1e-9)
    assert held["auc"] != pytest.approx(everything["auc"], abs=1e-6)


def test_images_wholly_in_one_split_count_every_pixel(tmp_path: Path) -> None:
    write_bright(tmp_path, n=3, size=64, seed=4, events=("libya-flood",))
    samples = read_bright(tmp_path)
    index = build_index(samples, IndexParams(roi=8, context=32, stride=8))  # random 80/20 by image
    assert holdout_region(index, samples[0], (64, 64)) is None


def test_a_pair_missing_from_the_index_is_refused(scene, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index, model, pair = scene
    write_bright(tmp_path / "other", n=1, size=64, seed=9, events=("libya-flood",))
    other = read_bright(tmp_path / "other")[0]
    swapped = ["--pre", str(other.pre), "--post", str(other.post), "--truth", str(other.target), *pair[6:]]
    args = ["multimodal", "evaluate", "--model", str(model), "--out", str(tmp_path / "o"), *swapped]
    message = fails([*args, "--holdout", str(index)], capsys)
    assert "is not in the holdout index" in message and str(other.pre) in message
    message = fails([*args, "--holdout", str(tmp_path / "nope.parquet")], capsys)
    assert "--holdout" in message and "does not exist" in message


def test_the_pair_is_found_by_its_resolved_path(scene, monkeypatch: pytest.MonkeyPatch) -> None:
    index_path, _, pair = scene
    from dataclasses import replace

    from changescope.multimodal.index import read_index

    index = read_index(index_path)
    pre = Path(pair[1])
    sample = read_bright(pre.parents[1])[0]
    monkeypatch.chdir(pre.parent)
    relative = replace(sample, pre=Path(pre.name))
    region = holdout_region(index, relative, (96, 96))
    assert region is not None and (region == val_region((96, 96), PARAMS)).all()
