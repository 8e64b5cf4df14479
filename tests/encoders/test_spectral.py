"""The training-free ``spectral`` encoder: features against numpy, invariances, NaN handling, shapes, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from changescope.encoders import create_encoder, get_meta
from changescope.encoders.meta import BandSpec
from changescope.encoders.spectral import (
    SpectralEncoder,
    _nanquantiles,
    _torch_nanquantiles,
    find_band,
    is_atmospheric,
    spectral_feature_names,
)
from changescope.errors import ParameterError
from changescope.series import BandInfo

S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
S2_SURFACE = [b for b in S2 if b not in ("B01", "B09", "B10")]  # coastal aerosol, water vapour and cirrus dropped
BGRN = ["blue", "green", "red", "nir"]


def reflectance(n: int, c: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.02 + 0.4 * torch.rand(n, c, size, size, generator=gen)


def spectral(bands: list[str] = BGRN, **kw: object) -> SpectralEncoder:
    enc = create_encoder("spectral", bands=bands, **kw)
    assert isinstance(enc, SpectralEncoder)
    return enc


def cells(a: np.ndarray, s: int) -> np.ndarray:
    """(..., H, W) -> (..., H/s, W/s, s*s) pixel lists per cell."""
    *lead, h, w = a.shape
    b = a.reshape(*lead, h // s, s, w // s, s)
    return np.moveaxis(b, -3, -2).reshape(*lead, h // s, w // s, s * s)


def test_registered_meta_is_the_default_4_band_case() -> None:
    meta = get_meta("spectral")
    assert [b.name for b in meta.bands] == BGRN
    assert meta.embed_dim == len(spectral_feature_names(BGRN)) == 13
    assert meta.normalization.kind == "none"
    assert meta.patch_size == 8


@pytest.mark.parametrize("bands", [BGRN, S2], ids=["4-band", "13-band"])
@pytest.mark.parametrize("cell", [4, 8])
def test_shapes_and_feature_names(bands: list[str], cell: int) -> None:
    enc = spectral(bands, cell=cell)
    used = S2_SURFACE if bands == S2 else bands
    out = enc.feature_map(reflectance(2, len(used)))
    assert out.shape == (2, enc.embed_dim, 32 // cell, 32 // cell)
    assert out.dtype == torch.float32
    assert len(enc.feature_names) == enc.embed_dim == enc.meta.embed_dim
    assert enc.patch_size == cell and [b.name for b in enc.meta.bands] == used and enc.meta.in_chans == len(used)
    assert enc.encode(reflectance(2, len(used))).shape == (2, enc.embed_dim)


def test_feature_order() -> None:
    names = spectral(S2, atmospheric=True).feature_names
    assert names[:13] == [f"median:{b}" for b in S2]
    assert names[13:26] == [f"iqr:{b}" for b in S2]
    assert names[26:] == ["ndvi", "ndwi", "ndbi", "brightness", "gradient", "local_std"]
    surface = spectral(S2).feature_names
    assert surface[:10] == [f"median:{b}" for b in S2_SURFACE] and surface[10:20] == [f"iqr:{b}" for b in S2_SURFACE]
    assert spectral(["red", "green"]).feature_names[-3:] == ["brightness", "gradient", "local_std"]
    assert "ndvi" not in spectral(["red", "green"]).feature_names


def test_bands_are_found_by_alias_and_wavelength() -> None:
    assert "ndvi" in spectral(["B02", "B03", "B04", "B08"]).feature_names
    odd = [BandInfo("b_a", 0.66), BandInfo("b_b", 0.85), BandInfo("b_c", None)]
    enc = create_encoder("spectral", bands=odd)
    assert isinstance(enc, SpectralEncoder)
    assert enc.feature_names[-4:] == ["ndvi", "brightness", "gradient", "local_std"]
    specs = enc.meta.bands
    assert find_band(specs, "red") == 0 and find_band(specs, "nir") == 1 and find_band(specs, "swir1") is None


def test_deterministic() -> None:
    x = reflectance(3, 4, seed=1)
    a = spectral(per_date="brightness").feature_map(x)
    b = spectral(per_date="brightness").feature_map(x.clone())
    assert torch.equal(a, b)


def test_features_match_numpy() -> None:
    x = reflectance(1, 4, size=16, seed=2)
    x[0, :, 3, 5] = torch.nan
    x[0, 2, 9, 9] = torch.nan  # one band invalid -> the whole pixel is invalid
    enc = spectral(cell=8)
    out = enc.feature_map(x).numpy()[0]
    a = x.numpy()[0].astype(np.float64)
    a[:, ~np.isfinite(a).all(axis=0)] = np.nan
    red, nir = a[2], a[3]
    ndvi = cells((nir - red) / (nir + red), 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want_ndvi = np.nanmedian(ndvi, axis=-1)
        q25, q50, q75 = np.nanpercentile(cells(a, 8), [25, 50, 75], axis=-1)
        bright = cells(a.mean(axis=0), 8)
        want_bright = np.nanmedian(bright, axis=-1)
        want_std = np.nanstd(bright, axis=-1)
    names = enc.feature_names
    np.testing.assert_allclose(out[names.index("ndvi")], want_ndvi, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[:4], q50, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[4:8], q75 - q25, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out[names.index("brightness")], want_bright, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[names.index("local_std")], want_std, rtol=1e-4, atol=1e-6)


def test_ndvi_of_a_constructed_tile() -> None:
    """Left half vegetation (NDVI 0.6), right half bare soil (NDVI 0.1)."""
    x = torch.zeros(1, 4, 16, 16)
    x[0, 2] = 0.1
    x[0, 3, :, :8] = 0.4  # (0.4 - 0.1) / 0.5
    x[0, 3, :, 8:] = 0.1 * 1.1 / 0.9  # (nir - 0.1) / (nir + 0.1) = 0.1
    enc = spectral(cell=8)
    ndvi = enc.feature_map(x)[0, enc.feature_names.index("ndvi")]
    torch.testing.assert_close(ndvi, torch.tensor([[0.6, 0.1], [0.6, 0.1]]))


def test_brightness_normalisation_cancels_a_global_gain() -> None:
    x = reflectance(2, 4, seed=3)
    x[0, :, :5, :7] = torch.nan
    enc = spectral(per_date="brightness")
    torch.testing.assert_close(enc.feature_map(x * 2.7), enc.feature_map(x), rtol=1e-5, atol=1e-6)
    raw = spectral()
    assert not torch.allclose(raw.feature_map(x * 2.7), raw.feature_map(x))


def test_zscore_cancels_per_band_gain_and_offset() -> None:
    x = reflectance(2, 4, seed=4)
    gain = torch.tensor([1.5, 0.7, 2.0, 1.1]).view(1, 4, 1, 1)
    offset = torch.tensor([0.01, -0.02, 0.03, 0.0]).view(1, 4, 1, 1)
    enc = spectral(per_date="zscore")
    names = enc.feature_names
    keep = [i for i, n in enumerate(names) if n not in ("ndvi", "ndwi")]  # indices are ratios of raw reflectance
    a, b = enc.feature_map(x)[:, keep], enc.feature_map(x * gain + offset)[:, keep]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_nan_cells_give_zero_and_partial_cells_use_valid_pixels() -> None:
    x = reflectance(1, 4, size=16, seed=5)
    x[0, :, :8, :8] = torch.nan  # first cell fully invalid
    x[0, :, 8:, 8:12] = torch.nan  # last cell half invalid
    out = spectral(cell=8).feature_map(x)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0, :, 0, 0], torch.zeros(out.shape[1]))
    half = spectral(cell=8).feature_map(x[:, :, 8:, 12:16].repeat(1, 1, 1, 2))
    torch.testing.assert_close(out[0, :4, 1, 1], half[0, :4, 0, 0])  # medians of the valid half only
    assert (out[0, :, 1, 1] != 0).any()


def test_texture() -> None:
    flat = torch.full((1, 4, 8, 8), 0.2)
    enc = spectral(cell=8)
    out = enc.feature_map(flat)[0, :, 0, 0]
    names = enc.feature_names
    assert out[names.index("gradient")] == 0
    torch.testing.assert_close(out[names.index("local_std")], torch.tensor(0.0))
    checker = flat.clone()
    checker[..., ::2, ::2] = 0.4
    checker[..., 1::2, 1::2] = 0.4
    out = enc.feature_map(checker)[0, :, 0, 0]
    torch.testing.assert_close(out[names.index("gradient")], torch.tensor(0.2 * 2**0.5))
    torch.testing.assert_close(out[names.index("local_std")], torch.tensor(0.1))


def test_errors() -> None:
    with pytest.raises(ParameterError, match="per_date"):
        create_encoder("spectral", per_date="median")
    with pytest.raises(ParameterError, match="cell"):
        create_encoder("spectral", cell=1)
    with pytest.raises(ParameterError, match="weights"):
        create_encoder("spectral", weights="foo.pth")
    with pytest.raises(ParameterError, match="unique"):
        create_encoder("spectral", bands=["red", "red"])
    enc = spectral()
    with pytest.raises(ParameterError, match="channels"):
        enc.feature_map(reflectance(1, 3))
    with pytest.raises(ParameterError, match="multiples"):
        enc.feature_map(reflectance(1, 4, size=30))


@pytest.mark.parametrize("impl", [_nanquantiles, _torch_nanquantiles], ids=["numpy", "torch"])
def test_nanquantiles_match_numpy(impl: object) -> None:
    x = torch.rand(3, 5, 17, generator=torch.Generator().manual_seed(6))
    x[x < 0.3] = torch.nan
    x[0, 0] = torch.nan
    got = impl(x, (0.25, 0.5, 0.75)).numpy()  # type: ignore[operator]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.nanquantile(x.numpy().astype(np.float64), [0.25, 0.5, 0.75], axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_atmospheric_bands_by_wavelength_then_name() -> None:
    assert [is_atmospheric(BandSpec(b.name, b.wavelength)) for b in map(BandInfo.from_name, S2)] == [
        b in ("B01", "B09", "B10") for b in S2
    ]
    assert is_atmospheric(BandSpec("cirrus", None)) and is_atmospheric(BandSpec("coastal", None))
    assert not is_atmospheric(BandSpec("B10", 10.9))  # Landsat's thermal band: the name alone does not decide
    assert is_atmospheric(BandSpec("B9", 1.373))  # Landsat 8/9 cirrus
    only = spectral(["B01", "B09"])  # nothing but atmospheric bands: they are kept
    assert [b.name for b in only.meta.bands] == ["B01", "B09"]


def test_the_pipeline_feeds_only_the_surface_bands() -> None:
    from changescope.encoders.bands import band_indices

    infos = [BandInfo.from_name(b) for b in S2]
    enc = spectral(S2)
    assert [S2[i] for i in band_indices(infos, enc.meta)] == S2_SURFACE


@pytest.mark.parametrize("per_date", ["none", "brightness", "zscore"])
@pytest.mark.parametrize("clouds", [False, True])
def test_the_numpy_path_equals_the_torch_path(per_date: str, clouds: bool) -> None:
    from changescope.encoders.spectral import SPECTRAL_META, create_spectral_encoder

    bands = ["B02", "B03", "B04", "B05", "B08", "B11"]
    enc = create_spectral_encoder(SPECTRAL_META, bands=bands, per_date=per_date)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(7)
    x = torch.rand(3, len(bands), 32, 48, generator=gen) * 0.4
    x[0, 2, 3:9, 4:20] = 0.0
    x[0, 4, 3:9, 4:20] = 0.0  # red = nir = 0: the ndvi is undefined there, without any invalid pixel
    if clouds:
        x[1, :, :8, :8] = float("nan")  # a whole cell invalid
        x[1, 0, 10:14, 9:30] = float("nan")  # some pixels of several cells (one band invalid: the pixel is)
        x[2, 3, ::5, ::3] = float("inf")
    fast = enc.feature_map(x.clone())
    slow = enc._torch_features(x.clone())
    assert fast.shape == slow.shape and fast.dtype == torch.float32
    torch.testing.assert_close(fast, slow, rtol=2e-5, atol=2e-6)
    assert bool((fast[1, :, 0, 0] == 0).all()) == clouds


@pytest.mark.parametrize("per_date", ["none", "brightness", "zscore"])
@pytest.mark.parametrize(("threads", "chunk_tiles"), [(1, 1), (2, 1), (2, 3), (3, 2)])
def test_cell_features_a_few_tiles_at_a_time_in_threads_equal_one_pass(per_date, threads, chunk_tiles, monkeypatch):
    import changescope.encoders.spectral_numpy as sn

    rng = np.random.default_rng(8)
    x = rng.random((7, 4, 32, 32), dtype=np.float32)
    x[1, :, 3:20, 5:9] = np.nan  # a cloud in one tile
    x[4, 2] = np.nan  # a band missing in another
    whole = sn._cell_features(x, 8, [(3, 2), (1, 3)], per_date)
    per_tile = (4 + 2 + 1) * 32 * 32 * 4
    monkeypatch.setattr(sn, "CHUNK_BYTES", chunk_tiles * per_tile)
    got = sn.cell_features(x, 8, [(3, 2), (1, 3)], per_date, threads)
    assert got.shape == whole.shape == (7, 2 * 4 + 2 + 3, 4, 4)
    np.testing.assert_array_equal(got, whole)
