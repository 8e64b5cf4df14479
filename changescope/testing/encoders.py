"""Tiny deterministic encoders for tests: the whole embedding pipeline at CI cost.

Importing this module registers them (once per process, so dask workers that import it get them too):

- ``test_conv``: any bands (band-adaptive, ``bands=`` a list of :class:`~changescope.series.BandInfo`), no
  normalisation; a fixed seeded random 1x1 convolution (with bias) followed by 4x4 average pooling. It is linear and
  local, so a patch's pooled embedding equals the encoder applied to the patch's own pixels;
- ``test_conv_rgbn``: the same on the bands blue, green, red, nir with mean/std normalisation (band mapping and
  missing-band errors).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from changescope.encoders.base import BandSpec, Encoder, EncoderMeta, Normalization
from changescope.encoders.registry import register_encoder
from changescope.errors import ParameterError
from changescope.series import BandInfo

__all__ = ["TEST_CONV", "TEST_CONV_RGBN", "ConvTestEncoder"]

TEST_CONV = EncoderMeta(
    name="test_conv",
    family="test",
    bands=(),
    gsd=None,
    input_size=32,
    patch_size=4,
    embed_dim=8,
    licence="Apache-2.0",
    description="Tiny deterministic test encoder: fixed random 1x1 conv + 4x4 average pooling, any bands",
)

TEST_CONV_RGBN = EncoderMeta(
    name="test_conv_rgbn",
    family="test",
    bands=(BandSpec("blue", 0.490), BandSpec("green", 0.560), BandSpec("red", 0.665), BandSpec("nir", 0.842)),
    gsd=None,
    input_size=32,
    patch_size=4,
    embed_dim=8,
    normalization=Normalization("meanstd", mean=(0.2, 0.2, 0.2, 0.3), std=(0.1, 0.1, 0.1, 0.1)),
    licence="Apache-2.0",
    description="Tiny deterministic test encoder on blue/green/red/nir with mean/std normalisation",
)


class ConvTestEncoder(Encoder):
    """A fixed random 1x1 convolution and ``patch_size`` average pooling.

    Args:
        meta: The metadata it registers under.
        in_chans: Input channels.
        seed: Seed of the weights.
        device: Torch device.
    """

    def __init__(self, meta: EncoderMeta, in_chans: int, seed: int = 0, device: str = "cpu") -> None:
        self.meta = meta
        self.weights_id = f"random-seed{seed}"
        gen = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(meta.embed_dim, in_chans, generator=gen)
        self.bias = torch.randn(meta.embed_dim, generator=gen)
        self._device = torch.device("cpu")
        self.to(device)

    @property
    def device(self) -> torch.device:
        """Device the encoder runs on."""
        return self._device

    def to(self, device: str | torch.device) -> ConvTestEncoder:
        """Move the weights to ``device``."""
        self._device = torch.device(device)
        self.weight = self.weight.to(self._device)
        self.bias = self.bias.to(self._device)
        return self

    def feature_map(self, tiles: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, D, H / 4, W / 4)``."""
        if tiles.shape[1] != self.weight.shape[1]:
            raise ParameterError(f"{self.meta.name!r} takes {self.weight.shape[1]} channels, got {tiles.shape[1]}")
        x = torch.einsum("dc,nchw->ndhw", self.weight, tiles) + self.bias.view(1, -1, 1, 1)
        return F.avg_pool2d(x, self.meta.patch_size)


def _band_count(meta: EncoderMeta, bands: Sequence[BandInfo | str] | None) -> int:
    if meta.bands:
        return meta.in_chans
    if not bands:
        raise ParameterError(f"encoder {meta.name!r} adapts to the series bands; pass bands=[BandInfo, ...]")
    return len(bands)


def _register(meta: EncoderMeta) -> None:
    def factory(
        meta: EncoderMeta, weights: str | None = None, *, bands: Sequence[BandInfo | str] | None = None, **kw: Any
    ) -> Encoder:
        if weights not in (None, "random"):
            raise ParameterError(f"weights={weights!r}: {meta.name!r} only has random weights; omit --weights")
        return ConvTestEncoder(meta, _band_count(meta, bands), **kw)

    with contextlib.suppress(ParameterError):  # already registered in this process (module reloaded)
        register_encoder(meta)(factory)


_register(TEST_CONV)
_register(TEST_CONV_RGBN)
