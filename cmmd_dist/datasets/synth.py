"""``cmmd-dist data synth --like flickr``: synthetic data in the exact layout of the MIR Flickr converter.

    cmmd-dist data synth --like flickr --rows 25000 --unlabelled 1000000 --out /data/synth-flickr
    cmmd-dist data prepare --dataset flickr --source /data/synth-flickr --out /data/synth-flickr-shards

FOR TESTS AND BENCHMARKS ONLY: these rows are drawn from a made-up model, so no figure measured on them
(mAP, loss, speed per row aside) is ever to be reported or called a Flickr result.

What is written under ``--out`` (see :mod:`cmmd_dist.datasets.converters.flickr`, which reads it)::

    image/labelled.npy                      (rows, 3857) float32, real-valued image features
    text/text_all_2000_labelled.npz         (rows, 2000) scipy.sparse CSR (save_npz), tag counts (all 1)
    labels.npy                              (rows, 38) int8 0/1 multi-label
    splits/{train,valid,test}_indices_1.npy 40% / 20% / rest of a seeded permutation (10000/5000/10000 at 25000)
    image/unlabelled.npy, text/text_all_2000_unlabelled.npz    only when --unlabelled > 0

The sizes are Flickr's (3857, 2000, 38): the converter checks them, so they cannot be shrunk.

The model: each row picks one of ``TOPICS`` topics (a seeded Dirichlet prior) and a latent vector
``u = centre[topic] + noise`` in ``LATENT_DIM`` dims. The image features are a random linear map of
``u`` plus Gaussian noise, with a per-feature offset and scale; each tag is Bernoulli with a logit
linear in ``u`` and a Zipf-like base rate (about 5 tags a row, some rows with none, so the converter
drops some unlabelled rows for having fewer than 2); each label is Bernoulli with a logit linear in
``u`` plus a boost for the two topics tied to it, at a prevalence between 2% and 30%. Image, tags and
labels thus share the latents: a classifier on either modality ranks labels far better than chance.
The same seed gives byte-identical files (one generator per block of ``BLOCK_ROWS`` rows), and the
first rows of a larger set equal a smaller one's (the splits aside, which are drawn over all rows).

Memory: rows are generated and written ``BLOCK_ROWS`` at a time through a memory map of a window of
the ``.npy`` file, unmapped after each block, so the image features never sit in memory (about 70 MB
a block in all). The tags are built as one CSR block per block of rows and stacked before
``save_npz``: about 8 bytes per tag (int32 index + float32 count) plus 4 per row, held twice while
stacking, i.e. about 100 bytes a row: some 100 MB for 1,000,000 unlabelled rows. The files are
written into a hidden sibling of ``--out`` and moved into place at the end: an interrupted run leaves
nothing half-written under ``--out`` (the next run removes the sibling).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from scipy import sparse

from cmmd_dist.datasets.converters.flickr import IMAGE_DIM, NUM_LABELS, TAG_DIM
from cmmd_dist.errors import UserError

__all__ = ["BLOCK_ROWS", "TOPICS", "LATENT_DIM", "SYNTH_LAYOUT", "SYNTHS", "synth_like_flickr"]

BLOCK_ROWS = 1024  # rows generated and written at a time; part of the output (one generator per block)
TOPICS, LATENT_DIM = 24, 16
IMAGE_NOISE = 1.5  # per-feature noise sd against a signal sd of about 1.6: each feature is weak, all together are not
TAGS_PER_ROW = 5.0  # mean number of tags a row (MIR Flickr: about 5 of the 2000 most frequent)
LABEL_PREVALENCE = (0.02, 0.30)  # rarest and commonest label

# every file the generator may write; --overwrite replaces these and nothing else under --out
SYNTH_LAYOUT = ("image/labelled.npy", "text/text_all_2000_labelled.npz", "labels.npy",
                "splits/train_indices_1.npy", "splits/valid_indices_1.npy", "splits/test_indices_1.npy",
                "image/unlabelled.npy", "text/text_all_2000_unlabelled.npz")
_LABELLED, _UNLABELLED, _STRUCTURE, _SPLITS = 1, 2, 3, 4  # seed streams


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # tanh form: no overflow warning for large |x|


def _sigmoid_inplace(x: np.ndarray) -> np.ndarray:
    x *= 0.5
    np.tanh(x, out=x)
    x += 1.0
    x *= 0.5
    return x


def _calibrated_bias(signal: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-column bias b with mean(sigmoid(b + signal)) == target over the sample (Newton on b)."""
    target = target.astype(np.float32)  # float32 throughout: this sample must not set the peak memory
    bias = np.log(target) - np.log(np.exp(signal).mean(axis=0))  # exact as target -> 0
    for _ in range(8):
        p = _sigmoid(bias + signal)
        slope = np.maximum((p * (1 - p)).mean(axis=0), 1e-6)
        bias -= (p.mean(axis=0) - target) / slope
    return bias


