import pandas as pd
import pytest

from changescope.errors import DateError
from changescope.io.dates import date_from_name, parse_date


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("2021-03-04", "2021-03-04"),
        ("20210304", "2021-03-04"),
        ("2021-03", "2021-03-01"),
        ("S2A_OPER_MSI_L1C_TL_MPS__20161130T130757_A007527_T31UDQ_B02", "2016-11-30"),
        ("CBERS-4_AWFI_B13_2018-05-09", "2018-05-09"),
        ("synth-aoi_0000-2018_03_01", "2018-03-01"),
        ("scene_2019_07", "2019-07-01"),
    ],
)
def test_date_from_name(name, expected):
    assert date_from_name(name) == pd.Timestamp(expected)


@pytest.mark.parametrize("name", ["image", "A007527", "2021-13-01", "20211340", "123456789"])
def test_no_date(name):
    assert date_from_name(name) is None


def test_parse_date_error_names_source():
    with pytest.raises(DateError, match=r"'not a date' in dates.txt"):
        parse_date("not a date", source="dates.txt")
