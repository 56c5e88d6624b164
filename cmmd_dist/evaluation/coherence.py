"""Coherence (DESIGN.md section 1, MNIST-SVHN-Text): unimodal classifiers label the generated modalities.

For a dataset whose spec asks for it (``DatasetSpec.coherence``: modality -> ``mlp`` or ``conv``), one
classifier per modality (a judge: the feature net of ``model.networks`` and a linear head) is trained on the
TRAIN split's rows of that modality against the label: a few epochs of Adam, seeded, so the same rows give
the same judges. A model's figures (:meth:`Judges.figures`), per missing modality m it generates:

- ``coherence_<m>``: the judge of m's accuracy on the model's generation of m (from x_o alone), against the
  true label; ``coherence``: their mean over the missing modalities;
- ``coherence_ceiling_<m>``: the judge's accuracy on the TRUE m of the same rows, what a perfect generator scores.

Judges are trained once per dataset and cached in ``<output_dir>/coherence/`` (the folder that holds the run
folders, ``output_dir`` of ``cmmd-dist train`` / ``tune``): ``<dataset>-<key>.pt`` where the key hashes the
train split's arrays and labels, the seed and the recipe, so other rows (``data.limit``, another source) get
their own file. The file holds state_dicts (``torch.save``) and is read with ``weights_only=True``; one that
cannot be read or was made for other rows or another recipe is retrained and replaced (one warning line).
Pure torch and numpy: the cache folder is the caller's choice.
"""

from __future__ import annotations

import hashlib
import os
import uuid
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cmmd_dist.datasets.spec import DatasetSpec, ModalitySpec
from cmmd_dist.model.networks import MLP, feature_net
from cmmd_dist.datasets.tensors import SplitTensors

__all__ = ["FORMAT", "Recipe", "DEFAULT_RECIPE", "Judge", "Judges", "coherence_nets", "rows_key", "load_or_train",
           "coherence_judges", "cache_dir"]

FORMAT = "cmmd-coherence-judges/1"


@dataclass(frozen=True)
class Recipe:
    """How every judge trains: epochs over the train rows (at least ``min_steps`` steps, for small splits),
    batch size, Adam learning rate, MLP width, seed."""

    epochs: int = 5
    min_steps: int = 300
    batch_size: int = 128
    lr: float = 1e-3
    mlp_hidden: int = 400
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


DEFAULT_RECIPE = Recipe()


