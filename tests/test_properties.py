"""Properties that hold for every input (hypothesis): the score table round trip, masks, gains."""

import numpy as np
import pandas as pd
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from changescope.change.score import ChangeScorer
from changescope.encoders import create_encoder
from changescope.patch_scores import PatchScores

SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def cubes(draw):
    n_t = draw(st.integers(1, 5))
    n_r = draw(st.integers(1, 6))
    n_c = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    cube = rng.normal(size=(n_t, n_r, n_c)).astype(np.float32).astype(np.float64)
    cube[rng.random(cube.shape) < draw(st.floats(0, 0.6))] = np.nan
    return cube


@SETTINGS
@given(cubes(), st.integers(1, 64))
def test_patch_scores_table_cube_round_trip(cube, size):
    times = pd.date_range("2020-01-01", periods=cube.shape[0], freq="MS")
    ps = PatchScores(times, cube, raw=cube * 2, valid_fraction=np.ones_like(cube), size=size, stride=size, method="m")
    frame = ps.to_frame()
    assert len(frame) == cube.size and (frame["y0"] == frame["row"] * size).all()
    back = PatchScores.from_frame(frame, ps.shape, times)
    np.testing.assert_array_equal(back.score, cube)
    np.testing.assert_array_equal(back.raw, cube * 2)
    assert back.size == size and back.method == "m"
    if ps.shape[0] > 1:
        assert back.stride == size
    np.testing.assert_array_equal(ps.max_over_time(), np.fmax.reduce(cube, axis=0))


@SETTINGS
@given(st.integers(0, 2**31 - 1), st.floats(0.05, 0.7))
def test_a_mask_never_creates_a_change(seed, share):
    """Masking observations gives them no score, and never raises the score of a date left clear."""
    rng = np.random.default_rng(seed)
    n_t, n, d = 6, 60, 5
    X = rng.normal(size=(1, n, d)) + 0.05 * rng.normal(size=(n_t, n, d))
    valid = np.ones((n_t, n), dtype=bool)
    masked = valid & (rng.random((n_t, n)) >= share)
    masked[:3] = True  # the reference period stays clear
    kw = {"context": "none", "standardize": False, "normalize": False, "metric": "euclidean"}
    clear = ChangeScorer("distance", "first", 3, **kw).fit(X, valid, pd.date_range("2020", periods=n_t, freq="MS"))
    cloudy = ChangeScorer("distance", "first", 3, **kw).fit(X, masked, pd.date_range("2020", periods=n_t, freq="MS"))
    assert np.isnan(cloudy.raw_scores_[~masked]).all()
    kept = masked[3:]
    np.testing.assert_allclose(cloudy.raw_scores_[3:][kept], clear.raw_scores_[3:][kept])


@SETTINGS
@given(st.floats(0.2, 5.0), st.integers(0, 1000))
def test_a_gain_on_every_band_changes_no_brightness_normalised_spectral_embedding(gain, seed):
    enc = create_encoder("spectral", bands=["blue", "green", "red", "nir"], per_date="brightness")
    gen = torch.Generator().manual_seed(seed)
    tiles = 0.02 + 0.4 * torch.rand(2, 4, 32, 32, generator=gen)
    with torch.no_grad():
        a = enc.encode(tiles)
        b = enc.encode(tiles * gain)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
