"""The self-supervised training loop: MoCo v2, SeCo and CACo on the user's own series (``changescope train ssl``).

Per step, for a batch of locations and the views :meth:`~changescope.train.data.TemporalPatches.sample` draws:

- every mode: query ``q = f_q(aug(x_t))`` and augmented key ``k_aug = f_k(aug(x_t))`` (same date ``t``);
- ``moco``: ``loss = L(q, k_aug)``;
- ``seco``: also ``k_time = f_k(aug(x_s))`` for another date ``s``; ``loss = (L(q, k_aug) + L(q, k_time)) / 2``;
- ``caco``: the short-term key ``k_short = f_k(x_s)`` (``s`` from the query's half, no augmentation) and the
  long-term key ``k_long = f_k(x_l)`` (the other half); ``k_long`` is an extra negative only where the
  :class:`~changescope.train.gating.ChangeTracker` says the location changed:
  ``loss = (L(q, k_aug; k_long, mask) + L(q, k_short; k_long, mask)) / 2``. The change ratio
  ``(1 - cos(k_0, k_long)) / (1 - cos(k_0, k_short))``, ``k_0 = f_k(x_t)``, updates the tracker, and after each
  epoch a Gaussian mixture relabels the locations.

``L`` is InfoNCE against the queue; ``f_k`` is the momentum encoder (all key views of a step go through it in one
forward). Every epoch's randomness comes from a generator seeded by ``(seed, epoch)``, so a resumed run gives the
same checkpoints as an uninterrupted one.

``train_ssl(..., on_epoch=f)`` calls ``f(epoch)`` right after each epoch is saved (progress reporting; a callback that
raises there stops the run as a crash at that point would, which the resume tests use).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from changescope.encoders.bands import normalize
from changescope.encoders.base import BandSpec, EncoderMeta, Normalization
from changescope.errors import NoImagesFoundError, ParameterError
from changescope.train import state as st
from changescope.train.augment import Augment
from changescope.train.config import DataConfig, TrainConfig
from changescope.train.data import TemporalPatches, Views
from changescope.train.gating import ChangeTracker
from changescope.train.moco import MoCo

__all__ = [
    "RESUMABLE_FIELDS",
    "TrainResult",
    "epoch_generator",
    "open_inputs",
    "resolve_device",
    "torch_threads",
    "train_ssl",
    "training_patches",
    "training_progress",
]

RESUMABLE_FIELDS = frozenset({"optim.epochs", "out", "device", "threads"})
"""Configuration fields that may differ from the run's when resuming (they do not change what is computed)."""


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_ssl` produced.

    Attributes:
        out: The run folder.
        encoder: The final encoder, ``OUT/encoder.safetensors`` (use it as ``checkpoint:PATH``).
        epochs: Epochs trained in total.
        history: One record per epoch: ``epoch``, ``loss`` (mean over steps), ``lr``, ``changed_fraction``
            (CACo; ``None`` otherwise) and ``seconds``.
    """

    out: Path
    encoder: Path
    epochs: int
    history: list[dict[str, Any]]


def training_patches(config: TrainConfig, series: list[xr.Dataset] | None = None) -> TemporalPatches:
    """The training locations of ``config``, cut from ``series`` (default: :func:`open_inputs` of its data)."""
    d = config.data
    return TemporalPatches.from_series(
        open_inputs(d) if series is None else series,
        size=d.size,
        stride=d.stride,
        min_valid=d.min_valid,
        min_dates=d.min_dates,
        max_locations=d.max_locations,
        seed=config.seed,
    )


def open_inputs(data: DataConfig) -> list[xr.Dataset]:
    """Open every input of ``data`` as a series; a DynamicEarthNet root gives one series per AOI.

    Raises:
        NoImagesFoundError: An input does not exist (or a root holds no AOI).
    """
    import changescope
    from changescope.io.dynamicearthnet import list_aois
    from changescope.io.registry import detect_format

    series: list[xr.Dataset] = []
    for i, raw in enumerate(data.inputs):
        path = Path(raw).expanduser()
        if not path.exists():
            raise NoImagesFoundError(f"data.inputs[{i}]={raw!r} does not exist; fix the path in the configuration")
        fmt = data.format or detect_format(path)
        if fmt == "dynamicearthnet" and (path / "planet").is_dir():
            refs = list_aois(path)
            if not refs:
                raise NoImagesFoundError(f"data.inputs[{i}]={raw!r} is a DynamicEarthNet root without any AOI")
            series.extend(changescope.open(path, format=fmt, aoi=ref.key) for ref in refs)
        else:
            series.append(changescope.open(path, format=fmt))
    return series


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator of one epoch: every draw of that epoch (views, augmentations, key shuffles) comes from it."""
    value = int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator().manual_seed(value)


def resolve_device(device: str) -> torch.device:
    """The torch device of a ``device`` option (``"auto"``: CUDA when available)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError(f"device={device!r} but CUDA is not available here; set device: cpu (or auto)")
    return torch.device(device)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch threads (unchanged when ``None``), restoring the count after."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Trainer:
    """Model, optimiser, schedule and change tracker of one run, and how one step and one epoch go."""

    def __init__(
        self, config: TrainConfig, patches: TemporalPatches, norm: Normalization, device: torch.device
    ) -> None:
        self.config, self.patches, self.norm, self.device = config, patches, norm, device
        m, s, o = config.model, config.ssl, config.optim
        with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's RNG
            torch.manual_seed(config.seed)
            self.model = MoCo(
                m.architecture,
                len(patches.bands),
                stage=m.stage,
                hidden_dim=m.hidden_dim,
                proj_dim=m.proj_dim,
                queue_size=s.queue_size,
                momentum=s.momentum,
                temperature=s.temperature,
                bn_splits=s.bn_splits,
            ).to(device)
        params = [*self.model.backbone_q.parameters(), *self.model.head_q.parameters()]
        self.optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, list(o.milestones), gamma=o.gamma)
        self.tracker = ChangeTracker(patches.n_locations, ema=s.change_ema, seed=config.seed)
        a = config.augment
        self.augment = Augment(
            a.out_size,
            scale=a.scale,
            brightness=a.brightness,
            contrast=a.contrast,
            jitter_p=a.jitter_p,
            blur_sigma=a.blur_sigma,
            blur_p=a.blur_p,
            hflip=a.hflip,
            vflip=a.vflip,
            rot90=a.rot90,
        )

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self.norm)

    def _key_inputs(self, views: Views, gen: torch.Generator) -> list[torch.Tensor]:
        query = views.query.to(self.device)
        inputs = [self._prep(self.augment(query, gen))]
        mode = self.config.ssl.mode
        if mode == "seco":
            inputs.append(self._prep(self.augment(views.short.to(self.device), gen)))
        elif mode == "caco":
            inputs += [self._prep(self.augment.resize(v.to(self.device))) for v in (views.short, views.long, query)]
        return inputs

    def step(self, locs: np.ndarray, gen: torch.Generator) -> float:
        """One optimiser step on the locations ``locs``; returns the loss."""
        mode, model = self.config.ssl.mode, self.model
        views = self.patches.sample(locs, mode, gen)
        x_q = self._prep(self.augment(views.query.to(self.device), gen))
        key_inputs = self._key_inputs(views, gen)
        keys = torch.split(model.key(torch.cat(key_inputs), generator=gen), len(locs))
        q = model.query(x_q)
        if mode == "moco":
            loss = model.loss(q, keys[0])
        elif mode == "seco":
            loss = (model.loss(q, keys[0]) + model.loss(q, keys[1])) / 2
        else:
            k_aug, k_short, k_long, k_0 = keys
            mask = torch.from_numpy(self.tracker.mask(locs)).to(self.device)
            loss = (
                model.loss(q, k_aug, extra_neg=k_long, extra_mask=mask)
                + model.loss(q, k_short, extra_neg=k_long, extra_mask=mask)
            ) / 2
            d_long = (1.0 - (k_0 * k_long).sum(dim=1)).clamp_min(0.0).double().cpu().numpy()
            d_short = (1.0 - (k_0 * k_short).sum(dim=1)).clamp_min(0.0).double().cpu().numpy()
            self.tracker.update(locs, d_long, d_short)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
        model.momentum_update()
        model.enqueue(keys[0])
        return float(loss.detach())

    def epoch(self, epoch: int, on_step: Callable[[float], None]) -> dict[str, Any]:
        """Train one epoch and, in CACo mode, refit the change labels; returns the epoch's history record."""
        began = time.perf_counter()
        self.model.train()
        gen = epoch_generator(self.config.seed, epoch)
        lr = float(self.optimizer.param_groups[0]["lr"])
        losses = []
        for locs in self.patches.batches(epoch, self.config.optim.batch_size, self.config.seed):
            losses.append(self.step(locs, gen))
            if not math.isfinite(losses[-1]):
                raise ParameterError(
                    f"the loss became {losses[-1]} at epoch {epoch}, step {len(losses)}; lower optim.lr or raise "
                    "ssl.temperature"
                )
            on_step(losses[-1])
        self.scheduler.step()
        changed: float | None = None
        if self.config.ssl.mode == "caco":
            changed = self.tracker.fit().changed_fraction
        loss = float(np.mean(losses))
        seconds = time.perf_counter() - began
        return {"epoch": epoch, "loss": loss, "lr": lr, "changed_fraction": changed, "seconds": seconds}

    def state(self, epoch: int, history: list[dict[str, Any]]) -> dict[str, Any]:
        """The full training state after ``epoch`` (see :mod:`changescope.train.state`)."""
        return {
            "version": st.STATE_VERSION,
            "epoch": epoch,
            "n_locations": self.patches.n_locations,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "tracker": self.tracker.state_dict(),
            "history": [dict(h) for h in history],
            "normalization": st.normalization_to_state(self.norm),
            "config": self.config.model_dump(mode="json"),
        }

    def load(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` saved."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.tracker.load_state_dict(state["tracker"])

    def encoder_meta(self, gsd: float | None) -> EncoderMeta:
        """The metadata of the trained encoder: the series bands, its normalisation, size and stride."""
        arch, mode = self.config.model.architecture, self.config.ssl.mode
        backbone = self.model.backbone_q
        return EncoderMeta(
            name=f"{mode}-{arch}",
            family="timm_cnn",
            bands=tuple(BandSpec(b.name, b.wavelength) for b in self.patches.bands),
            gsd=gsd,
            input_size=self.config.augment.out_size,
            patch_size=backbone.stride,
            embed_dim=backbone.out_dim,
            normalization=self.norm,
            licence="unspecified (trained by the user on their own data)",
            description=(
                f"{mode.upper()} self-supervised {arch} (stage {self.config.model.stage}) trained with changescope "
                f"on {self.patches.n_locations} locations"
            ),
        )


