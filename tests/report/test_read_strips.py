"""``read_rgb`` reads large windows in strips: the same downsampled image as one read, in bounded memory."""

from __future__ import annotations

import numpy as np
import pytest

import changescope.report.images as images
from changescope.report.images import read_rgb
from changescope.testing import make_test_series


@pytest.mark.parametrize("factor", [1, 3, 7])
@pytest.mark.parametrize("window", [None, (slice(5, 61), slice(2, 47))])
def test_strips_give_the_image_of_one_read(monkeypatch: pytest.MonkeyPatch, factor: int, window) -> None:
    ds = make_test_series(3, n_time=2, height=64, width=50, cloud_fraction=0.3)
    whole = read_rgb(ds, 1, [2, 1, 0], factor, window)
    calls: list[tuple[slice, slice]] = []
    real = images._read_rgb_window

    def spy(ds_, t, bands, f, win):
        calls.append(win)
        return real(ds_, t, bands, f, win)

    monkeypatch.setattr(images, "_read_rgb_window", spy)
    monkeypatch.setattr(images, "READ_BYTES", 4 * 5 * 50 * 2)  # about two rows of RGB + mask at a time
    strips = read_rgb(ds, 1, [2, 1, 0], factor, window)
    assert len(calls) > 3  # read in strips of whole blocks
    assert all((c[0].start - calls[0][0].start) % factor == 0 for c in calls)
    for a, b in zip(whole, strips, strict=True):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)
