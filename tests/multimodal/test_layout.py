"""BRIGHT readers: the flat and DFC25 layouts, ids, blacklist, disaster selection and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from changescope.errors import NoImagesFoundError, ParameterError
from changescope.multimodal.layout import (
    DFC25_DIR,
    SPLIT_FILES,
    detect_layout,
    list_disasters,
    parse_id,
    read_bright,
    samples_frame,
)
from changescope.multimodal.synthetic import write_bright

EVENTS = ("la_palma-volcano", "turkey-earthquake")


@pytest.fixture(scope="module")
def flat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("flat")
    write_bright(root, n=5, size=64, seed=11, events=EVENTS)
    return root


@pytest.fixture(scope="module")
def dfc25(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dfc25")
    write_bright(root, n=6, size=64, seed=12, events=EVENTS, layout="dfc25")
    return root


@pytest.mark.parametrize(
    ("sample_id", "event"),
    [("la_palma-volcano_00000012", "la_palma-volcano"), ("a_b_c_00000001", "a_b_c"), ("x_12345678", "x")],
)
def test_parse_id_splits_on_the_last_underscore(sample_id: str, event: str) -> None:
    assert parse_id(sample_id) == (event, sample_id[-8:])


@pytest.mark.parametrize("bad", ["turkey-earthquake", "turkey_0001", "turkey_000000012", "_00000001"])
def test_parse_id_refuses_malformed_ids(bad: str) -> None:
    with pytest.raises(ParameterError, match="8 digits"):
        parse_id(bad)


def test_flat_layout(flat: Path) -> None:
    samples = read_bright(flat)
    assert detect_layout(flat) == ("flat", flat)
    assert [s.id for s in samples] == sorted(s.id for s in samples)
    assert len(samples) == 5
    assert list_disasters(samples) == sorted(EVENTS)
    volcano = next(s for s in samples if s.event == "la_palma-volcano")
    assert volcano.pre == flat / "pre-event" / f"{volcano.id}_pre_disaster.tif"
    assert volcano.post == flat / "post-event" / f"{volcano.id}_post_disaster.tif"
    assert volcano.target == flat / "target" / f"{volcano.id}_building_damage.tif"
    assert (volcano.pre_modality, volcano.post_modality, volcano.target_kind) == ("optical", "sar", "damage")
    assert all(s.split is None and s.crs == "EPSG:32633" and s.transform is not None for s in samples)
    frame = samples_frame(samples)
    assert list(frame["id"]) == [s.id for s in samples] and len(frame["transform"][0]) == 6


def test_dfc25_layout_uses_the_split_files(dfc25: Path) -> None:
    base = dfc25 / DFC25_DIR
    listed = {s: sorted((base / f).read_text().split()) for s, f in SPLIT_FILES.items()}
    for root in (dfc25, base):
        samples = read_bright(root)
        assert {s: sorted(x.id for x in samples if x.split == s) for s in SPLIT_FILES} == listed
    test = read_bright(dfc25, splits=["test"])
    assert {s.split for s in test} == {"test"}
    assert all(s.pre.parent.parent == base / "val" for s in test)
    with pytest.raises(ParameterError, match="'holdout' is not a DFC25 split"):
        read_bright(dfc25, splits=["holdout"])


def test_dfc25_without_split_files_leaves_train_unsplit(tmp_path: Path) -> None:
    write_bright(tmp_path, n=4, size=64, seed=3, layout="dfc25")
    for name in SPLIT_FILES.values():
        (tmp_path / DFC25_DIR / name).unlink()
    samples = read_bright(tmp_path)
    assert {s.split for s in samples} == {None, "test"}
    assert len(samples) == 4


def test_empty_split_is_a_clear_error(tmp_path: Path) -> None:
    write_bright(tmp_path, n=4, size=64, seed=4, layout="dfc25")
    (tmp_path / DFC25_DIR / SPLIT_FILES["val"]).write_text("# nothing here\n")
    with pytest.raises(NoImagesFoundError, match=r"split 'val' is empty.*holdout_setlevel\.txt") as info:
        read_bright(tmp_path)
    assert "\n" not in str(info.value)
    assert {s.split for s in read_bright(tmp_path, splits=["train", "test"])} == {"train", "test"}


def test_select_disaster(flat: Path) -> None:
    samples = read_bright(flat, select_disaster="la_palma-volcano")
    assert samples and {s.event for s in samples} == {"la_palma-volcano"}
    both = read_bright(flat, select_disaster=list(EVENTS))
    assert len(both) == 5


def test_unknown_disaster_lists_the_known_ones(flat: Path) -> None:
    with pytest.raises(ParameterError) as info:
        read_bright(flat, select_disaster="mars-quake")
    message = str(info.value)
    assert "\n" not in message
    assert "'mars-quake'" in message and all(repr(e) in message for e in EVENTS)


def test_blacklist_default_explicit_and_included(tmp_path: Path) -> None:
    write_bright(tmp_path, n=4, size=64, seed=5)
    ids = [s.id for s in read_bright(tmp_path)]
    (tmp_path / "blacklist.txt").write_text(f"# bad tiles\n{ids[0]}\n{ids[1]}_post_disaster.tif  # noisy\n")
    assert [s.id for s in read_bright(tmp_path)] == ids[2:]
    kept = read_bright(tmp_path, include_blacklist=True)
    assert [s.id for s in kept] == ids and [s.blacklisted for s in kept] == [True, True, False, False]
    other = tmp_path / "mine.txt"
    other.write_text(f"{ids[3]}\n")
    assert [s.id for s in read_bright(tmp_path, blacklist=other)] == ids[:3]
    with pytest.raises(NoImagesFoundError, match=r"missing\.txt"):
        read_bright(tmp_path, blacklist=tmp_path / "missing.txt")
    (tmp_path / "all.txt").write_text("\n".join(ids))
    with pytest.raises(NoImagesFoundError, match="blacklist"):
        read_bright(tmp_path, blacklist=tmp_path / "all.txt")


def test_limit(flat: Path) -> None:
    assert [s.id for s in read_bright(flat, limit=2)] == [s.id for s in read_bright(flat)][:2]
    with pytest.raises(ParameterError, match="limit=0"):
        read_bright(flat, limit=0)


def test_missing_files_and_layouts_are_named(tmp_path: Path) -> None:
    with pytest.raises(NoImagesFoundError, match="no BRIGHT layout"):
        read_bright(tmp_path)
    pairs = write_bright(tmp_path / "r", n=2, size=64, seed=6)
    (tmp_path / "r" / "post-event" / f"{pairs[1].id}_post_disaster.tif").unlink()
    with pytest.raises(NoImagesFoundError, match=rf"{pairs[1].id}_post_disaster\.tif"):
        read_bright(tmp_path / "r")
    with pytest.raises(ParameterError, match="'dfc25'"):
        read_bright(tmp_path / "r", layout="dfc25")
    write_bright(tmp_path / "s", n=1, size=64, seed=6)
    (tmp_path / "s" / "pre-event" / "oops_pre_disaster.tif").write_bytes(b"")
    with pytest.raises(ParameterError, match="'oops'"):
        read_bright(tmp_path / "s")
