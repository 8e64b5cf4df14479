"""Augment: shapes, determinism, identity, per-band jitter, exact flips/rotations, blur, crops and NaN filling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter1d

from changescope.errors import ParameterError
from changescope.train.augment import Augment, fill_invalid

PLAIN = {"scale": (1.0, 1.0), "jitter_p": 0.0, "blur_p": 0.0, "hflip": False, "vflip": False, "rot90": False}


def batch(seed: int = 0, b: int = 16, c: int = 4, side: int = 32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.1 + 0.5 * torch.rand((b, c, side, side), generator=gen)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_shape_and_dtype() -> None:
    x = torch.rand(5, 3, 40, 28, dtype=torch.float64)
    out = Augment(24)(x, gen(0))
    assert out.shape == (5, 3, 24, 24) and out.dtype == torch.float32
    assert Augment(24).resize(x).shape == (5, 3, 24, 24)
    assert torch.isfinite(out).all()


def test_same_generator_state_same_output() -> None:
    x = batch()
    aug = Augment(24)
    a, b, c = aug(x, gen(3)), aug(x, gen(3)), aug(x, gen(4))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    g = gen(3)
    first, second = aug(x, g), aug(x, g)
    assert torch.equal(first, a) and not torch.equal(first, second), "the generator advances between calls"
    assert torch.equal(x, batch()), "the input is not modified"


def test_identity_equals_resize() -> None:
    x = batch()
    for out_size in (20, 32):
        out = Augment(out_size, **PLAIN)(x, gen(0))  # type: ignore[arg-type]
        assert torch.equal(out, Augment(out_size).resize(x))
    assert torch.equal(Augment(32).resize(x), x), "resize to the input size is the identity"


def test_resize_takes_the_central_square() -> None:
    x = torch.arange(4 * 10, dtype=torch.float32).view(1, 1, 4, 10)
    out = Augment(4).resize(x)
    assert torch.equal(out[0, 0], x[0, 0, :, 3:7])


def test_brightness_per_band_within_bounds() -> None:
    x = batch(b=32)
    aug = Augment(32, **{**PLAIN, "jitter_p": 1.0}, brightness=0.3, contrast=0.0)  # type: ignore[arg-type]
    ratio = (aug(x, gen(1)) / x).flatten(2)
    factor = ratio.mean(-1)
    torch.testing.assert_close(ratio, factor.unsqueeze(-1).expand_as(ratio), rtol=1e-5, atol=1e-5)
    assert factor.min() >= 0.7 - 1e-6 and factor.max() <= 1.3 + 1e-6
    assert factor.min() < 0.8 and factor.max() > 1.2, "factors should span the range"
    assert (factor.std(dim=1) > 1e-3).all(), "each band draws its own factor"


def test_contrast_keeps_band_means() -> None:
    x = batch(b=32)
    aug = Augment(32, **{**PLAIN, "jitter_p": 1.0}, brightness=0.0, contrast=0.4)  # type: ignore[arg-type]
    out = aug(x, gen(2))
    torch.testing.assert_close(out.mean((-2, -1)), x.mean((-2, -1)), rtol=1e-5, atol=1e-6)
    spread = out.std((-2, -1)) / x.std((-2, -1))
    assert spread.min() >= 0.6 - 1e-5 and spread.max() <= 1.4 + 1e-5
    assert spread.min() < 0.7 and spread.max() > 1.3


def test_jitter_probability() -> None:
    x = batch(b=200, side=8)
    out = Augment(8, **{**PLAIN, "jitter_p": 0.5})(x, gen(0))  # type: ignore[arg-type]
    changed = (out != x).flatten(1).any(1).float().mean().item()
    assert 0.35 < changed < 0.65


def dihedral(img: torch.Tensor) -> list[torch.Tensor]:
    rots = [torch.rot90(img, k, dims=(-2, -1)) for k in range(4)]
    return rots + [r.flip(-1) for r in rots]


def test_flips_and_rotations_are_exact_permutations() -> None:
    x = batch(b=64, side=16)
    out = Augment(16, **{**PLAIN, "hflip": True, "vflip": True, "rot90": True})(x, gen(5))  # type: ignore[arg-type]
    seen = set()
    for i in range(len(x)):
        matches = [k for k, t in enumerate(dihedral(x[i])) if torch.equal(out[i], t)]
        assert len(matches) == 1, f"image {i} is not a flip/rotation of its input"
        seen.add(matches[0])
        assert torch.equal(out[i].flatten().sort().values, x[i].flatten().sort().values)
    assert seen == set(range(8)), "all 8 flips/rotations should occur over 64 images"
    only_h = Augment(16, **{**PLAIN, "hflip": True})(x, gen(5))  # type: ignore[arg-type]
    assert all(torch.equal(o, t) or torch.equal(o, t.flip(-1)) for o, t in zip(only_h, x, strict=True))


def test_blur_matches_separable_gaussian() -> None:
    x = batch(b=3, c=2, side=20)
    sigma = torch.tensor([0.3, 1.0, 2.0])
    out = Augment(20)._blur(x, sigma)
    for i, s in enumerate(sigma.tolist()):
        ref = x[i].numpy().astype(np.float64)
        for axis in (1, 2):
            ref = gaussian_filter1d(ref, s, axis=axis, mode="nearest", truncate=6 / s)
        np.testing.assert_allclose(out[i].numpy(), ref, rtol=1e-5, atol=1e-6)


def test_blur_probability_and_constants() -> None:
    flat = torch.full((8, 2, 16, 16), 0.3)
    out = Augment(16, **{**PLAIN, "blur_p": 1.0})(flat, gen(0))  # type: ignore[arg-type]
    torch.testing.assert_close(out, flat)
    x = batch(b=8, side=16)
    blurred = Augment(16, **{**PLAIN, "blur_p": 1.0}, blur_sigma=(1.0, 2.0))(x, gen(0))  # type: ignore[arg-type]
    assert (blurred.diff(dim=-1).abs().mean((1, 2, 3)) < 0.5 * x.diff(dim=-1).abs().mean((1, 2, 3))).all()


def test_random_resized_crop_area() -> None:
    ramp = torch.arange(64, dtype=torch.float32).expand(32, 1, 64, 64).contiguous()  # value = column
    aug = Augment(16, **{**PLAIN, "scale": (0.25, 0.25)}, ratio=(1.0, 1.0))  # type: ignore[arg-type]
    out = aug(ramp, gen(0))
    width = out.amax((1, 2, 3)) - out.amin((1, 2, 3))
    assert ((width > 28) & (width <= 32)).all(), "a quarter of the area at ratio 1 is 32 columns wide"
    left = out.amin((1, 2, 3))
    assert left.min() >= 0 and out.max() <= 63
    assert len(set(left.round().tolist())) > 8, "each image draws its own crop position"
    full = Augment(16, **{**PLAIN, "scale": (0.2, 1.0)})(ramp, gen(0))  # type: ignore[arg-type]
    spans = (full.amax((1, 2, 3)) - full.amin((1, 2, 3))).tolist()
    assert min(spans) < 35 < 55 < max(spans)


def test_nan_filled_with_band_mean() -> None:
    x = batch(b=4)
    x[0, 1, :8] = torch.nan  # a cloud in one band
    x[1, :, 5:9, 5:9] = torch.nan  # a cloud in all bands
    x[2, 3] = torch.nan  # a band with no valid pixel
    filled = fill_invalid(x)
    assert torch.isfinite(filled).all()
    torch.testing.assert_close(filled[0, 1, :8], x[0, 1, 8:].mean().expand(8, 32))
    assert torch.equal(filled[2, 3], torch.zeros(32, 32))
    assert torch.equal(filled[3], x[3])
    aug = Augment(24)
    out = aug(x, gen(9))
    assert torch.isfinite(out).all()
    assert torch.equal(out, aug(filled, gen(9)))
    assert torch.equal(aug.resize(x), aug.resize(filled))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"out_size": 0}, "out_size"),
        ({"scale": (0.5, 0.2)}, "scale"),
        ({"ratio": (0.0, 1.0)}, "ratio"),
        ({"brightness": 1.5}, "brightness"),
        ({"contrast": -0.1}, "contrast"),
        ({"jitter_p": 2.0}, "jitter_p"),
        ({"blur_p": -1.0}, "blur_p"),
        ({"blur_sigma": (0.0, 1.0)}, "blur_sigma"),
    ],
)
def test_bad_parameters(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ParameterError, match=name):
        Augment(**kwargs)  # type: ignore[arg-type]


def test_bad_input() -> None:
    with pytest.raises(ParameterError, match=r"\(B, C, H, W\)"):
        Augment()(torch.rand(3, 32, 32), gen(0))
    with pytest.raises(ParameterError, match="dtype"):
        Augment().resize(torch.ones(1, 1, 8, 8, dtype=torch.int64))
