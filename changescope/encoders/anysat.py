"""AnySat (Astruc et al., CVPR 2025) through torch.hub: ``create_encoder("anysat", modality="s2", ...)``.

AnySat is a JEPA-trained multi-modal encoder whose ``forward(data, patch_size, output=...)`` takes a dict of
modalities (``"s2"``: ``(B, T, 10, H, W)`` plus ``"s2_dates"``: ``(B, T)`` day of year, 0 = 1 January;
``"naip"``: ``(B, 4, H, W)``...). This adapter feeds one modality of one date (``T = 1``).

- **Loading**: ``torch.hub.load(repo_or_dir, "anysat", source=..., pretrained=True, flash_attn=False)``.
  ``weights=None`` uses the GitHub repo ``gastruc/anysat``; ``weights="owner/repo"`` another GitHub repo;
  ``weights=DIR`` a local clone (``source="local"``). ``checkpoint=PATH`` loads a state-dict file (such as the
  published ``AnySat.pth``) into a model built with ``pretrained=False``, which makes a fully offline setup
  possible: a clone plus its checkpoint. Offline (``CHANGESCOPE_OFFLINE``/``HF_HUB_OFFLINE``), a GitHub repo must
  already be in torch.hub's cache (``$TORCH_HOME/hub/<owner>_<repo>_<branch>``) and is loaded from there; the
  cached ``$TORCH_HOME/hub/checkpoints/AnySat.pth``, when present, is loaded directly instead of ``pretrained=True``.
- **Patch size**: changescope counts pixels, AnySat metres. ``patch_size`` is in pixels of the modality's nominal
  grid (:data:`ANYSAT_MODALITIES`), and AnySat receives ``patch_size * resolution`` metres, which must be a
  multiple of 10. A series at another GSD (e.g. PlanetScope 3 m fed as ``"naip"``) is used pixel for pixel, i.e.
  as if it had the nominal resolution. Tiles must be square (AnySat builds a square position grid).
- **Outputs**: ``output="patch"`` gives one ``D = 768`` token per patch, ``(N, D, H / p, W / p)``;
  ``output="dense"`` the per-sub-patch map AnySat recommends for segmentation, ``(N, 2 D, H / s, W / s)``,
  with ``s`` the modality's sub-patch (1 px for time series, 10 m for VHR images). :meth:`AnySatEncoder.encode`
  is the mean of the feature map (``pool="mean"``) or AnySat's tile token (``pool="tile"``).
- **Normalisation**: AnySat standardises inputs with per-dataset statistics it does not publish; changescope uses
  generic reflectance statistics per modality (Sentinel-2 L2A / Landsat C2 L2 / PlanetScope SR values from Clay's
  metadata, converted to reflectance); override with ``normalization=``. SAR modalities have none by default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from changescope.encoders.bands import band_indices
from changescope.encoders.base import ChannelMismatchError, Encoder
from changescope.encoders.catalog import (
    ANYSAT_META,
    ANYSAT_MODALITIES,
    ANYSAT_REPO,
    ANYSAT_TOKENS_PER_SIDE,
    AnySatModality,
)
from changescope.encoders.meta import EncoderMeta, Normalization
from changescope.encoders.weights import is_offline, load_state_dict, parse_weights
from changescope.errors import CorruptFileError, ParameterError, WeightsNotFoundError
from changescope.series import BandInfo

__all__ = ["ANYSAT_META", "ANYSAT_MODALITIES", "AnySatEncoder", "AnySatModality", "create_anysat", "day_of_year"]

AnySatOutput = Literal["patch", "dense"]
AnySatPool = Literal["mean", "tile"]
DEFAULT_REPO = ANYSAT_REPO
TOKENS_PER_SIDE = ANYSAT_TOKENS_PER_SIDE
HUB_CHECKPOINT = "AnySat.pth"
"""File name of the published weights in torch.hub's checkpoint cache (``$TORCH_HOME/hub/checkpoints``)."""


def day_of_year(dates: Sequence[Any]) -> torch.Tensor:
    """AnySat's date code: day of year starting at 0 (1 January = 0, 31 December = 364 or 365), ``(N,)`` int64."""
    days = np.asarray([np.datetime64(d, "D") for d in dates])
    years = days.astype("datetime64[Y]")
    return torch.as_tensor((days - years).astype(np.int64))


