"""In-memory dataset contract: what a dataset declares (modalities, label, scenarios) and holds (splits).

Every loader, converter and storage reader produces these objects; training consumes them.
Arrays are float32 with shape (N, *modality.shape); labels are int64 (N,) for classes or
float32 (N, C) multi-hot for multi-label data. A dataset too big for memory is a :class:`DatasetStream`:
the same splits, each read as a sequence of bounded row blocks (``data prepare`` writes it block by block).
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

# a dataset's name becomes part of run folders, experiment and registered-model names: no '/' or '..'
from cmmd_dist.config import DATASET_NAME  # one rule for dataset, sweep and run names

__all__ = ["ModalitySpec", "DatasetSpec", "Split", "DatasetBundle", "DatasetStream", "Likelihood", "LabelKind",
           "DATASET_NAME", "empty_split", "concat_splits", "check_classes"]

Likelihood = Literal["gaussian", "bernoulli", "categorical"]
LabelKind = Literal["classes", "multilabel"]


@dataclass(frozen=True)
class ModalitySpec:
    """One modality: its name, the shape of one example, and the likelihood of its decoder head.

    For ``categorical`` the LAST axis is the one-hot alphabet (e.g. text (8, 71))."""

    name: str
    shape: tuple[int, ...]
    likelihood: Likelihood

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is: modalities, label kind, and the observed/missing scenarios the paper uses.

    ``scenarios`` maps a scenario name to the tuple of OBSERVED modality names; the rest are missing.
    ``default_scenario`` is the one training uses unless told otherwise. ``coherence`` maps each modality that
    a unimodal classifier labels for the coherence figure (``cmmd_dist.evaluation.coherence``) to that classifier's
    feature net, ``mlp`` or ``conv``; empty: the dataset has no coherence figure."""

    name: str
    modalities: tuple[ModalitySpec, ...]
    label_kind: LabelKind
    num_classes: int
    scenarios: dict[str, tuple[str, ...]]
    default_scenario: str
    group_column: str | None = None
    coherence: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = {m.name for m in self.modalities}
        for m in self.modalities:
            if m.likelihood not in typing.get_args(Likelihood):
                raise ValueError(f"dataset {self.name!r}: modality {m.name!r} has likelihood {m.likelihood!r}; "
                                 f"known: {list(typing.get_args(Likelihood))}")
        if self.label_kind not in typing.get_args(LabelKind):
            raise ValueError(f"dataset {self.name!r}: label_kind {self.label_kind!r}; known: {list(typing.get_args(LabelKind))}")
        if len(names) != len(self.modalities):
            raise ValueError(f"dataset {self.name!r}: a modality name is used twice: {[m.name for m in self.modalities]}")
        for name, net in self.coherence.items():
            if name not in names or net not in ("mlp", "conv"):
                raise ValueError(f"dataset {self.name!r}: coherence entry {name!r}: {net!r} needs one of its modalities "
                                 f"{sorted(names)} and a net 'mlp' or 'conv'")
        if self.coherence and self.label_kind != "classes":
            raise ValueError(f"dataset {self.name!r}: coherence needs class labels, not {self.label_kind!r}")

    def modality(self, name: str) -> ModalitySpec:
        for m in self.modalities:
            if m.name == name:
                return m
        raise KeyError(f"dataset {self.name!r} has no modality {name!r}; it has {[m.name for m in self.modalities]}")

    def split_modalities(self, scenario: str | None = None) -> tuple[tuple[ModalitySpec, ...], tuple[ModalitySpec, ...]]:
        """(observed, missing) modality specs of a scenario."""
        scenario = scenario or self.default_scenario
        if scenario not in self.scenarios:
            raise KeyError(f"dataset {self.name!r} has no scenario {scenario!r}; it has {sorted(self.scenarios)}")
        obs_names = self.scenarios[scenario]
        observed = tuple(self.modality(n) for n in obs_names)
        missing = tuple(m for m in self.modalities if m.name not in obs_names)
        return observed, missing

    def scenario_names(self, scenario: str | None = None) -> tuple[list[str], list[str]]:
        """(observed, missing) modality NAMES of a scenario: what rows are split by (``SplitTensors.from_split``)."""
        observed, missing = self.split_modalities(scenario)
        return [m.name for m in observed], [m.name for m in missing]


