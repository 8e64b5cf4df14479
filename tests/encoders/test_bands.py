"""Band mapping (name, alias, wavelength) and reflectance normalisation into encoder input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from changescope.encoders.bands import _normalize_torch, band_indices, normalize, normalize_array
from changescope.encoders.base import BandSpec, EncoderMeta, Normalization
from changescope.errors import BandMismatchError, ParameterError
from changescope.series import BandInfo

S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]


def meta(*bands: BandSpec) -> EncoderMeta:
    return EncoderMeta("enc", "test", tuple(bands), None, 64, 8, 16)


def series(*names: str) -> list[BandInfo]:
    return [BandInfo.from_name(n) for n in names]


def test_by_name_in_encoder_order() -> None:
    m = meta(BandSpec("red"), BandSpec("green"), BandSpec("blue"))
    assert band_indices(series("blue", "green", "red", "nir"), m) == [2, 1, 0]


def test_by_alias_both_ways() -> None:
    rgb = meta(BandSpec("red", 0.665), BandSpec("green", 0.56), BandSpec("blue", 0.49))
    assert band_indices(series(*S2), rgb) == [3, 2, 1]
    s2_rgb = meta(BandSpec("B04"), BandSpec("B03"), BandSpec("B02"))
    assert band_indices(series("blue", "green", "red", "nir"), s2_rgb) == [2, 1, 0]
    assert band_indices(series("R", "G", "B"), s2_rgb) == [0, 1, 2]


def test_by_wavelength_within_tolerance() -> None:
    m = meta(BandSpec("nir_narrow", 0.865), BandSpec("red", 0.665))
    odd = [BandInfo("band_1", 0.66), BandInfo("band_2", 0.85), BandInfo("band_3", None)]
    assert band_indices(odd, m) == [1, 0]
    with pytest.raises(BandMismatchError):
        band_indices([BandInfo("band_2", 0.80)], meta(BandSpec("nir_narrow", 0.865)))
    assert band_indices([BandInfo("band_2", 0.80)], meta(BandSpec("nir_narrow", 0.865)), tolerance=0.1) == [0]


def test_missing_band_lists_the_series_bands() -> None:
    m = meta(BandSpec("swir1", 1.61))
    with pytest.raises(BandMismatchError) as err:
        band_indices(series("blue", "green", "red", "nir"), m)
    msg = str(err.value)
    assert "'swir1'" in msg and "['blue', 'green', 'red', 'nir']" in msg and "'enc'" in msg


def test_encoders_without_bands_take_all() -> None:
    assert band_indices(series("blue", "nir", "B11"), meta()) == [0, 1, 2]


def test_normalize_meanstd_with_nan() -> None:
    x = torch.tensor([[[[0.1, 0.3]], [[0.2, torch.nan]]]])  # (1, 2, 1, 2)
    out = normalize(x, Normalization("meanstd", mean=(0.1, 0.2), std=(0.1, 0.05)))
    torch.testing.assert_close(out, torch.tensor([[[[0.0, 2.0]], [[0.0, 0.0]]]]))


def test_normalize_stretch_ignores_nan_and_clips() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=gen) * 0.3
    x[0, 1, :4] = torch.nan
    x[1, 0, 0, 0] = torch.inf
    out = normalize(x, Normalization("stretch", low=2.0, high=98.0))
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    assert (out[0, 1, :4] == 0).all() and out[1, 0, 0, 0] == 0
    flat = x[1, 2].flatten().numpy()
    lo, hi = np.percentile(flat, [2, 98])
    want = np.clip((x[1, 2].numpy() - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(out[1, 2].numpy(), want, atol=1e-5)
    scaled = normalize(x, Normalization("stretch", mean=(0.5,) * 3, std=(0.25,) * 3))
    torch.testing.assert_close(scaled[1, 2], (out[1, 2] - 0.5) / 0.25)


def test_normalize_none_only_zeroes_invalid() -> None:
    x = torch.tensor([[[[0.1, torch.nan, -torch.inf, 0.4]]]])
    torch.testing.assert_close(normalize(x, Normalization("none")), torch.tensor([[[[0.1, 0.0, 0.0, 0.4]]]]))


def test_normalize_checks_stat_lengths() -> None:
    with pytest.raises(ParameterError, match="3 channels"):
        normalize(torch.zeros(1, 3, 2, 2), Normalization("meanstd", mean=(0.0, 0.0), std=(1.0, 1.0)))


def _normalize_reference(x: torch.Tensor, norm: Normalization, *, keep_nan: bool = False) -> torch.Tensor:
    """``normalize`` as it was before it worked in place and sorted once for both stretch quantiles."""
    finite = torch.isfinite(x)
    if norm.kind == "stretch":
        flat = torch.where(finite, x, torch.nan).flatten(2)
        lo = torch.nanquantile(flat, norm.low / 100, dim=-1, keepdim=True).unsqueeze(-1)
        hi = torch.nanquantile(flat, norm.high / 100, dim=-1, keepdim=True).unsqueeze(-1)
        x = ((x - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)
    if norm.kind in ("meanstd", "stretch") and norm.mean:
        c = x.shape[1]
        mean = torch.tensor(norm.mean, dtype=x.dtype, device=x.device).view(1, c, 1, 1)
        std = torch.tensor(norm.std, dtype=x.dtype, device=x.device).view(1, c, 1, 1)
        x = (x - mean) / std
    if keep_nan:
        return torch.where(finite, x, torch.full_like(x, torch.nan))
    return torch.where(finite & torch.isfinite(x), x, torch.zeros_like(x))


NORMS = [
    Normalization(kind="none"),
    Normalization(kind="meanstd", mean=(0.1, 0.2, 0.3), std=(0.05, 0.06, 0.0)),
    Normalization(kind="stretch", low=2.0, high=98.0),
    Normalization(kind="stretch", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), low=1.0, high=99.5),
]


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("keep_nan", [False, True])
def test_normalize_is_bit_identical_to_the_out_of_place_version_and_leaves_its_input(
    norm: Normalization, keep_nan: bool
) -> None:
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.4
    x[0, :, :4, :4] = torch.nan
    x[1, 1, 3, :] = torch.inf
    x[2, 2, 5, 2] = -torch.inf
    x[3, 0] = torch.nan  # a band with no valid pixel
    before = x.clone()
    got = normalize(x, norm, keep_nan=keep_nan)
    want = _normalize_reference(before.clone(), norm, keep_nan=keep_nan)
    assert torch.equal(x.isnan(), before.isnan()) and torch.equal(x.nan_to_num(), before.nan_to_num())
    assert got.data_ptr() != x.data_ptr()
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got.nan_to_num(), want.nan_to_num())
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))


def test_normalize_none_keeping_nan_turns_only_infinities_into_nan() -> None:
    x = torch.tensor([[[[0.1, float("nan")], [float("inf"), -float("inf")]]]])
    out = normalize(x, Normalization("none"), keep_nan=True)
    assert out[0, 0, 0, 0] == pytest.approx(0.1)
    assert bool(torch.isnan(out[0, 0, 0, 1])) and bool(torch.isnan(out[0, 0, 1]).all())
    clean = torch.rand(1, 2, 3, 3)
    assert torch.equal(normalize(clean, Normalization("none"), keep_nan=True), clean)
    zeroed = normalize(x, Normalization("none"))
    assert zeroed[0, 0, 0, 0] == pytest.approx(0.1) and bool((zeroed[0, 0].flatten()[1:] == 0).all())


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("keep_nan", [False, True])
def test_normalize_on_the_cpu_runs_in_numpy_with_the_torch_kernels_values(norm: Normalization, keep_nan: bool) -> None:
    x = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(1)) * 0.5
    x[0, :, :3, :3] = torch.nan
    x[1, 0, 2, :] = torch.inf
    x[3, 1] = torch.nan
    before = x.numpy().copy()
    arr = normalize_array(x.numpy(), norm, keep_nan=keep_nan)
    want = _normalize_torch(x.clone(), norm, keep_nan=keep_nan)
    assert np.array_equal(x.numpy(), before, equal_nan=True)  # the input is left as it was
    assert arr.dtype == np.float32
    assert np.array_equal(arr.view(np.int32), want.numpy().view(np.int32))
    assert torch.equal(normalize(x, norm, keep_nan=keep_nan).view(torch.int32), want.view(torch.int32))


def test_normalize_keeps_float64_tensors_in_torch() -> None:
    x = torch.rand(1, 2, 4, 4, dtype=torch.float64)
    out = normalize(x, Normalization("meanstd", mean=(0.5, 0.5), std=(0.25, 0.25)))
    assert out.dtype == torch.float64
    assert torch.allclose(out, (x - 0.5) / 0.25)
