"""Reader options: ``changescope.open`` routes each to the readers that accept it, and the CLI flags reach them."""

import numpy as np
import pytest
from typer.testing import CliRunner

import changescope
from changescope.cli.app import app
from changescope.cli.options import open_options
from changescope.errors import ParameterError
from changescope.io.registry import CLI_FLAGS, list_readers, reader_options
from changescope.io.writers import write_geotiff
from changescope.testing import TEST_CRS, utm_transform


def _folder(tmp_path, crs2=TEST_CRS, x0=500_000.0):
    arr = np.random.default_rng(0).integers(100, 5000, (2, 16, 16)).astype(np.uint16)
    write_geotiff(tmp_path / "2021-01-01.tif", arr, crs=TEST_CRS, transform=utm_transform())
    write_geotiff(tmp_path / "2021-02-01.tif", arr, crs=crs2, transform=utm_transform(x0=x0))
    return tmp_path


def test_open_options_returns_only_what_was_set():
    assert open_options() == {}
    assert open_options(reproject=True, city=None, date="2021-01-01") == {"reproject": True, "date": "2021-01-01"}
    assert open_options(align=True, drop_incomplete=True, city="paris", aoi="a1") == {
        "align": True,
        "drop_incomplete": True,
        "city": "paris",
        "aoi": "a1",
    }


def test_every_reader_option_with_a_flag_is_accepted_by_some_reader():
    accepted = set().union(*(reader_options(r) for r in list_readers()))
    assert set(CLI_FLAGS) <= accepted
    assert "city" in reader_options("oscd") and "city" not in reader_options("geotiff_folder")
    assert "bbox" in reader_options("stac")
    assert reader_options("zarr") == frozenset()


def test_options_go_only_to_readers_that_accept_them(tmp_path):
    folder = _folder(tmp_path)
    # unset options of other readers are dropped
    ds = changescope.open(folder, city=None, drop_incomplete=False, reproject=False)
    assert ds.sizes["time"] == 2
    with pytest.raises(ParameterError, match=r"^--city \(city= in Python\) applies to OSCD inputs only") as err:
        changescope.open(folder, city="paris")
    assert "geotiff_folder" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ParameterError, match=r"--aoi \(aoi= in Python\) applies to DynamicEarthNet inputs only"):
        changescope.open(folder, aoi="aoi_0000")
    with pytest.raises(ParameterError, match=r"^nonsense= is not an option of any reader"):
        changescope.open(folder, nonsense=3)


def test_cli_flags_reach_the_reader(tmp_path):
    runner = CliRunner()
    moved = _folder(tmp_path / "moved", x0=500_020.0)
    assert runner.invoke(app, ["inspect", str(moved)]).exit_code != 0
    result = runner.invoke(app, ["inspect", str(moved), "--align"])
    assert result.exit_code == 0, result.output
    other_crs = _folder(tmp_path / "crs", crs2="EPSG:32634", x0=166_000.0)
    result = runner.invoke(app, ["inspect", str(other_crs), "--reproject"])
    assert result.exit_code == 0, result.output
    single = tmp_path / "single"
    write_geotiff(
        single / "scene.tif",
        np.random.default_rng(1).integers(1, 900, (2, 16, 16)).astype(np.uint16),
        crs=TEST_CRS,
        transform=utm_transform(),
    )
    result = runner.invoke(app, ["inspect", str(single / "scene.tif"), "--date", "2021-06-01"])
    assert result.exit_code == 0, result.output
    assert "2021-06-01" in result.output


def test_inspect_help_lists_the_reader_flags():
    result = CliRunner().invoke(app, ["inspect", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for flag in CLI_FLAGS.values():
        assert flag in result.output
