"""``patch_scores.parquet`` is written one date at a time and reads back as the same cubes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from changescope.patch_scores import PatchScores


def test_patch_scores_are_written_a_row_group_per_date_and_read_back_equal(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    times = pd.date_range("2021-01-01", periods=5, freq="MS")
    score = rng.normal(size=(5, 7, 9))
    score[rng.random(score.shape) < 0.2] = np.nan
    raw = rng.random((5, 7, 9))
    ps = PatchScores(times, score, raw, None, 16, 8, "distance", {"seed": 3})
    path = ps.write(tmp_path / "patch_scores.parquet")
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 5 and meta.num_rows == 5 * 7 * 9
    back = PatchScores.read(path)
    np.testing.assert_array_equal(back.score, score.astype(np.float32))
    np.testing.assert_array_equal(back.raw, raw.astype(np.float32))
    assert np.isnan(back.valid_fraction).all()
    assert (back.size, back.stride, back.method, back.metadata["seed"]) == (16, 8, "distance", 3)
    frame = pd.read_parquet(path)
    pd.testing.assert_frame_equal(frame, ps.to_frame(), check_dtype=False)
