"""Epoch checkpoints for data-parallel training: model, optimiser, epoch, RNG states, data position.

One checkpoint is a folder; under Ray Train every rank reports its own folder and Ray merges them:

    state.pt     (rank 0) model and optimiser state dicts, completed epochs, metric history, and the
                 best-validation model so far (its epoch, metric and weights)
    rank<r>.pt   (every rank) torch / numpy / python / CUDA RNG states, the shuffle generator, and
                 the data position (next epoch, next batch) of that rank

Pure torch and files: no Ray. ``save_checkpoint`` writes, ``load_checkpoint`` restores in place.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = ["ResumeState", "rng_state", "restore_rng", "save_checkpoint", "load_checkpoint", "STATE_FILE"]

STATE_FILE = "state.pt"


@dataclass
class ResumeState:
    """Where training stands after restoring a checkpoint (or at a fresh start: epoch 0)."""

    epoch: int = 0  # completed epochs
    batch: int = 0  # next batch of the next epoch (epoch checkpoints: always 0)
    history: list[dict] = field(default_factory=list)
    best_metric: float = float("inf")
    best_epoch: int = 0
    best_state: dict | None = None  # weights of the best-validation epoch (rank 0)
    rng_restored: bool = False


def rng_state(generator: torch.Generator) -> dict:
    """Every random state a rank uses: global torch (and CUDA), numpy, python, and the shuffle generator."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
             "shuffle": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    generator.set_state(state["shuffle"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: str | Path, rank: int, core: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, resume: ResumeState) -> Path:
    """Write this rank's part of the checkpoint after ``resume.epoch`` completed epochs; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    position = {"epoch": resume.epoch, "batch": resume.batch}
    torch.save({"rng": rng_state(generator), "position": position}, folder / f"rank{rank}.pt")
    if rank == 0:
        torch.save({"model": core.state_dict(), "optimizer": optimizer.state_dict(), "epoch": resume.epoch,
                    "history": resume.history, "best_metric": resume.best_metric, "best_epoch": resume.best_epoch,
                    "best_model": resume.best_state},
                   folder / STATE_FILE)
    return folder


def load_checkpoint(folder: str | Path, rank: int, core: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator) -> ResumeState:
    """Restore model, optimiser and (when this rank saved them) RNG states in place; returns the position."""
    folder = Path(folder)
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=False)
    core.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    resume = ResumeState(epoch=state["epoch"], history=list(state["history"]),
                         best_metric=state["best_metric"], best_epoch=state["best_epoch"], best_state=state["best_model"])
    own = folder / f"rank{rank}.pt"
    if own.exists():  # absent when the group grew: the caller reseeds that rank
        part = torch.load(own, map_location="cpu", weights_only=False)
        restore_rng(part["rng"], generator)
        resume.batch = part["position"]["batch"]
        resume.rng_restored = True
    return resume
