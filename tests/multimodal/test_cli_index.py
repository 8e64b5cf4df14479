"""The ``changescope multimodal index`` command: BRIGHT roots, pairs, options and one-line errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from typer.testing import CliRunner

from changescope.cli.app import app, main
from changescope.multimodal.index import read_index
from changescope.multimodal.layout import DFC25_DIR, SPLIT_FILES
from changescope.multimodal.synthetic import write_bright

runner = CliRunner()
EVENTS = ("la_palma-volcano", "turkey-earthquake")


def _png(path: Path, array: np.ndarray) -> Path:
    arr = array if array.ndim == 3 else array[None]
    profile = {"driver": "PNG", "width": arr.shape[2], "height": arr.shape[1], "count": arr.shape[0]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", dtype="uint8", **profile) as dst:
            dst.write(arr)
    return path


def _fails(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "Traceback" not in err
    return " ".join(err.split())


@pytest.fixture(scope="module")
def flat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("flat")
    write_bright(root, n=4, size=64, seed=31, events=EVENTS)
    return root


def test_help_lists_index() -> None:
    result = runner.invoke(app, ["multimodal", "--help"])
    assert result.exit_code == 0 and "index" in result.output


def test_index_of_a_flat_root(flat: Path, tmp_path: Path) -> None:
    out = tmp_path / "index.parquet"
    small = ["--context", "32", "--seed", "3"]
    result = runner.invoke(app, ["multimodal", "index", "--root", str(flat), "--out", str(out), *small])
    assert result.exit_code == 0, result.output
    assert "train" in result.output and "val" in result.output
    frame = read_index(out)
    assert frame.attrs["params"]["context"] == 32 and frame.attrs["params"]["seed"] == 3
    assert frame["sample"].nunique() == 4 and set(frame["split"]) == {"train", "val"}
    assert set(frame["label"]) <= {0, 1}
    assert frame.attrs["params"]["class_rule"] == "majority" and set(frame["damage_class"]) <= {0, 1, 2, 3}
    rule = ["--class-rule", "maximum"]
    result = runner.invoke(app, ["multimodal", "index", "--root", str(flat), "--out", str(out), *small, *rule])
    assert result.exit_code == 0, result.output
    maximum = read_index(out)
    assert maximum.attrs["params"]["class_rule"] == "maximum"
    assert (maximum["damage_class"] >= frame["damage_class"]).all()
    assert (maximum["damage_class"] > frame["damage_class"]).any()


def test_limit_disaster_and_blacklist(flat: Path, tmp_path: Path) -> None:
    out = tmp_path / "i.parquet"
    base = ["multimodal", "index", "--root", str(flat), "--out", str(out), "--context", "32"]
    assert runner.invoke(app, [*base, "--limit", "2"]).exit_code == 0
    assert read_index(out)["sample"].nunique() == 2
    result = runner.invoke(app, [*base, "--select-disaster", "turkey-earthquake"])
    assert result.exit_code == 0, result.output
    assert set(read_index(out)["event"]) == {"turkey-earthquake"}
    ids = sorted(read_index(out)["sample"].unique())
    blacklist = tmp_path / "bl.txt"
    blacklist.write_text(f"{ids[0]}\n")
    chosen = [*base, "--select-disaster", "turkey-earthquake", "--blacklist", str(blacklist), "--split", "halves"]
    assert runner.invoke(app, chosen).exit_code == 0
    assert sorted(read_index(out)["sample"].unique()) == ids[1:]
    assert runner.invoke(app, [*chosen, "--include-blacklist"]).exit_code == 0
    frame = read_index(out)
    assert set(frame.loc[frame["blacklisted"], "sample"]) == {ids[0]}


def test_dfc25_root_keeps_its_split(tmp_path: Path) -> None:
    write_bright(tmp_path / "d", n=5, size=64, seed=32, layout="dfc25")
    out = tmp_path / "i.parquet"
    result = runner.invoke(
        app, ["multimodal", "index", "--root", str(tmp_path / "d"), "-o", str(out), "--context", "32"]
    )
    assert result.exit_code == 0, result.output
    frame = read_index(out)
    listed = (tmp_path / "d" / DFC25_DIR / SPLIT_FILES["test"]).read_text().split()
    assert set(frame.loc[frame["split"] == "test", "sample"]) == set(listed)


def test_pair_with_region_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sar = _png(tmp_path / "sar_before.png", np.repeat(rng.integers(1, 255, (1, 48, 64), dtype=np.uint8), 3, 0))
    optical = _png(tmp_path / "optical_after.png", rng.integers(1, 255, (3, 48, 64), dtype=np.uint8))
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 40:60] = 255
    truth = _png(tmp_path / "gt.png", mask)
    out = tmp_path / "pair.parquet"
    args = ["multimodal", "index", "--pre", str(sar), "--post", str(optical), "--truth", str(truth)]
    args += ["--pre-modality", "sar", "--post-modality", "optical", "--context", "32"]
    result = runner.invoke(app, [*args, "--split", "halves", "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = read_index(out)
    assert set(frame["split"]) == {"train", "val"}
    assert (frame.loc[frame["split"] == "val", "x"] >= 32).all()
    assert frame["label"].sum() > 0 and (frame["pre_modality"] == "sar").all()
    result = runner.invoke(app, [*args, "--split", "blocks", "--blocks", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert set(read_index(out)["split"]) == {"train", "val"}
    shares = []
    for share in ("0.25", "0.75"):
        result = runner.invoke(
            app, [*args, "--split", "blocks", "--blocks", "2", "--val-share", share, "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        frame = read_index(out)
        assert frame.attrs["params"]["val_share"] == float(share)
        shares.append(
            frame.assign(block=(frame["y"] // 24) * 2 + frame["x"] // 32).query("split == 'val'")["block"].nunique()
        )
    assert shares == [1, 3]


def test_one_line_errors(flat: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    rgb = _png(tmp_path / "rgb.png", rng.integers(1, 255, (3, 40, 40), dtype=np.uint8))
    grey = _png(tmp_path / "grey.png", rng.integers(1, 255, (1, 40, 40), dtype=np.uint8))
    small = _png(tmp_path / "small.png", rng.integers(1, 255, (1, 30, 40), dtype=np.uint8))
    out = str(tmp_path / "i.parquet")
    index = ["multimodal", "index", "--out", out]
    pair = [*index, "--pre", str(rgb), "--post", str(grey), "--split", "halves"]
    assert "known disasters" in _fails([*index, "--root", str(flat), "--select-disaster", "nope"], capsys)
    assert "small.png" in _fails([*index, "--pre", str(rgb), "--post", str(small)], capsys)
    assert "small.png" in _fails([*pair, "--truth", str(small)], capsys)
    message = _fails([*pair, "--post-modality", "optical"], capsys)
    assert "grey.png" in message and "post_modality='sar'" in message
    assert "--split halves" in _fails([*index, "--pre", str(rgb), "--post", str(grey)], capsys)
    assert "--root" in _fails([*index, "--root", str(flat), "--pre", str(rgb)], capsys)
    assert "--root DIR" in _fails(index, capsys)
    assert "--select-disaster" in _fails([*pair, "--select-disaster", "x"], capsys)
    assert "--limit" in _fails([*index, "--root", str(flat), "--limit", "0"], capsys)
    assert "input file" in _fails([*pair[:2], "--out", str(grey), *pair[4:]], capsys)
    write_bright(tmp_path / "d", n=4, size=64, seed=33, layout="dfc25")
    (tmp_path / "d" / DFC25_DIR / SPLIT_FILES["train"]).write_text("")
    assert "split 'train' is empty" in _fails([*index, "--root", str(tmp_path / "d")], capsys)


@pytest.mark.realdata
def test_real_shuguang_pair(shared_data: Path, tmp_path: Path) -> None:
    base = shared_data / "hetcd" / "shuguang"
    if not base.is_dir():
        pytest.skip(f"{base} is absent")
    out = tmp_path / "shuguang.parquet"
    args = ["multimodal", "index", "--pre", str(base / "shuguang_1.bmp"), "--post", str(base / "shuguang_2.bmp")]
    args += ["--truth", str(base / "shuguang_gt.bmp"), "--pre-modality", "sar", "--post-modality", "optical"]
    result = runner.invoke(app, [*args, "--split", "halves", "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = read_index(out)
    assert set(frame["split"]) == {"train", "val"}
    changed = frame["label"].mean()
    assert 0.02 < changed < 0.3  # 4.6 % of the pixels changed; ROIs with > 5 % damage are a bit more


def test_cli_defaults_are_the_index_defaults() -> None:
    import inspect

    from changescope.cli.multimodal import index_command
    from changescope.multimodal.index import IndexParams

    defaults = IndexParams()
    signature = inspect.signature(index_command).parameters
    for name in ("roi", "context", "stride", "min_valid", "split", "seed", "blocks", "val_share", "val_half"):
        assert signature[name].default == getattr(defaults, name), name