def _cached_clone(repo: str) -> Path | None:
    owner_name, _, ref = repo.partition(":")
    owner, _, name = owner_name.partition("/")
    hub = Path(torch.hub.get_dir())
    for branch in [ref] if ref else ["main", "master"]:
        path = hub / f"{owner}_{name}_{branch.replace('/', '_')}"
        if (path / "hubconf.py").is_file():
            return path
    return None


def _how_to(repo: str) -> str:
    return (
        f"AnySat code for {repo!r} is not available offline; pass weights=DIR to a local clone "
        "(git clone https://github.com/gastruc/AnySat) and checkpoint=PATH to its AnySat.pth, or go online and "
        "unset CHANGESCOPE_OFFLINE/HF_HUB_OFFLINE so torch.hub can fetch it once"
    )


def _load_hub(weights: str | None, checkpoint: str | None, hub_kwargs: dict[str, Any]) -> tuple[Any, str]:
    """Load the hub model; returns ``(module, weights_id)``."""
    spec = parse_weights(weights, "anysat")
    repo = spec.tag.source.ref if spec.tag is not None else spec.ref or DEFAULT_REPO
    if spec.kind == "path" and spec.path is not None and spec.path.is_dir():
        if not (spec.path / "hubconf.py").is_file():
            raise WeightsNotFoundError(f"weights={repo!r} is a folder without hubconf.py; give an AnySat clone")
        where, source = str(spec.path), "local"
    elif spec.kind in ("default", "tag", "repo"):
        cached = _cached_clone(repo) if is_offline() else None
        if is_offline() and cached is None:
            raise WeightsNotFoundError(_how_to(repo))
        where, source = (str(cached), "local") if cached is not None else (repo, "github")
    else:
        raise WeightsNotFoundError(f"weights={repo!r} is neither a local AnySat clone nor a GitHub 'owner/repo'")
    ckpt = None
    if checkpoint is not None:
        ckpt = Path(checkpoint).expanduser()
        if not ckpt.is_file():
            raise WeightsNotFoundError(f"checkpoint={checkpoint!r} does not exist; give the path of AnySat.pth")
    elif is_offline() and (Path(torch.hub.get_dir()) / "checkpoints" / HUB_CHECKPOINT).is_file():
        ckpt = Path(torch.hub.get_dir()) / "checkpoints" / HUB_CHECKPOINT  # what pretrained=True would download
    kwargs: dict[str, Any] = {"pretrained": ckpt is None, "flash_attn": False, **hub_kwargs}
    if source == "github":
        kwargs["trust_repo"] = True
    hub_load: Any = torch.hub.load  # untyped in torch
    try:
        module = hub_load(where, "anysat", source=source, **kwargs)
    except (OSError, RuntimeError) as err:  # URLError/HTTPError are OSErrors; hub raises RuntimeError offline
        raise WeightsNotFoundError(f"{_how_to(repo)} ({err})") from err
    if ckpt is not None:
        target = getattr(module, "model", module)
        try:
            target.load_state_dict(load_state_dict(ckpt))
        except RuntimeError as err:  # missing/unexpected keys or shape mismatches
            raise CorruptFileError(
                f"checkpoint={str(ckpt)!r} does not fit the AnySat model of {repo!r}: {err}"
            ) from err
    return module.eval(), repo + (f"+{ckpt}" if ckpt is not None else "")


def _embed_dim(module: Any, modality: AnySatModality, patch_m: int) -> int:
    for owner in (getattr(module, "model", None), module):
        dim = getattr(owner, "embed_dim", None)
        if isinstance(dim, int):
            return dim
    p = round(patch_m / modality.resolution)
    probe = torch.zeros(1, len(modality.bands), p, p)
    with torch.inference_mode():
        out = module(_inputs(probe, modality, torch.zeros(1, dtype=torch.long)), patch_size=patch_m, output="tile")
    return int(out.shape[-1])


def _inputs(tiles: torch.Tensor, modality: AnySatModality, doy: torch.Tensor) -> dict[str, torch.Tensor]:
    if not modality.time_series:
        return {modality.name: tiles}
    return {modality.name: tiles.unsqueeze(1), f"{modality.name}_dates": doy.reshape(-1, 1).to(tiles.device)}