class _Model:
    """The shared structure of a seed: topics, latent centres, the three maps and their biases."""

    def __init__(self, seed: int):
        rng = np.random.default_rng([seed, _STRUCTURE])
        self._image = None  # the block buffers, allocated by the first block
        self.prior = rng.dirichlet(np.full(TOPICS, 2.0))
        self.centres = rng.normal(0.0, 1.5, (TOPICS, LATENT_DIM)).astype(np.float32)
        self.img_map = rng.normal(0.0, LATENT_DIM**-0.5, (LATENT_DIM, IMAGE_DIM)).astype(np.float32)
        self.img_offset = rng.uniform(0.0, 2.0, IMAGE_DIM).astype(np.float32)
        self.img_scale = rng.lognormal(0.0, 0.5, IMAGE_DIM).astype(np.float32)
        self.tag_map = rng.normal(0.0, 1.2 * LATENT_DIM**-0.5, (LATENT_DIM, TAG_DIM)).astype(np.float32)
        self.label_map = rng.normal(0.0, 1.5 * LATENT_DIM**-0.5, (LATENT_DIM, NUM_LABELS)).astype(np.float32)
        self.topic_boost = np.zeros((TOPICS, NUM_LABELS), np.float32)
        for c in range(NUM_LABELS):
            self.topic_boost[rng.choice(TOPICS, 2, replace=False), c] = 2.5
        # Zipf-like tag base rates summing to TAGS_PER_ROW; log-spaced label prevalences
        zipf = 1.0 / (np.arange(TAG_DIM) + 4.0)
        tag_rate = np.minimum(zipf * TAGS_PER_ROW / zipf.sum(), 0.5)[rng.permutation(TAG_DIM)]
        lo, hi = LABEL_PREVALENCE
        prevalence = np.geomspace(hi, lo, NUM_LABELS)[rng.permutation(NUM_LABELS)]
        z, u = self.latents(rng, 1024)
        self.tag_bias = _calibrated_bias(u @ self.tag_map, tag_rate)
        self.label_bias = _calibrated_bias(u @ self.label_map + self.topic_boost[z], prevalence)

    def latents(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        z = rng.choice(TOPICS, size=n, p=self.prior)
        return z, self.centres[z] + 0.6 * rng.standard_normal((n, LATENT_DIM), dtype=np.float32)

    def block(self, rng: np.random.Generator, labelled: bool):
        """One block of ``BLOCK_ROWS`` rows: image features (a reused buffer), tags CSR, labels int8 or None.

        The big arrays are buffers allocated once and filled in place: fresh ones each block would let
        the allocator's heap, hence the peak memory, creep up with the number of blocks."""
        if self._image is None:
            self._image, self._image_tmp = (np.empty((BLOCK_ROWS, IMAGE_DIM), np.float32) for _ in range(2))
            self._tag_p, self._tag_draw = (np.empty((BLOCK_ROWS, TAG_DIM), np.float32) for _ in range(2))
            self._tag_mask = np.empty((BLOCK_ROWS, TAG_DIM), bool)
        z, u = self.latents(rng, BLOCK_ROWS)
        image = rng.standard_normal(dtype=np.float32, out=self._image)
        image *= IMAGE_NOISE
        image += np.matmul(u, self.img_map, out=self._image_tmp)
        image *= self.img_scale
        image += self.img_offset
        p = np.matmul(u, self.tag_map, out=self._tag_p)
        p += self.tag_bias
        _sigmoid_inplace(p)
        mask = np.less(rng.random(dtype=np.float32, out=self._tag_draw), p, out=self._tag_mask)
        rows, cols = np.nonzero(mask)  # CSR by hand: scipy would first copy the dense block as float
        indptr = np.searchsorted(rows, np.arange(BLOCK_ROWS + 1)).astype(np.int32)
        tags = sparse.csr_matrix((np.ones(len(cols), np.float32), cols.astype(np.int32), indptr),
                                 shape=(BLOCK_ROWS, TAG_DIM))
        labels = None
        if labelled:
            p = _sigmoid(self.label_bias + u @ self.label_map + self.topic_boost[z])
            labels = (rng.random((BLOCK_ROWS, NUM_LABELS), dtype=np.float32) < p).astype(np.int8)
        return image, tags, labels


def _write_window(path: Path, offset: int, start: int, block: np.ndarray) -> None:
    """Write ``block`` as rows ``start...`` of the .npy at ``path``, mapping only that window and unmapping
    it at once: a map kept open keeps every written page in this process's resident memory."""
    window = np.memmap(path, dtype=block.dtype, mode="r+", shape=block.shape,
                       offset=offset + start * block.shape[1] * block.itemsize)
    window[:] = block
    window.flush()
    del window


def _write_part(model: _Model, stage: Path, seed: int, rows: int, labelled: bool) -> float:
    """Generate and write one part (labelled or unlabelled); returns its mean number of tags a row."""
    name = "labelled" if labelled else "unlabelled"
    img_path = stage / "image" / f"{name}.npy"
    header = np.lib.format.open_memmap(img_path, mode="w+", dtype=np.float32, shape=(rows, IMAGE_DIM))
    offset = header.offset
    del header  # only the header was written: the data pages are created window by window
    labels = np.lib.format.open_memmap(stage / "labels.npy", mode="w+", dtype=np.int8,
                                       shape=(rows, NUM_LABELS)) if labelled else None
    tag_blocks = []
    for b, start in enumerate(range(0, rows, BLOCK_ROWS)):
        rng = np.random.default_rng([seed, _LABELLED if labelled else _UNLABELLED, b])
        # always a whole block, cut to the rows wanted: a row's values never depend on how many follow it
        image, tags, lab = model.block(rng, labelled)
        n = min(BLOCK_ROWS, rows - start)
        _write_window(img_path, offset, start, image[:n])
        tag_blocks.append(tags[:n])
        lab = lab[:n] if lab is not None else None
        if labels is not None:
            labels[start : start + len(lab)] = lab  # 38 bytes a row: small enough to stay mapped
    if labels is not None:
        labels.flush()
        del labels
    tags = sparse.vstack(tag_blocks, format="csr")
    del tag_blocks
    sparse.save_npz(stage / "text" / f"text_all_2000_{name}.npz", tags)
    return tags.nnz / rows


def _check_args(out: Path, rows: int, unlabelled: int, seed: int, overwrite: bool) -> None:
    if rows < 3:
        raise UserError(f"--rows must be >= 3 (one row each for train, valid and test), got {rows}")
    if unlabelled < 0:
        raise UserError(f"--unlabelled must be >= 0, got {unlabelled}")
    if seed < 0:
        raise UserError(f"--seed must be >= 0, got {seed}")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"--out {str(out)!r} is a non-empty folder; add --overwrite to replace its Flickr files")
    # a memory map past a full disk ends in SIGBUS, not an error: refuse before writing
    need = (rows + unlabelled) * (IMAGE_DIM * 4 + 100) + rows * NUM_LABELS
    anchor = next(p for p in (out, *out.parents) if p.exists())
    free = shutil.disk_usage(anchor).free
    if need > free:
        raise UserError(f"--out {str(out)!r}: needs {need / 1e9:.1f} GB, only {free / 1e9:.1f} GB free there")


