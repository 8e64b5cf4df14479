"""The training loop of ``changescope multimodal train``: supervised contrastive optical/SAR change detection.

Per epoch ``e``: the :class:`~changescope.multimodal.sampler.RatioBatchSampler` draws batches holding the negative
share (0.8) from ``dataset_train``; each step runs the :class:`~changescope.multimodal.model.PseudoSiamese`, the
:class:`~changescope.multimodal.loss.ContrastiveChangeLoss` (plus the cross-entropy of the damage head, if any) and
one Adam step. Then the validation loss is measured, ReduceLROnPlateau steps on it, and the model is kept as
``OUT/best`` when the validation loss is the lowest so far.

Run folder ``OUT`` (the training-state helpers of :mod:`changescope.train.state`)::

    OUT/
      checkpoints/state_0007.pt   full training state after epoch 7 (the last 2 are kept), written atomically
      best.safetensors, best.json the model of the epoch with the lowest validation loss (safetensors + JSON)
      last.safetensors, last.json the model after the last epoch
      history.json                per epoch: loss, val_loss, val_auc, lr, seconds (and grad_norms when monitored)
      config.yaml                 the resolved configuration

Exact resume: every draw of epoch ``e`` (batches, augmentation) depends only on ``(seed, e)``, the initialisation
only on ``seed``, and the state holds the model, Adam and the schedule, so a run killed after any epoch and resumed
gives bit-identical weights (tested). Choices not published: the validation batches are a fixed seeded
permutation of ``dataset_val`` at its natural class ratio; without ``dataset_val`` the training loss stands in;
augmentation (optional) draws one rot90/flip per pair, the same for both images.

Items of the datasets are dicts with ``optical`` ``[3, C, C]``, ``sar`` ``[1, C, C]``, ``label`` (1 = changed) and
``ratio`` (:class:`changescope.multimodal.index.PatchDataset`); a damage head also needs ``damage_class`` (0..3,
-1 = unknown, left out of the cross-entropy). ``model.n_classes: null`` is resolved before anything else: 4 when the
training set has damage classes (its ``has_classes``, or, for other datasets, a ``damage_class`` >= 0 in item 0),
else 0; the resolved number is what the checkpoints, the saved models and ``config.yaml`` hold.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from changescope.errors import ParameterError
from changescope.multimodal.config import MultimodalConfig
from changescope.multimodal.loss import ContrastiveChangeLoss
from changescope.multimodal.model import PseudoSiamese, save_model
from changescope.multimodal.sampler import RatioBatchSampler
from changescope.train import state as st
from changescope.train.ssl import epoch_generator, resolve_device, torch_threads, training_progress

__all__ = ["RESUMABLE_FIELDS", "MultimodalTrainResult", "resolve_config", "train_multimodal"]

RESUMABLE_FIELDS = frozenset({"optim.epochs", "out", "device", "threads", "data.workers", "data.cache_size"})
"""Configuration fields that may differ from the run's when resuming (they do not change what is computed)."""

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class MultimodalTrainResult:
    """What :func:`train_multimodal` produced.

    Attributes:
        out: The run folder.
        best: ``OUT/best.safetensors`` (with ``best.json``), the lowest validation loss.
        last: ``OUT/last.safetensors``, the model after the last epoch.
        best_epoch: Epoch of ``best``.
        best_val_loss: Its validation loss.
        epochs: Epochs trained in total.
        history: One record per epoch (module docstring).
    """

    out: Path
    best: Path
    last: Path
    best_epoch: int
    best_val_loss: float
    epochs: int
    history: list[dict[str, Any]]


def _labels(dataset: Dataset[Any]) -> np.ndarray:
    labels = getattr(dataset, "labels", None)
    if labels is None:
        labels = [int(dataset[i]["label"]) for i in range(len(dataset))]  # type: ignore[arg-type]
    return np.asarray(labels, dtype=np.int64)


def _has_classes(dataset: Dataset[Any]) -> bool:
    flag = getattr(dataset, "has_classes", None)
    if flag is not None:
        return bool(flag)
    if len(dataset) == 0:  # type: ignore[arg-type]
        return False
    first = dataset[0]
    return "damage_class" in first and int(first["damage_class"]) >= 0