def _check_resume(state: dict[str, Any], path: Path, config: TrainConfig, n_locations: int) -> None:
    if int(state["epoch"]) > config.optim.epochs:
        raise ParameterError(
            f"optim.epochs={config.optim.epochs} but the run in {str(path.parent.parent)!r} already trained "
            f"{state['epoch']} epochs; pass --epochs {state['epoch']} or more"
        )
    diffs = st.config_differences(state["config"], config.model_dump(mode="json"), ignore=RESUMABLE_FIELDS)
    if diffs:
        raise ParameterError(
            f"cannot resume from {str(path)!r}: the configuration differs from the run's in "
            + "; ".join(diffs)
            + ". Restore those values, or choose another out folder to start a new run"
        )
    if int(state["n_locations"]) != n_locations:
        raise ParameterError(
            f"cannot resume from {str(path)!r}: the inputs now give {n_locations} locations but the run had "
            f"{state['n_locations']}; the data changed. Restore it, or choose another out folder"
        )


def _series_gsd(ds: xr.Dataset) -> float | None:
    from changescope.series import series_transform

    try:
        res = abs(float(series_transform(ds).a))
    except Exception:  # a series without a georeferenced grid: the encoder then declares no GSD
        return None
    return res if math.isfinite(res) and res > 0 else None


