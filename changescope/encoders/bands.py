"""Map series bands onto what an encoder expects, and normalise reflectance into encoder input."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from changescope.encoders.base import EncoderMeta, Normalization
from changescope.errors import BandMismatchError, ParameterError
from changescope.series import BandInfo

__all__ = ["ALIASES", "band_indices", "normalize"]

ALIASES: dict[str, str] = {
    "b02": "blue",
    "b03": "green",
    "b04": "red",
    "b05": "rededge",
    "b08": "nir",
    "b11": "swir1",
    "b12": "swir2",
    "b01": "coastal",
    "r": "red",
    "g": "green",
    "b": "blue",
}
"""Equivalent band names (lower case) mapped to changescope's generic names."""


def _canon(name: str) -> str:
    low = name.lower()
    return ALIASES.get(low, low)


def band_indices(series_bands: Sequence[BandInfo], meta: EncoderMeta, *, tolerance: float = 0.025) -> list[int]:
    """Indices of the series bands to feed the encoder, in the encoder's band order.

    Each expected band is matched by name (``B04`` and ``red`` are the same band), then by centre wavelength
    within ``tolerance`` micrometres. Encoders that accept any bands (``meta.bands`` empty) get every band.

    Raises:
        BandMismatchError: A band the encoder needs is missing; the message lists what the series has.
    """
    if not meta.bands:
        return list(range(len(series_bands)))
    by_name = {_canon(b.name): i for i, b in enumerate(series_bands)}
    out: list[int] = []
    for spec in meta.bands:
        idx = by_name.get(_canon(spec.name))
        if idx is None and spec.wavelength is not None:
            dists = [abs(b.wavelength - spec.wavelength) if b.wavelength is not None else np.inf for b in series_bands]
            if dists and min(dists) <= tolerance:
                idx = int(np.argmin(dists))
        if idx is None:
            raise BandMismatchError(
                f"encoder {meta.name!r} needs band {spec.name!r}"
                + (f" ({spec.wavelength} um)" if spec.wavelength else "")
                + f" but the series has {[b.name for b in series_bands]!r}; choose an encoder for these bands "
                "(e.g. 'spectral') or add the band"
            )
        out.append(idx)
    return out


def normalize(x: torch.Tensor, norm: Normalization, *, keep_nan: bool = False) -> torch.Tensor:
    """Turn reflectance ``(N, C, H, W)`` (NaN = invalid) into encoder input; invalid pixels become 0 (the mean).

    With ``keep_nan`` (encoders whose meta says ``accepts_nan``), invalid pixels stay NaN.

    Raises:
        ParameterError: ``mean``/``std`` lengths do not match the channel count.
    """
    if norm.kind == "none" and keep_nan:  # nothing to scale: only infinities become NaN (usually there are none)
        inf = torch.isinf(x)
        return x.masked_fill(inf, torch.nan) if bool(inf.any()) else x
    finite = torch.isfinite(x)
    own = False  # x is a tensor made here (not the caller's): the steps below may then work in place
    if norm.kind == "stretch":
        flat = torch.where(finite, x, torch.nan).flatten(2)
        q = torch.tensor([norm.low / 100, norm.high / 100], dtype=flat.dtype, device=flat.device)
        bounds = torch.nanquantile(flat, q, dim=-1, keepdim=True).unsqueeze(-1)  # one sort for both quantiles
        lo, hi = bounds[0], bounds[1]
        x = (x - lo).div_((hi - lo).clamp_min(1e-6)).clamp_(0, 1)
        own = True
    if norm.kind in ("meanstd", "stretch") and norm.mean:
        c = x.shape[1]
        if len(norm.mean) != c or len(norm.std) != c:
            raise ParameterError(f"normalisation has {len(norm.mean)} means/{len(norm.std)} stds for {c} channels")
        mean = torch.tensor(norm.mean, dtype=x.dtype, device=x.device).view(1, c, 1, 1)
        std = torch.tensor(norm.std, dtype=x.dtype, device=x.device).view(1, c, 1, 1)
        x = (x.sub_(mean) if own else x - mean).div_(std)
        own = True
    if keep_nan:
        return x.masked_fill_(~finite, torch.nan) if own else x.masked_fill(~finite, torch.nan)
    invalid = ~(finite & torch.isfinite(x))
    return x.masked_fill_(invalid, 0.0) if own else x.masked_fill(invalid, 0.0)