class Judge(nn.Module):
    """A unimodal classifier: ``mlp`` (one hidden softplus layer over the flattened modality) or ``conv`` (the
    image / text feature net of the prior, ``model.networks.feature_net``), then a linear head to the classes."""

    def __init__(self, net: str, modality: ModalitySpec, num_classes: int, mlp_hidden: int = 400):
        super().__init__()
        self.modality = modality
        if net == "mlp":
            self.features = nn.Sequential(nn.Flatten(), MLP(modality.size, (mlp_hidden,)))
            width = mlp_hidden
        else:
            self.features = feature_net(net, modality.shape)
            width = self.features.out_dim
        self.head = nn.Linear(width, num_classes)
        for layer in self.modules():
            if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                # Glorot, as model.networks.MLP: torch's default init leaves the softplus conv stacks on a long
                # plateau at chance (the text judge sat at chance for a hundred steps)
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def labels(self, x: torch.Tensor | np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Predicted class per row. A categorical modality (text) is read as the symbols it spells: its
        argmax one-hot, so a generated distribution over symbols is judged by its most likely string."""
        self.eval()
        device = next(self.parameters()).device
        x = torch.as_tensor(np.asarray(x, dtype=np.float32) if isinstance(x, np.ndarray) else x).to(device).float()
        x = x.reshape(len(x), *self.modality.shape)
        if self.modality.likelihood == "categorical":
            x = nn.functional.one_hot(x.argmax(-1), self.modality.shape[-1]).float()
        out = [self(x[s:s + batch_size]).argmax(-1).cpu().numpy() for s in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros(0, np.int64)


@dataclass
class Judges:
    """One trained judge per modality of ``dataset``, their cache file, and whether this call trained them."""

    dataset: str
    judges: dict[str, Judge]
    path: Path
    trained: bool = False
    recipe: Recipe = DEFAULT_RECIPE

    def figures(self, generated: dict[str, np.ndarray], truth: dict[str, torch.Tensor | np.ndarray],
                y: np.ndarray) -> dict[str, float]:
        """``coherence_<m>``, ``coherence_ceiling_<m>`` for each modality in ``generated`` that has a judge, and
        their mean ``coherence`` (nothing when no generated modality has a judge)."""
        y = np.asarray(y)
        out: dict[str, float] = {}
        scores = []
        for name, gen in generated.items():
            judge = self.judges.get(name)
            if judge is None:
                continue
            scores.append(float(np.mean(judge.labels(gen) == y)))
            out[f"coherence_{name}"] = scores[-1]
            true = truth[name].cpu().numpy() if isinstance(truth[name], torch.Tensor) else truth[name]
            out[f"coherence_ceiling_{name}"] = float(np.mean(judge.labels(true) == y))
        if scores:
            out["coherence"] = float(np.mean(scores))
        return out


def coherence_nets(spec: DatasetSpec) -> dict[str, str]:
    """Modality -> judge net for ``spec``: its own ``coherence``, else that of the registered dataset of the same
    name and modalities (a prepared dataset's manifest does not store it); {} when it asks for no coherence."""
    if spec.coherence:
        return dict(spec.coherence)
    from cmmd_dist.datasets.registry import SPECS

    known = SPECS.get(spec.name)
    def shapes(s: DatasetSpec) -> list[tuple]:
        return [(m.name, m.shape) for m in s.modalities]

    return dict(known.coherence) if known is not None and shapes(known) == shapes(spec) else {}


def rows_key(rows: SplitTensors, names: list[str], recipe: Recipe) -> str:
    """sha256 over the rows' arrays of ``names`` (shape and bytes), their labels and the recipe: all that decides
    the judges."""
    h = hashlib.sha256(repr((FORMAT, sorted(recipe.as_dict().items()))).encode())
    arrays = {**rows.obs, **rows.mis}
    for name in [*names, "__label__"]:
        t = rows.y if name == "__label__" else arrays[name]
        a = np.ascontiguousarray(t.detach().cpu().numpy())
        h.update(f"{name}:{a.dtype}:{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _train(judge: Judge, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, gen: torch.Generator) -> None:
    opt = torch.optim.Adam(judge.parameters(), lr=recipe.lr)
    judge.train()
    per_epoch = -(-len(x) // recipe.batch_size)
    for _ in range(max(recipe.epochs, -(-recipe.min_steps // per_epoch))):
        order = torch.randperm(len(x), generator=gen).to(x.device)
        for s in range(0, len(x), recipe.batch_size):
            idx = order[s:s + recipe.batch_size]
            loss = nn.functional.cross_entropy(judge(x[idx]), y[idx].long())
            opt.zero_grad()
            loss.backward()
            opt.step()
    judge.eval()


def _read(path: Path, key: str, spec: DatasetSpec, nets: dict[str, str], recipe: Recipe) -> dict[str, Judge] | None:
    """The judges of a cache file made for ``key``; None (and a warning line) when it is unreadable or foreign."""
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != FORMAT or blob.get("key") != key:
            raise ValueError("made for other rows, another recipe or not a judges file")
        judges = {}
        for name, net in nets.items():
            judges[name] = Judge(net, spec.modality(name), spec.num_classes, recipe.mlp_hidden)
            judges[name].load_state_dict(blob["judges"][name])
        return judges
    except Exception as err:  # any damage (truncated zip, unpickling refusal, missing or misshapen weights): retrain
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        warnings.warn(f"coherence judges {path}: not usable ({first}); retraining them", stacklevel=3)
        return None


def load_or_train(spec: DatasetSpec, train_rows: SplitTensors, cache: str | Path,
                  recipe: Recipe | None = None) -> Judges:
    """The judges of ``spec``'s coherence modalities for these training rows: read from ``cache`` when a file for
    the same rows and recipe is there, else trained (on the rows' device) and written there atomically."""
    recipe = recipe or DEFAULT_RECIPE
    nets = coherence_nets(spec)
    if not nets:
        raise ValueError(f"dataset {spec.name!r} asks for no coherence figure")
    key = rows_key(train_rows, sorted(nets), recipe)
    path = Path(cache) / f"{spec.name}-{key[:16]}.pt"
    judges = _read(path, key, spec, nets, recipe)
    if judges is not None:
        return Judges(spec.name, judges, path, trained=False, recipe=recipe)
    arrays = {**train_rows.obs, **train_rows.mis}
    device = train_rows.y.device
    judges = {}
    with torch.random.fork_rng(devices=[]):  # seeded without moving the caller's random state
        for i, (name, net) in enumerate(sorted(nets.items())):
            torch.manual_seed(recipe.seed + i)
            judge = Judge(net, spec.modality(name), spec.num_classes, recipe.mlp_hidden).to(device)
            _train(judge, arrays[name].float(), train_rows.y, recipe, torch.Generator().manual_seed(recipe.seed + i))
            judges[name] = judge
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "key": key, "dataset": spec.name, "recipe": recipe.as_dict(), "rows": len(train_rows),
            "judges": {n: {k: v.detach().cpu() for k, v in j.state_dict().items()} for n, j in judges.items()}}
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")  # the umask's mode, not 0600
    try:
        torch.save(blob, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return Judges(spec.name, judges, path, trained=True, recipe=recipe)


def cache_dir(output_dir: str | Path) -> Path:
    """Where the judges of runs writing under ``output_dir`` are cached: ``<output_dir>/coherence``."""
    return Path(output_dir) / "coherence"


def coherence_judges(spec: DatasetSpec, train_rows: SplitTensors, output_dir: str | Path,
                     recipe: Recipe | None = None) -> Judges | None:
    """:func:`load_or_train` under ``cache_dir(output_dir)`` for a dataset that asks for coherence; else None."""
    if not coherence_nets(spec) or not len(train_rows):
        return None
    return load_or_train(spec, train_rows, cache_dir(output_dir), recipe)
