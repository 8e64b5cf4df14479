import json

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

import changescope
from changescope.cli.app import app, main
from changescope.errors import NoImagesFoundError
from changescope.io.writers import write_series_folder
from changescope.quality import check_series
from changescope.testing import make_test_series

SHIFTED_DATE = "2020-03-01"
SHIFT = (1.5, -0.7)


@pytest.fixture(scope="module")
def shifted_folder(tmp_path_factory):
    """A 4-date folder of dated GeoTIFFs whose third date is moved by SHIFT px."""
    ds = make_test_series(3, n_time=4, height=128, width=160, cloud_fraction=0.15)
    img = ds["image"].values.astype(np.float64)
    spectrum = ndimage.fourier_shift(np.fft.fft2(img[2], axes=(-2, -1)), (0.0, *SHIFT))
    img[2] = np.fft.ifft2(spectrum, axes=(-2, -1)).real
    ds["image"] = ds["image"].copy(data=np.clip(np.rint(img), 1, 65535).astype(np.uint16))
    return write_series_folder(ds, tmp_path_factory.mktemp("series") / "shifted")


def _lines(output: str, word: str) -> list[str]:
    return [line for line in output.splitlines() if word in line]


def test_inspect_prints_summary_table_and_warns_about_the_shifted_date(shifted_folder):
    result = CliRunner().invoke(app, ["inspect", str(shifted_folder)])
    assert result.exit_code == 0, result.output
    out = result.output
    for expected in ("sensor", "EPSG:32633", "4 dates x 4 bands x 128 x 160 px", "blue, green, red, nir"):
        assert expected in out
    assert "2020-01-01 .. 2020-04-01" in out
    # one table row per date, the shifted one marked
    assert len(_lines(out, "SHIFT")) == 1 and SHIFTED_DATE in _lines(out, "SHIFT")[0]
    warnings = _lines(out, "warning:")
    assert len(warnings) == 1
    assert SHIFTED_DATE in warnings[0] and "--max-shift 0.5" in warnings[0]


def test_inspect_json_report(shifted_folder, tmp_path):
    path = tmp_path / "out" / "report.json"
    result = CliRunner().invoke(app, ["inspect", str(shifted_folder), "--json", str(path), "--max-shift", "0.4"])
    assert result.exit_code == 0, result.output
    data = json.loads(path.read_text())
    assert data["max_shift"] == 0.4 and data["reference"] == "2020-01-01"
    assert data["attrs"]["format"] == "geotiff_folder"
    by_date = {d["date"]: d for d in data["dates"]}
    assert list(by_date) == ["2020-01-01", "2020-02-01", "2020-03-01", "2020-04-01"]
    assert [d for d, e in by_date.items() if e["shift_exceeded"]] == [SHIFTED_DATE]
    assert by_date[SHIFTED_DATE]["dy"] == pytest.approx(SHIFT[0], abs=0.2)
    assert by_date[SHIFTED_DATE]["dx"] == pytest.approx(SHIFT[1], abs=0.2)
    assert set(by_date["2020-01-01"]["bands"]) == {"blue", "green", "red", "nir"}
    assert not list(path.parent.glob(".*tmp*"))  # written atomically, no leftovers


def test_inspect_fix_shift_writes_a_coregistered_series(shifted_folder, tmp_path):
    out_dir = tmp_path / "fixed"
    result = CliRunner().invoke(app, ["inspect", str(shifted_folder), "--fix-shift", str(out_dir)])
    assert result.exit_code == 0, result.output
    assert str(out_dir) in result.output
    assert sorted(p.name for p in out_dir.glob("*.tif") if ".mask" not in p.name) == [
        "2020-01-01.tif",
        "2020-02-01.tif",
        "2020-03-01.tif",
        "2020-04-01.tif",
    ]
    fixed = changescope.open(out_dir)
    report = check_series(fixed)
    assert max(d.shift.magnitude for d in report.dates) < 0.15
    again = CliRunner().invoke(app, ["inspect", str(out_dir), "--reference", "clearest"])
    assert again.exit_code == 0, again.output
    assert not _lines(again.output, "warning:")
    assert "all 4 dates within 0.5 px" in again.output


def test_inspect_fix_shift_refuses_a_non_empty_folder(shifted_folder, tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as exc:
        main(["inspect", str(shifted_folder), "--fix-shift", str(busy)])
    assert exc.value.code == 1
    assert "not an empty folder" in capsys.readouterr().err
    assert (busy / "keep.txt").read_text() == "mine"


def test_inspect_missing_path_exits_1_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["inspect", str(tmp_path / "nope")])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "does not exist" in err and "nope" in err
    # through CliRunner the changescope error itself comes back
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "nope")])
    assert result.exit_code != 0
    assert isinstance(result.exception, NoImagesFoundError)


def test_inspect_rejects_bad_options(shifted_folder, capsys):
    result = CliRunner().invoke(app, ["inspect", str(shifted_folder), "--reference", "last"])
    assert result.exit_code == 2
    with pytest.raises(SystemExit) as exc:
        main(["inspect", str(shifted_folder), "--band", "swir1"])
    assert exc.value.code == 1
    assert "band='swir1'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["inspect", str(shifted_folder), "--max-shift", "0"])
    assert exc.value.code == 1
    assert "max_shift=0.0" in capsys.readouterr().err


def test_inspect_help_comes_from_the_docstring():
    result = CliRunner().invoke(app, ["inspect", "--help"])
    assert result.exit_code == 0
    assert "Summarise a series and check each date" in result.output
    assert "--fix-shift" in result.output
    assert "inspect" in CliRunner().invoke(app, ["--help"]).output


def test_inspect_lists_the_aois_of_a_multi_aoi_root(tmp_path):
    from typer.testing import CliRunner

    from changescope.cli.app import app
    from changescope.testing.den import write_den_root

    root = write_den_root(tmp_path / "den", seed=1, aois=("aoi_0000", "aoi_0001", "aoi_0002"))
    result = CliRunner().invoke(app, ["inspect", str(root)])
    assert result.exit_code == 0, result.output
    assert "3 AOIs" in result.output
    for aoi in ("aoi_0000", "aoi_0001", "aoi_0002"):
        assert aoi in result.output
    one = CliRunner().invoke(app, ["inspect", str(root), "--aoi", "aoi_0001"])
    assert one.exit_code == 0 and "AOIs in" not in one.output