def training_progress(enabled: bool) -> Any:
    """A rich progress bar for training (disabled: renders nothing)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, disable=not enabled)


def _save_epoch(
    trainer: _Trainer, out: Path, record: dict[str, Any], history: list[dict[str, Any]], gsd: float | None
) -> None:
    from changescope.encoders.checkpoint import save_checkpoint_encoder

    cfg, e = trainer.config, int(record["epoch"])
    if cfg.ssl.mode == "caco":
        trainer.tracker.plot_histogram(out / "ratios" / f"epoch_{e:04d}.png", epoch=e)
    extra = {"mode": cfg.ssl.mode, "epoch": e, "config": cfg.model_dump(mode="json"), "history": history}
    save_checkpoint_encoder(
        trainer.model.backbone_q.features,
        trainer.encoder_meta(gsd),
        st.encoder_path(out, e),
        architecture=f"timm:{cfg.model.architecture}",
        stage=cfg.model.stage,
        extra=extra,
    )
    st.save_state(trainer.state(e, history), st.state_path(out, e))
    st.prune_states(out)
    st.write_json(history, out / "history.json")
    st.write_config(cfg.model_dump(mode="json"), out / "config.yaml")


def train_ssl(
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train an encoder self-supervised on the configured series (MoCo v2, SeCo or CACo).

    Writes, after every epoch, a training state, the encoder, the history, the configuration and (CACo) a
    histogram of the change ratios into ``config.out`` (layout in :mod:`changescope.train.state`), and at the end
    ``OUT/encoder.safetensors``, loadable with ``create_encoder("checkpoint:OUT/encoder.safetensors")``.

    Args:
        config: The validated configuration (:func:`~changescope.train.config.load_config`).
        resume: Continue from the newest training state in ``config.out`` (a fresh start when there is none).
            The configuration must equal the run's except ``optim.epochs``, ``out``, ``device`` and ``threads``.
        progress: Show a progress bar with the loss and the changed fraction.
        on_epoch: Called with the epoch number after each epoch is saved.

    Returns:
        The run folder, the final encoder and the history.

    Raises:
        ParameterError: ``out`` already holds checkpoints and ``resume`` is False; the configuration differs from
            the run's on resume; too few locations for a batch; the loss diverges.
        NoImagesFoundError: An input does not exist.
        EmptySeriesError: No location has enough clear dates.
    """
    out = Path(config.out).expanduser()
    states = st.list_states(out)
    if not resume and st.has_checkpoints(out):
        raise ParameterError(
            f"out={str(out)!r} already holds checkpoints of a run; pass --resume (resume=True) to continue it, or "
            "choose another out folder"
        )
    device = resolve_device(config.device)
    d = config.data
    with torch_threads(config.threads):
        series = open_inputs(d)
        patches = training_patches(config, series)
        if config.optim.batch_size > patches.n_locations:
            raise ParameterError(
                f"optim.batch_size={config.optim.batch_size} but the inputs give only {patches.n_locations} "
                "locations; lower optim.batch_size (and ssl.queue_size) or add data (more inputs, a smaller "
                "data.stride, a lower data.min_valid)"
            )
        state = st.load_state(states[-1][1]) if resume and states else None
        if state is not None:
            _check_resume(state, states[-1][1], config, patches.n_locations)
        norm = patches.normalization() if state is None else st.normalization_from_state(state["normalization"])
        trainer = _Trainer(config, patches, norm, device)
        history: list[dict[str, Any]] = []
        if state is not None:
            trainer.load(state)
            history = [dict(h) for h in state["history"]]
        _train_epochs(trainer, out, history, _series_gsd(series[0]), progress, on_epoch)
    final = st.copy_atomic(st.encoder_path(out, len(history)), out / "encoder.safetensors")
    return TrainResult(out=out, encoder=final, epochs=len(history), history=history)


def _train_epochs(
    trainer: _Trainer,
    out: Path,
    history: list[dict[str, Any]],
    gsd: float | None,
    progress: bool,
    on_epoch: Callable[[int], None] | None,
) -> None:
    cfg = trainer.config
    epochs, start = cfg.optim.epochs, len(history) + 1
    steps = trainer.patches.n_locations // cfg.optim.batch_size
    with training_progress(progress) as bar:
        task = bar.add_task("", total=(epochs - start + 1) * steps)
        for e in range(start, epochs + 1):
            running: list[float] = []

            def on_step(loss: float, e: int = e, running: list[float] = running) -> None:
                running.append(loss)
                text = f"epoch {e}/{epochs}  step {len(running)}/{steps}  loss {np.mean(running):.4f}"
                if cfg.ssl.mode == "caco":
                    text += f"  changed {trainer.tracker.summary().changed_fraction:.1%}"
                bar.update(task, advance=1, description=text)

            record = trainer.epoch(e, on_step)
            history.append(record)
            _save_epoch(trainer, out, record, history, gsd)
            if on_epoch is not None:
                on_epoch(e)