class AnySatEncoder(Encoder):
    """AnySat behind the changescope :class:`~changescope.encoders.base.Encoder` interface.

    Build it with ``create_encoder("anysat", ...)``.
    """

    def __init__(
        self,
        meta: EncoderMeta,
        module: Any,
        modality: AnySatModality,
        *,
        token_px: int,
        output: AnySatOutput,
        pool: AnySatPool,
        doy: int,
        weights_id: str,
    ) -> None:
        self.meta = meta
        self.module = module
        self.modality = modality
        self.token_px = token_px
        self.patch_m = round(token_px * modality.resolution)
        self.output: AnySatOutput = output
        self.pool: AnySatPool = pool
        self.doy = doy
        self.weights_id = weights_id

    @property
    def device(self) -> torch.device:
        """Device of the hub module's parameters (CPU when it has none)."""
        param = next(iter(self.module.parameters()), None)
        return param.device if param is not None else torch.device("cpu")

    def to(self, device: str | torch.device) -> AnySatEncoder:
        """Move the hub module to ``device``."""
        self.module.to(device)
        return self

    def _run(self, tiles: torch.Tensor, dates: Sequence[Any] | None, output: str) -> torch.Tensor:
        if tiles.ndim != 4 or tiles.shape[1] != len(self.meta.bands):
            raise ChannelMismatchError(
                f"tiles have shape {tuple(tiles.shape)!r} but AnySat modality {self.modality.name!r} needs "
                f"{len(self.meta.bands)} bands {[b.name for b in self.meta.bands]!r}; map the series bands first"
            )
        h, w = tiles.shape[-2:]
        if h != w or h % self.token_px:
            raise ParameterError(
                f"tile size {(h, w)!r} must be square and a multiple of the patch size {self.token_px} px "
                f"({self.patch_m} m) for AnySat"
            )
        n = tiles.shape[0]
        doy = torch.full((n,), self.doy, dtype=torch.long) if dates is None else day_of_year(dates)
        if doy.numel() == 1:
            doy = doy.expand(n)
        if doy.numel() != n:
            raise ParameterError(f"got {doy.numel()} dates for {n} tiles; give one per tile or one for all")
        data = _inputs(tiles.to(self.device, torch.float32), self.modality, doy)
        kwargs: dict[str, Any] = {"patch_size": self.patch_m, "output": output}
        with torch.inference_mode():
            if output != "dense":
                out: torch.Tensor = self.module(data, **kwargs)
                return out
            try:
                out = self.module(data, output_modality=self.modality.name, **kwargs)
            except TypeError as err:  # releases before output_modality= keep the first (only) modality
                if "output_modality" not in str(err):
                    raise
                out = self.module(data, **kwargs)
        return out

    def feature_map(self, tiles: torch.Tensor, *, dates: Sequence[Any] | None = None) -> torch.Tensor:
        """Dense features.

        Args:
            tiles: ``(N, C, H, W)`` normalised input in the modality's band order; square, with ``H`` a multiple
                of the AnySat patch in pixels (``patch_size`` given at creation).
            dates: One acquisition date per tile (or one for all) for time-series modalities; ``None`` = the
                constant day of year ``doy`` given at creation.

        Returns:
            ``(N, D, H / patch_size, W / patch_size)`` (``D`` doubles and the stride is the sub-patch for
            ``output="dense"``).
        """
        n, size = tiles.shape[0], tiles.shape[-1]
        out = self._run(tiles, dates, self.output)
        g = size // self.patch_size
        if out.ndim == 4 and tuple(out.shape[1:3]) == (g, g):  # current releases: (N, h, w, D)
            return out.permute(0, 3, 1, 2).contiguous()
        if self.output == "patch" and out.ndim == 3 and out.shape[1] == g * g:  # early releases: (N, h * w, D)
            return out.transpose(1, 2).reshape(n, out.shape[2], g, g)
        if self.output == "dense" and out.ndim == 4:  # early releases: (N, patches, sub-patches, 2 D)
            hp, s = size // self.token_px, self.token_px // self.patch_size
            if tuple(out.shape[1:3]) == (hp * hp, s * s):
                grid = out.reshape(n, hp, hp, s, s, out.shape[3]).permute(0, 5, 1, 3, 2, 4)
                return grid.reshape(n, out.shape[3], hp * s, hp * s)
        raise ParameterError(
            f"AnySat returned shape {tuple(out.shape)!r} for output={self.output!r} and {size} px tiles; expected "
            f"a {g} x {g} grid. Is the hub repo an AnySat release?"
        )

    def encode(self, tiles: torch.Tensor, *, dates: Sequence[Any] | None = None) -> torch.Tensor:
        """Pooled features ``(N, D)``: the feature-map mean (``pool="mean"``) or AnySat's tile token."""
        if self.pool == "tile":
            return self._run(tiles, dates, "tile")
        return self.feature_map(tiles, dates=dates).mean(dim=(-2, -1))