def resolve_config(config: MultimodalConfig, dataset_train: Dataset[Any]) -> MultimodalConfig:
    """``config`` with ``model.n_classes`` resolved against the training set (module docstring)."""
    if config.model.n_classes is not None:
        return config
    model = config.model.with_classes(_has_classes(dataset_train))
    return config.model_copy(update={"model": model})


def _augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One random rot90 / left-right flip per pair, the same on both images."""
    draws = torch.randint(0, 4, (x.shape[0], 2), generator=gen).tolist()
    xs, ys = [], []
    for i, (k, flip) in enumerate(draws):
        a, b = torch.rot90(x[i], k, dims=(1, 2)), torch.rot90(y[i], k, dims=(1, 2))
        if flip % 2:
            a, b = a.flip(-1), b.flip(-1)
        xs.append(a)
        ys.append(b)
    return torch.stack(xs), torch.stack(ys)


def _grad_norms(model: torch.nn.Module) -> dict[str, float]:
    """L2 norm of the gradients per layer (parameters grouped by owning module)."""
    named = [(n.rsplit(".", 1)[0], p.grad) for n, p in model.named_parameters() if p.grad is not None]
    if not named:
        return {}
    squares = torch.stack([g.detach().float().pow(2).sum() for _, g in named]).tolist()
    out: dict[str, float] = {}
    for (layer, _), sq in zip(named, squares, strict=True):
        out[layer] = out.get(layer, 0.0) + float(sq)
    return {k: math.sqrt(v) for k, v in out.items()}


class _Trainer:
    """Model, optimiser, schedule and sampler of one run, and how one step, one epoch and validation go."""

    def __init__(
        self, config: MultimodalConfig, train: Dataset[Any], val: Dataset[Any] | None, device: torch.device
    ) -> None:
        self.config, self.train_set, self.val_set, self.device = config, train, val, device
        o = config.optim
        with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's RNG
            torch.manual_seed(config.seed)
            self.model = PseudoSiamese(config.model).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=o.plateau_factor, patience=o.plateau_patience
        )
        self.criterion = ContrastiveChangeLoss(
            config.loss.temperature, config.loss.damage_weight, config.loss.symmetric, config.loss.negatives
        )
        self.sampler = RatioBatchSampler(
            _labels(train), o.batch_size, o.negative_share, seed=config.seed, num_batches=o.batches_per_epoch
        )
        self.val_labels = None if val is None else _labels(val)

    def _loss(self, batch: Batch, gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        optical, sar = batch["optical"], batch["sar"]
        if gen is not None and self.config.optim.augment:
            optical, sar = _augment(optical, sar, gen)
        labels = batch["label"].to(self.device)
        out = self.model(optical.to(self.device), sar.to(self.device))
        loss = self.criterion(out.optical, out.sar, labels)
        if out.logits is not None:
            if "damage_class" not in batch:
                raise ParameterError(
                    f"model.n_classes={self.config.model.n_classes} but the dataset items have no 'damage_class'; "
                    "set model.n_classes: 0 or give the ROI classes"
                )
            target = batch["damage_class"].to(self.device).long()
            known = target >= 0
            if bool(known.any()):  # -1 = no class (ignored); a batch without any class adds nothing
                ce = F.cross_entropy(out.logits[known], target[known])
                loss = loss + self.config.model.class_weight * ce
        return loss, out.score

    def epoch(self, epoch: int, on_step: Callable[[float], None]) -> dict[str, Any]:
        """Train one epoch, validate and step the schedule; returns the epoch's history record."""
        began = time.perf_counter()
        gen = epoch_generator(self.config.seed, epoch)
        self.sampler.set_epoch(epoch)
        loader = DataLoader(self.train_set, batch_sampler=self.sampler, num_workers=self.config.data.workers)
        lr = float(self.optimizer.param_groups[0]["lr"])
        losses: list[float] = []
        norms: dict[str, list[float]] = {}
        self.model.train()
        for batch in loader:
            loss, _ = self._loss(batch, gen)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            if self.config.monitor_gradients:
                for layer, value in _grad_norms(self.model).items():
                    norms.setdefault(layer, []).append(value)
            self.optimizer.step()
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1]):
                raise ParameterError(
                    f"the loss became {losses[-1]} at epoch {epoch}, step {len(losses)}; lower optim.lr or raise "
                    "loss.temperature"
                )
            on_step(losses[-1])
        train_loss = float(np.mean(losses))
        val_loss, val_auc = self.validate() if self.val_set is not None else (train_loss, None)
        self.scheduler.step(val_loss)
        record: dict[str, Any] = {"epoch": epoch, "loss": train_loss, "val_loss": val_loss, "val_auc": val_auc}
        record |= {"lr": lr, "seconds": time.perf_counter() - began}
        if self.config.monitor_gradients:
            record["grad_norms"] = {k: float(np.mean(v)) for k, v in norms.items()}
        return record

    def _val_batches(self) -> Iterable[list[int]]:
        if self.val_labels is None:
            raise ParameterError("validation batches need a validation set; pass dataset_val")
        order = np.random.default_rng(self.config.seed).permutation(len(self.val_labels))
        order = order[self.val_labels[order] >= 0]
        size = self.config.optim.batch_size
        return [order[i : i + size].tolist() for i in range(0, len(order), size)]

    @torch.no_grad()
    def validate(self) -> tuple[float, float | None]:
        """Mean validation loss (weighted by batch size) and ROC AUC of the change scores (``None``: one class)."""
        from sklearn.metrics import roc_auc_score

        if self.val_set is None:
            raise ParameterError("validation needs a validation set; pass dataset_val")
        self.model.eval()
        loader = DataLoader(self.val_set, batch_sampler=self._val_batches(), num_workers=self.config.data.workers)
        total, count, scores, labels = 0.0, 0, [], []
        for batch in loader:
            loss, score = self._loss(batch, None)
            total += float(loss) * len(score)
            count += len(score)
            scores.append(score.cpu().numpy())
            labels.append(batch["label"].numpy())
        if count == 0:
            raise ParameterError("dataset_val holds no labelled item; give a validation split with truth")
        y, s = np.concatenate(labels), np.concatenate(scores)
        auc = float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else None
        return total / count, auc

    def state(self, epoch: int, history: list[dict[str, Any]], best: tuple[int, float]) -> dict[str, Any]:
        """The full training state after ``epoch`` (see :mod:`changescope.train.state`)."""
        return {
            "version": st.STATE_VERSION,
            "kind": "multimodal",
            "epoch": epoch,
            "n_train": len(self.train_set),  # type: ignore[arg-type]
            "n_val": 0 if self.val_labels is None else len(self.val_labels),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": [dict(h) for h in history],
            "best_epoch": best[0],
            "best_val_loss": best[1],
            "config": self.config.model_dump(mode="json"),
        }

    def load(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` saved."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def _check_resume(state: dict[str, Any], path: Path, config: MultimodalConfig, n_train: int, n_val: int) -> None:
    if state.get("kind") != "multimodal":
        raise ParameterError(f"{str(path)!r} is not a multimodal training state; choose another out folder")
    if int(state["epoch"]) > config.optim.epochs:
        raise ParameterError(
            f"optim.epochs={config.optim.epochs} but the run in {str(path.parent.parent)!r} already trained "
            f"{state['epoch']} epochs; set optim.epochs to {state['epoch']} or more"
        )
    diffs = st.config_differences(state["config"], config.model_dump(mode="json"), ignore=RESUMABLE_FIELDS)
    if diffs:
        raise ParameterError(
            f"cannot resume from {str(path)!r}: the configuration differs from the run's in "
            + "; ".join(diffs)
            + ". Restore those values, or choose another out folder to start a new run"
        )
    if (int(state["n_train"]), int(state["n_val"])) != (n_train, n_val):
        raise ParameterError(
            f"cannot resume from {str(path)!r}: the datasets now hold {n_train} training and {n_val} validation "
            f"items but the run had {state['n_train']} and {state['n_val']}; restore the data or use another out folder"
        )


def _save_epoch(trainer: _Trainer, out: Path, history: list[dict[str, Any]], best: tuple[int, float]) -> None:
    import yaml

    cfg, epoch = trainer.config, int(history[-1]["epoch"])
    if best[0] == epoch:
        extra = {"epoch": epoch, "val_loss": best[1], "config": cfg.model_dump(mode="json")}
        save_model(trainer.model, out / "best", extra=extra)
    st.save_state(trainer.state(epoch, history, best), st.state_path(out, epoch))
    st.prune_states(out)
    st.write_json(history, out / "history.json")
    header = "# resolved configuration of this run (changescope multimodal train --config THIS_FILE)\n"
    st.write_text(header + yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), out / "config.yaml")


def train_multimodal(
    config: MultimodalConfig,
    dataset_train: Dataset[Any],
    dataset_val: Dataset[Any] | None,
    *,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[int], None] | None = None,
) -> MultimodalTrainResult:
    """Train the pseudo-siamese network on labelled optical/SAR windows (module docstring).

    Args:
        config: The validated configuration (:func:`~changescope.multimodal.config.load_config`).
        dataset_train: Training windows (items as in the module docstring; ``labels`` attribute used if present).
        dataset_val: Validation windows; ``None`` uses the training loss for the schedule and the best model.
        resume: Continue from the newest training state in ``config.out`` (a fresh start when there is none). The
            configuration must equal the run's except the :data:`RESUMABLE_FIELDS`.
        progress: Show a progress bar.
        on_epoch: Called with the epoch number after each epoch is saved (a callback that raises stops the run
            as a crash would there).

    Returns:
        The run folder, the best and last models and the history.

    Raises:
        ParameterError: ``out`` holds checkpoints and ``resume`` is False; the configuration or datasets differ
            from the run's on resume; the labels cannot fill a batch at the negative share; the loss diverges.
    """
    config = resolve_config(config, dataset_train)
    out = Path(config.out).expanduser()
    states = st.list_states(out)
    if not resume and st.has_checkpoints(out):
        raise ParameterError(
            f"out={str(out)!r} already holds checkpoints of a run; pass --resume (resume=True) to continue it, or "
            "choose another out folder"
        )
    device = resolve_device(config.device)
    with torch_threads(config.threads):
        trainer = _Trainer(config, dataset_train, dataset_val, device)
        history: list[dict[str, Any]] = []
        best = (0, math.inf)
        if resume and states:
            state = st.load_state(states[-1][1])
            n_val = 0 if trainer.val_labels is None else len(trainer.val_labels)
            _check_resume(state, states[-1][1], config, len(dataset_train), n_val)  # type: ignore[arg-type]
            trainer.load(state)
            history = [dict(h) for h in state["history"]]
            best = (int(state["best_epoch"]), float(state["best_val_loss"]))
        best = _train_epochs(trainer, out, history, best, progress, on_epoch)
        last = save_model(trainer.model, out / "last", extra={"epoch": len(history)})
    return MultimodalTrainResult(
        out=out,
        best=out / "best.safetensors",
        last=last,
        best_epoch=best[0],
        best_val_loss=best[1],
        epochs=len(history),
        history=history,
    )


def _train_epochs(
    trainer: _Trainer,
    out: Path,
    history: list[dict[str, Any]],
    best: tuple[int, float],
    progress: bool,
    on_epoch: Callable[[int], None] | None,
) -> tuple[int, float]:
    epochs, start = trainer.config.optim.epochs, len(history) + 1
    steps = len(trainer.sampler)
    with training_progress(progress) as bar:
        task = bar.add_task("", total=max(0, epochs - start + 1) * steps)
        for e in range(start, epochs + 1):
            running: list[float] = []

            def on_step(loss: float, e: int = e, running: list[float] = running) -> None:
                running.append(loss)
                text = f"epoch {e}/{epochs}  step {len(running)}/{steps}  loss {np.mean(running):.4f}"
                bar.update(task, advance=1, description=text)

            record = trainer.epoch(e, on_step)
            history.append(record)
            if record["val_loss"] < best[1]:
                best = (e, float(record["val_loss"]))
            _save_epoch(trainer, out, history, best)
            if on_epoch is not None:
                on_epoch(e)
    return best
