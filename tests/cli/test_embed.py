"""``changescope embed`` on the command line: success, resume, refusal, overwrite and one-line user errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import changescope.testing.encoders  # noqa: F401  (registers test_conv, test_conv_rgbn)
from changescope.cli.app import app, main
from changescope.embed import open_embeddings
from changescope.testing import make_test_series, write_dated_folder

runner = CliRunner()


@pytest.fixture
def series_folder(tmp_path: Path) -> Path:
    return write_dated_folder(tmp_path / "series", make_test_series(seed=7, n_time=2, height=40, width=48))


@pytest.fixture
def rgb_folder(tmp_path: Path) -> Path:
    ds = make_test_series(seed=7, n_time=1, bands=("red", "green", "blue"), height=32, width=32)
    return write_dated_folder(tmp_path / "rgb", ds)


def embed_args(series: Path, out: Path, *extra: str) -> list[str]:
    return ["embed", str(series), "--encoder", "test_conv", "--patch-size", "8", "--out", str(out), *extra]


def test_embed_writes_a_store_and_resumes(series_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "e.zarr"
    result = runner.invoke(app, embed_args(series_folder, out, "--stride", "4", "--min-valid", "0.2"))
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "2 dates x 9 x 11 patches x 8 dims" in result.output
    with open_embeddings(out) as ds:
        assert ds.attrs["stride"] == 4 and ds.attrs["min_valid"] == 0.2
        assert ds.attrs["source"] == str(series_folder)
        first = ds["embedding"].values
    assert np.isfinite(first).all()
    again = runner.invoke(app, embed_args(series_folder, out, "--stride", "4", "--min-valid", "0.2", "--quiet"))
    assert again.exit_code == 0 and again.output == ""
    with open_embeddings(out) as ds:
        np.testing.assert_array_equal(ds["embedding"].values, first)


def test_other_parameters_are_refused_then_overwritten(
    series_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "e.zarr"
    assert runner.invoke(app, embed_args(series_folder, out, "--quiet")).exit_code == 0
    args = ["embed", str(series_folder), "--encoder", "test_conv", "--patch-size", "16", "--out", str(out), "-q"]
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "patch_size=8" in err and "--overwrite" in err
    main([*args, "--overwrite"])  # returns normally on success
    with open_embeddings(out) as ds:
        assert ds.attrs["patch_size"] == 16


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--patch-size", "64"], "larger than the raster"),
        (["--stride", "0"], "stride=0"),
        (["--encoder", "no_such_encoder"], "encoder='no_such_encoder' is unknown"),
        (["--encoder", "test_conv_rgbn"], "needs band 'nir'"),
        (["--device", "tpu"], "device='tpu'"),
        (["--format", "nope"], "format='nope' is unknown"),
    ],
)
def test_user_errors_exit_1_with_one_line(
    rgb_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main([*embed_args(rgb_folder, tmp_path / "e.zarr"), *extra])
    assert info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error:") and message in err
    assert not (tmp_path / "e.zarr").exists()


def test_help_lists_the_options() -> None:
    result = runner.invoke(app, ["embed", "--help"])
    assert result.exit_code == 0
    for option in ("--encoder", "--patch-size", "--stride", "--workers", "--scheduler", "--overwrite", "--block"):
        assert option in result.output