def synth_like_flickr(out_dir: str | Path, rows: int, unlabelled: int = 0, seed: int = 0,
                      overwrite: bool = False) -> dict:
    """Write ``rows`` labelled and ``unlabelled`` unlabelled Flickr-shaped rows under ``out_dir`` (see the
    module docstring); returns a summary: out, rows, unlabelled, seed, mean tags a row, files written."""
    if "://" in str(out_dir):  # before Path(), which folds the '//'
        raise UserError(f"--out {str(out_dir)!r}: data synth writes a local folder (prepare it to S3 afterwards)")
    out = Path(out_dir).absolute()
    _check_args(out, rows, unlabelled, seed, overwrite)
    stage = out.parent / f".{out.name}.synth-partial"
    shutil.rmtree(stage, ignore_errors=True)  # left by an interrupted run
    for sub in ("image", "text", "splits"):
        (stage / sub).mkdir(parents=True)
    model = _Model(seed)
    tags_per_row = {"labelled": _write_part(model, stage, seed, rows, labelled=True)}
    if unlabelled:
        tags_per_row["unlabelled"] = _write_part(model, stage, seed, unlabelled, labelled=False)
    order = np.random.default_rng([seed, _SPLITS]).permutation(rows)
    n_tr, n_va = max(1, int(rows * 0.4)), max(1, int(rows * 0.2))
    for name, ix in (("train", order[:n_tr]), ("valid", order[n_tr : n_tr + n_va]), ("test", order[n_tr + n_va :])):
        np.save(stage / "splits" / f"{name}_indices_1.npy", np.sort(ix))
    written = [f for f in SYNTH_LAYOUT if (stage / f).exists()]
    for f in SYNTH_LAYOUT:  # a stale unlabelled part from an earlier run would be read with this one
        (out / f).unlink(missing_ok=True)
    for f in written:
        (out / f).parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / f, out / f)
    shutil.rmtree(stage)
    return {"out": str(out), "like": "flickr", "rows": rows, "unlabelled": unlabelled, "seed": seed,
            "tags_per_row": {k: round(v, 3) for k, v in tags_per_row.items()}, "files": written}


SYNTHS = {"flickr": synth_like_flickr}