def create_anysat(
    meta: EncoderMeta,
    weights: str | None = None,
    *,
    modality: str = "s2",
    patch_size: int | None = None,
    output: AnySatOutput = "patch",
    pool: AnySatPool = "mean",
    bands: Sequence[BandInfo] | None = None,
    normalization: Normalization | None = None,
    doy: int = 182,
    checkpoint: str | None = None,
    hub_kwargs: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> AnySatEncoder:
    """Build an AnySat encoder.

    Args:
        meta: Registered metadata.
        weights: ``None`` (``gastruc/anysat`` on GitHub), a local clone folder, a GitHub ``"owner/repo"``, or the
            weights tag ``anysat.base``.
        modality: AnySat modality the series is fed as (see :data:`ANYSAT_MODALITIES`).
        patch_size: Patch side in pixels of the modality grid (``None`` = the modality default).
        output: ``"patch"`` or ``"dense"``.
        pool: ``"mean"`` of the feature map or AnySat's ``"tile"`` token for :meth:`AnySatEncoder.encode`.
        bands: The series bands, to check early that every band the modality needs is there.
        normalization: Overrides the default normalisation (reflectance units, one mean/std per band).
        doy: Day of year (0-365) used for time-series modalities when no ``dates`` are passed; the default, 182
            (1 July), is arbitrary but constant so that embeddings of different dates stay comparable.
        checkpoint: A state-dict file (e.g. ``AnySat.pth``) to load instead of the hub's ``pretrained=True``.
        hub_kwargs: Extra keyword arguments for the hub entry point (e.g. ``{"flash_attn": True}``).
        device: Torch device.

    Raises:
        ParameterError: Unknown ``modality``/``output``/``pool``, or a patch size AnySat cannot use.
        BandMismatchError: ``bands`` lacks a band the modality needs.
        WeightsNotFoundError: Offline without a local clone or cached repo, or a missing path.
    """
    if modality not in ANYSAT_MODALITIES:
        raise ParameterError(f"modality={modality!r} is not supported; choose one of {sorted(ANYSAT_MODALITIES)!r}")
    if output not in ("patch", "dense"):
        raise ParameterError(f"output={output!r} is not valid; choose 'patch' or 'dense'")
    if pool not in ("mean", "tile"):
        raise ParameterError(f"pool={pool!r} is not valid; choose 'mean' or 'tile'")
    if not 0 <= doy <= 366:
        raise ParameterError(f"doy={doy!r} is not a day of year; give 0 (1 January) to 365")
    mod = ANYSAT_MODALITIES[modality]
    token_px = patch_size if patch_size is not None else mod.default_patch
    patch_m = token_px * mod.resolution
    if token_px < 1 or patch_m < 10 or not math.isclose(patch_m / 10, round(patch_m / 10), abs_tol=1e-6):
        raise ParameterError(
            f"patch_size={token_px!r} px x {mod.resolution} m = {patch_m:g} m for modality {modality!r}; AnySat needs "
            f"a multiple of 10 m, e.g. patch_size={math.ceil(10 / mod.resolution)} px or a multiple of it"
        )
    norm = normalization or mod.normalization
    if norm.mean and (len(norm.mean) != len(mod.bands) or len(norm.std) != len(mod.bands)):
        raise ParameterError(f"normalization has {len(norm.mean)} means for {len(mod.bands)} bands of {modality!r}")
    instance_meta = replace(
        meta,
        bands=mod.bands,
        gsd=mod.resolution,
        input_size=token_px * TOKENS_PER_SIDE,
        patch_size=mod.subpatch if output == "dense" else token_px,
        normalization=norm,
        description=f"{meta.description} [{modality}, {round(patch_m)} m patches, output={output}]",
    )
    if bands is not None:
        band_indices(bands, instance_meta)
    module, weights_id = _load_hub(weights, checkpoint, dict(hub_kwargs or {}))
    dim = _embed_dim(module, mod, round(patch_m))
    instance_meta = replace(instance_meta, embed_dim=2 * dim if output == "dense" else dim)
    enc = AnySatEncoder(
        instance_meta, module, mod, token_px=token_px, output=output, pool=pool, doy=doy, weights_id=weights_id
    )
    return enc.to(device)
