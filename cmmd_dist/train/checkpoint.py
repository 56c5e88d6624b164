"""Epoch checkpoints for data-parallel training: model, optimiser, epoch, RNG states, data position.

One checkpoint is a folder; under Ray Train every rank reports its own folder and Ray merges them:

    state.pt     (rank 0) model and optimiser state dicts, completed epochs, the stage of the last one
                 and its epoch within that stage, metric history, and the best-validation model so
                 far (its supervised epoch, metric and weights)
    rank<r>.pt   (every rank) torch / numpy / python / CUDA RNG states, the shuffle generator, and
                 the data position (stage, epoch, next batch) of that rank

Stages (Flickr's recipe): ``pretrain`` epochs (no label, no classifier term) come before the
``supervised`` ones; ``epoch`` counts on across both. The stage is recorded, not derived from the
epoch, so that a run killed during pretraining resumes in pretraining at the next epoch, and a run
resumed with other ``pretrain_epochs`` never goes back to pretraining once it is supervised.
A checkpoint without a stage (written before stages were recorded) is a supervised one.

Pure torch and files: no Ray. ``save_checkpoint`` writes, ``load_checkpoint`` restores in place.

Checkpoints live on shared storage, so whoever can write there must not be able to run code on the
workers: every file holds only tensors and plain values (numpy's RNG state is stored as a tensor), and
``load_file`` reads it with ``weights_only=True``; anything else is refused as a ``UserError`` naming the file.
"""

from __future__ import annotations

import pickle
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cmmd_dist.errors import UserError
from cmmd_dist.train.optim import load_optimizer_state

__all__ = ["ResumeState", "STAGES", "rng_state", "restore_rng", "save_checkpoint", "load_checkpoint", "load_file", "plain_row",
           "STATE_FILE"]

STATE_FILE = "state.pt"
STAGES = ("pretrain", "supervised")


@dataclass
class ResumeState:
    """Where training stands after restoring a checkpoint (or at a fresh start: epoch 0)."""

    epoch: int = 0  # completed epochs, both stages
    batch: int = 0  # next batch of the next epoch (epoch checkpoints: always 0)
    stage: str = "pretrain"  # stage of the last completed epoch (a fresh start: before pretraining)
    stage_epoch: int = 0  # completed epochs of that stage
    history: list[dict] = field(default_factory=list)
    best_metric: float = float("inf")
    best_epoch: int = 0  # supervised epoch of the best validation metric
    best_state: dict | None = None  # weights of the best-validation epoch (rank 0)
    rng_restored: bool = False

    def next_stage(self, pretrain_epochs: int) -> tuple[str, int]:
        """(stage, epoch within it) of the epoch after the last completed one."""
        if self.stage == "pretrain" and self.stage_epoch < pretrain_epochs:
            return "pretrain", self.stage_epoch + 1
        if self.stage == "pretrain":
            return "supervised", 1
        return "supervised", self.stage_epoch + 1

    def advance(self, stage: str, stage_epoch: int) -> None:
        """Mark one more epoch completed, of ``stage`` (its ``stage_epoch``-th)."""
        self.epoch, self.batch, self.stage, self.stage_epoch = self.epoch + 1, 0, stage, stage_epoch


def rng_state(generator: torch.Generator) -> dict:
    """Every random state a rank uses: global torch (and CUDA), numpy, python, and the shuffle generator.

    Only tensors, ints, floats, tuples and None, so that ``weights_only=True`` loads it: numpy's
    ``('MT19937', uint32 keys, pos, has_gauss, cached_gaussian)`` keeps its keys as an int64 tensor."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {"torch": torch.get_rng_state(),
             "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": random.getstate(), "shuffle": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    random.setstate(state["python"])
    generator.set_state(state["shuffle"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: str | Path, rank: int, core: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, resume: ResumeState) -> Path:
    """Write this rank's part of the checkpoint after ``resume.epoch`` completed epochs; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    position = {"epoch": resume.epoch, "batch": resume.batch, "stage": resume.stage, "stage_epoch": resume.stage_epoch}
    torch.save({"rng": rng_state(generator), "position": position}, folder / f"rank{rank}.pt")
    if rank == 0:
        torch.save({"model": core.state_dict(), "optimizer": optimizer.state_dict(), "epoch": resume.epoch,
                    "stage": resume.stage, "stage_epoch": resume.stage_epoch,
                    "history": [plain_row(row) for row in resume.history], "best_metric": float(resume.best_metric),
                    "best_epoch": int(resume.best_epoch), "best_model": resume.best_state},
                   folder / STATE_FILE)
    return folder


def plain_row(row: dict) -> dict:
    """A history row with numpy scalars as Python numbers (``weights_only`` refuses numpy objects)."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in row.items()}


def load_file(path: str | Path) -> dict:
    """One checkpoint file, loaded with ``weights_only=True``: code hidden in it is refused, never run."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as err:  # anything else comes from parsing untrusted bytes: the file is at fault
        found = re.search(r"[Uu]nsupported [^\n]*", str(err)) if isinstance(err, pickle.UnpicklingError) else None
        why = found.group(0).split(". ")[0].rstrip(".") if found else "not a readable torch checkpoint"
        raise UserError(f"checkpoint file {path} refused: it may hold only tensors and plain values ({why}); "
                        "written by an older cmmd-dist, by another program, or tampered with") from err


def load_checkpoint(folder: str | Path, rank: int, core: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator) -> ResumeState:
    """Restore model, optimiser and (when this rank saved them) RNG states in place; returns the position."""
    folder = Path(folder)
    state = load_file(folder / STATE_FILE)
    core.load_state_dict(state["model"])
    load_optimizer_state(optimizer, state["optimizer"])  # keeps the fused kernel the optimiser was built with
    stage = state.get("stage", "supervised")  # older checkpoints: supervised epochs only
    if stage not in STAGES:
        raise UserError(f"checkpoint file {folder / STATE_FILE} refused: unknown stage {stage!r} (expected one of {STAGES})")
    resume = ResumeState(epoch=state["epoch"], stage=stage, stage_epoch=state.get("stage_epoch", state["epoch"]),
                         history=list(state["history"]), best_metric=state["best_metric"],
                         best_epoch=state["best_epoch"], best_state=state["best_model"])
    own = folder / f"rank{rank}.pt"
    if own.exists():  # absent when the group grew: the caller reseeds that rank
        part = load_file(own)
        restore_rng(part["rng"], generator)
        resume.batch = part["position"]["batch"]
        resume.rng_restored = True
    return resume