@dataclass
class Split:
    """The rows of one split: one array per modality, labels, and optional group ids (for folds)."""

    arrays: dict[str, np.ndarray]
    labels: np.ndarray
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: np.ndarray) -> "Split":
        """A new Split holding the rows at ``index`` (copies)."""
        return Split(
            arrays={k: v[index] for k, v in self.arrays.items()},
            labels=self.labels[index],
            groups=None if self.groups is None else self.groups[index],
        )


@dataclass
class DatasetBundle:
    """A dataset's spec and its train / val / test splits."""

    spec: DatasetSpec
    train: Split
    val: Split
    test: Split
    extra: dict[str, Split] = field(default_factory=dict)  # e.g. Flickr's unlabeled rows

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "val": self.val, "test": self.test, **self.extra}

    def check_trainable(self, where: str | None = None) -> None:
        """A ValueError naming the dataset (``where``: its location) and the split, unless train, val and test
        each have rows and the training rows hold at least two classes (one class leaves nothing to learn, and
        the latent classifier refuses it)."""
        where = where or f"dataset {self.spec.name!r}"
        for name in ("train", "val", "test"):
            if len(getattr(self, name)) == 0:
                raise ValueError(f"{where}: split {name!r} has no rows")
        if self.spec.label_kind == "classes":
            check_classes(where, np.unique(self.train.labels).tolist())


def check_classes(where: str, classes: list[int], rows: str = "the training rows") -> None:
    """A ValueError naming ``where`` when ``rows`` hold fewer than two ``classes`` (their distinct labels)."""
    if len(classes) < 2:
        raise ValueError(f"{where}: {rows} hold a single class ({classes}); a classifier needs at least two")


def empty_split(spec: DatasetSpec) -> Split:
    """A Split of no rows with the shapes and dtypes of ``spec``."""
    labels = np.zeros(0, np.int64) if spec.label_kind == "classes" else np.zeros((0, spec.num_classes), np.float32)
    return Split(arrays={m.name: np.zeros((0, *m.shape), np.float32) for m in spec.modalities}, labels=labels)


def concat_splits(parts: list[Split]) -> Split:
    """The rows of ``parts`` in order as one Split (the part itself when there is one: no copy).

    Groups: None when no part has any; a part without groups gets -1, as the shard writer stores it."""
    if len(parts) == 1:
        return parts[0]
    groups = None
    if any(p.groups is not None for p in parts):
        groups = np.concatenate([np.full(len(p), -1, np.int64) if p.groups is None else p.groups for p in parts])
    return Split(arrays={k: np.concatenate([p.arrays[k] for p in parts]) for k in parts[0].arrays},
                 labels=np.concatenate([p.labels for p in parts]), groups=groups)


@dataclass
class DatasetStream:
    """A dataset read block by block: its spec and, per split (train, val, test first, then e.g.
    ``unlabeled``), a function that yields the split's rows in order as Splits of bounded size.

    Nothing is read until a split's function is called, so a converter of a source bigger than memory
    returns one of these, and the shard writer holds one block (and one file's rows) at a time."""

    spec: DatasetSpec
    splits: dict[str, Callable[[], Iterable[Split]]]

    @classmethod
    def of_bundle(cls, bundle: DatasetBundle) -> "DatasetStream":
        """The splits of an in-memory bundle, each as one block (views, no copy)."""
        return cls(spec=bundle.spec, splits={name: (lambda s=split: iter((s,))) for name, split in bundle.splits().items()})

    def blocks(self, name: str) -> Iterator[Split]:
        return iter(self.splits[name]())

    def to_bundle(self) -> DatasetBundle:
        """Every split read into memory: for small sources and tests, never for a source bigger than memory."""
        whole = {name: concat_splits(list(self.blocks(name)) or [empty_split(self.spec)]) for name in self.splits}
        return DatasetBundle(spec=self.spec, train=whole.pop("train"), val=whole.pop("val"), test=whole.pop("test"),
                             extra=whole)
