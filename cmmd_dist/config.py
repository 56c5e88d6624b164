"""Typed settings (pydantic v2) for data, model, loss and training; loadable from YAML.

Every model forbids unknown keys, so a typo in a YAML file is an error naming the key, and every float is
finite (``.nan`` / ``.inf`` in a YAML, ``--lr inf``: refused, not a NaN training). Seeds lie in
[0, 2**32 - 1] (what numpy and scikit-learn take). Cross-field checks live in one validator per model.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

__all__ = ["DataConfig", "ModelConfig", "LossConfig", "TrainConfig", "DistributedConfig", "RunConfig", "SweepConfig",
           "Folds", "DATASET_NAME"]

LikelihoodName = Literal["gaussian", "bernoulli", "categorical"]
SEED_MAX = 2**32 - 1  # numpy's and scikit-learn's seeds are 32-bit
# device kinds a run may name; whether one is present is checked where the run trains (train.single.train_device)
DEVICE_PATTERN = r"^(cpu|cuda(:[0-9]+)?|mps)$"
# a dataset's, sweep's or run's name: a folder under a storage and a registered model's name
DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _plain_name(name: str | None) -> str | None:
    """A sweep's or run's name, which is its folder under the storage: the dataset-name rule
    (:data:`DATASET_NAME`), so that it never leaves the storage ('../x', '/x', 'a/b')."""
    if name is not None and not DATASET_NAME.match(name):
        raise ValueError(f"{name!r} is not a plain name: letters, digits, '.', '_' or '-' (at most 64), starting "
                         "with a letter or digit (no '/', no '..')")
    return name


PlainName = Annotated[str | None, AfterValidator(_plain_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataConfig(_Strict):
    """Which dataset to train on and where it comes from: a prepared dataset, or a recipe / converter over source files."""

    dataset: str = Field(
        "digits2v",
        description="dataset name (digits2v, mnist2v, ...): with `prepared`, the name its manifest must carry; "
        "a local folder or s3:// URI here is read as `prepared`",
    )
    prepared: str | None = Field(
        None,
        description="prepared dataset (cmmd-dist train --data): local folder or s3://bucket/prefix holding a "
        "manifest, which must exist; the data come from it alone",
    )
    source: str | None = Field(
        None,
        description="original files a recipe / converter reads (as data prepare --source); None: the dataset's "
        "default; a given source that does not exist is an error",
    )
    scenario: str | None = Field(None, description="observed-modality scenario; None: the dataset's default")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of the dataset recipe (rotations, pairing, noise, splits)")
    limit: int | None = Field(None, ge=1, description="keep only the first rows of each split (quick runs)")
    likelihoods: dict[str, LikelihoodName] = Field(
        default_factory=dict, description="override the decoder likelihood of a missing modality, by name"
    )
    stream: Literal["auto", "always", "never"] = Field(
        "auto",
        description="stream a prepared dataset's shards (each worker reads its own part every epoch) instead of "
        "loading it whole: auto = when its rows take more than stream_above_mb as float32",
    )
    stream_above_mb: float = Field(
        1000.0, gt=0, description="size (MB of float32 rows, all splits) above which stream=auto streams"
    )
    shuffle_buffer: int = Field(
        4096, ge=0, description="streamed: rows a worker mixes across files before batching (with the file order, "
        "seeded by the epoch); memory 2 x (shuffle_buffer + rows per file) x row bytes"
    )
    prefetch: int = Field(2, ge=1, description="streamed: shard files a worker reads ahead of the one being batched")

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        uri_dataset = "/" in self.dataset or self.dataset.startswith(".")  # as registry.looks_like_uri
        if self.prepared and uri_dataset and self.dataset != self.prepared:
            raise ValueError(f"data.dataset {self.dataset!r} and data.prepared {self.prepared!r} name two prepared datasets")
        if self.source is not None and (self.prepared or uri_dataset):
            raise ValueError(f"data.source {self.source!r} is for building a dataset from its original files; "
                             "a prepared dataset (data.prepared / --data) takes none")
        return self


class ModelConfig(_Strict):
    """Which model (CMMD or a baseline of the paper) and its network sizes (paper appendix C); every list is
    hidden-layer widths. The baselines reuse the widths: encoder_hidden for their encoders (one per modality
    for MVAE / MMVAE), decoder_hidden for their decoders (from z alone), prior_hidden for M-x_o's network."""

    kind: Literal["cmmd", "vcca", "mvae", "mmvae", "mx_o"] = Field(
        "cmmd", description="cmmd; vcca (Wang et al. 2017); mvae (product of experts, Wu & Goodman 2018); "
        "mmvae (mixture of experts, Shi et al. 2019); mx_o (the classifier on x_o alone)")
    beta: float = Field(1.0, ge=0.0, description="vcca, mvae: weight of the KL to the N(0, I) prior in the ELBO")
    mvae_subsets: int = Field(0, ge=0, description="mvae: random sub-ELBOs of 2..M-1 modalities per step "
                              "(beside the joint and the unimodal ones; needs 3 or more modalities)")
    mmvae_objective: Literal["elbo", "iwae"] = Field("elbo", description="mmvae: stratified ELBO or IWAE bound")
    mmvae_k: int = Field(1, ge=1, description="mmvae: samples per expert (the IWAE's K)")
    zdim: int = Field(50, ge=1, description="latent dimension D")
    encoder_hidden: list[int] = Field(default_factory=lambda: [2500, 2500, 2500], description="q(z|x_o,x_m,c) MLP")
    prior_hidden: list[int] = Field(default_factory=lambda: [1024, 1024, 1024], description="p(z|x_o) MLP after feature nets")
    decoder_hidden: list[int] = Field(default_factory=lambda: [1024, 1024, 1024], description="p(x_m|z,x_o) MLP decoders")
    classifier_hidden: list[int] = Field(default_factory=lambda: [50, 50], description="p(c|mu_p) MLP")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="dropout after every hidden layer")
    decoder_uses_xo: bool = Field(True, description="MLP decoders also see vectorised x_o (reference code)")
    gaussian_variance: Literal["learned", "fixed"] = Field("learned", description="Gaussian decoder variance")
    fixed_variance: float = Field(1.0, gt=0.0, description="variance of Gaussian heads when gaussian_variance=fixed")
    feature_nets: dict[str, Literal["mlp", "conv"]] = Field(
        default_factory=dict, description="prior feature net per observed modality (default mlp: flatten)"
    )
    decoder_nets: dict[str, Literal["mlp", "conv"]] = Field(
        default_factory=dict, description="decoder kind per missing modality (default mlp)"
    )

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        for name in ("encoder_hidden", "prior_hidden", "decoder_hidden", "classifier_hidden"):
            widths = getattr(self, name)
            if any(w < 1 for w in widths):
                raise ValueError(f"{name}: every width must be >= 1, got {widths}")
        if not self.encoder_hidden:
            raise ValueError("encoder_hidden: the encoder needs at least one hidden layer")
        if self.mmvae_objective == "iwae" and self.kind == "mmvae" and self.mmvae_k < 2:
            raise ValueError("mmvae_objective iwae needs mmvae_k >= 2 (at K = 1 it is the ELBO)")
        return self


class LossConfig(_Strict):
    """The CMMD objective: L = REC + lam*KL + (1-lam)*mmd_weight*MMD + cls_weight*CE."""

    lam: float = Field(0.4, ge=0.0, le=1.0, description="trade-off lambda in [0,1]: 1 = ELBO, 0 = MMD only")
    mmd_weight: float = Field(1000.0, ge=0.0, description="weight of the MMD term (reference: 1000)")
    cls_weight: float = Field(10.0, ge=0.0, description="weight of the classification term (reference: 10)")
    ce_reduction: Literal["sum", "mean"] = Field("sum", description="batch reduction of the cross-entropy (reference: sum)")
    n_samples: int = Field(1, ge=1, description="posterior samples S per row")
    mmd_scope: Literal["global", "local"] = Field(
        "global", description="MMD over the all-gathered global batch, or per shard (for comparison)"
    )


class TrainConfig(_Strict):
    """Optimisation and stopping."""

    epochs: int = Field(50, ge=1, description="maximum epochs")
    batch_size: int = Field(256, ge=1, description="rows per step (per worker under DDP)")
    lr: float = Field(1e-4, gt=0.0, description="Adam learning rate")
    patience: int = Field(10, ge=1, description="epochs without validation improvement before stopping")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of initialisation, shuffling and sampling")
    device: str = Field("cpu", pattern=DEVICE_PATTERN, description="torch device: cpu, cuda, cuda:N or mps")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; None leaves torch's default")
    pretrain_epochs: int = Field(0, ge=0, description="semi-supervised pretraining epochs (no label, no classifier)")
    steps_per_epoch: int | None = Field(
        None, ge=1, description="cap every epoch at this many steps (smoke runs and benchmarks at full size); "
        "None: every row once per epoch")
    baseline: bool = Field(True, description="also train the M-x_o baseline (classifier on x_o alone)")
    progress: bool = Field(True, description="show a progress bar")


class DistributedConfig(_Strict):
    """Ray Train data parallelism (train.batch_size is per worker; the global batch is workers x batch_size)."""

    workers: int = Field(1, ge=1, description="Ray Train workers (DDP ranks)")
    use_gpu: bool = Field(False, description="one GPU per worker, nccl backend; else CPU and gloo")
    bf16: bool = Field(False, description="bf16 autocast of the forward pass and loss")
    cpus_per_worker: int = Field(1, ge=1, description="CPUs reserved per worker; also its torch thread count")
    storage: str | None = Field(None, description="checkpoint/run storage: local folder or s3://bucket/prefix; None: <output_dir>/ray")
    max_failures: int = Field(2, ge=-1, description="worker-group restarts from the latest checkpoint (-1: unlimited)")
    keep_checkpoints: int | None = Field(2, ge=1, description="newest checkpoints kept in storage; None keeps all")
    name: PlainName = Field(None, description="Ray Train run name (a plain name, its folder under storage); "
                            "None: <dataset>-<timestamp>")


class Folds(_Strict):
    """Cross-validation inside every trial, over the train+val rows (test stays untouched)."""

    k: int = Field(3, ge=2, description="number of folds")
    strategy: Literal["stratified", "kfold", "grouped"] = Field(
        "stratified", description="stratified by class, plain k-fold, or grouped by the dataset's group column"
    )
    seed: int = Field(0, description="seed of the fold assignment")


class RunConfig(_Strict):
    """One training run."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    output_dir: str = Field("runs", min_length=1, description="folder under which each run writes its results")


class SweepConfig(_Strict):
    """One hyperparameter sweep (``python -m cmmd_dist.tune``); unset values come from the search space."""

    dataset: str | None = Field(None, description="dataset name; its search space is the packaged cmmd_dist/search_spaces/<dataset>.yaml; "
                                "None: the name in the manifest of `data`, else the `space` file's, else digits2v")
    space: str | None = Field(None, description="search-space YAML path; None: the packaged space of the dataset")
    scenario: str | None = Field(None, description="observed-modality scenario; each scenario is its own sweep")
    preset: str | None = Field(None, description="named preset of the space (paper, smoke, ...)")
    num_trials: int | None = Field(None, ge=1, description="trials to run; None: the space's")
    time_budget_s: float | None = Field(None, gt=0, description="stop starting trials after this many seconds")
    max_trial_epochs: int | None = Field(
        None, ge=1, description="compute budget: stop the sweep once its trials have run this many trial-epochs "
        "(one epoch of all folds of one trial; running trials end at their last reported epoch; 1-worker trials); "
        "None: no cap")
    workers_per_trial: int | None = Field(None, ge=1, description="Ray Train workers per trial; None: the space's")
    use_gpu: bool = Field(False, description="one GPU per worker")
    bf16: bool = Field(False, description="bf16 autocast in every trial and the retrain (the MMD kernel stays fp32)")
    data: str | None = Field(None, description="prepared dataset URI (local folder or s3://...)")
    storage: str | None = Field(None, description="sweep storage: local folder or s3://bucket/prefix; None: <output_dir>/sweeps")
    searcher: Literal["optuna", "random", "grid"] | None = Field(
        None, description="TPE (optuna), random (Optuna's random sampler) or the space's grid; None: the space's")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of the searcher and of every trial")
    grace_period: int | None = Field(None, ge=1, description="ASHA: epochs before a trial may be stopped; None: the space's")
    reduction_factor: float | None = Field(None, gt=1, description="ASHA: keep the best 1/reduction_factor at each rung; None: the space's")
    asha: bool = Field(True, description="prune trials with ASHA (off: every trial runs to the end)")
    max_concurrent_trials: int | None = Field(None, ge=1, description="None: cluster CPUs / (workers x cpus per worker)")
    name: PlainName = Field(None, description="sweep name (a plain name, its folder under storage); "
                            "None: sweep-<dataset>[-<scenario>]")
    resume: bool = Field(False, description="continue an interrupted sweep of the same name from its storage")
    retrain: bool = Field(True, description="retrain the best configuration on train+val and test it once")
    output_dir: str = Field("runs", min_length=1, description="folder for the summary JSON and retrained model")
    mlflow: str | None = Field(None, description="MLflow tracking URI; None: MLFLOW_TRACKING_URI or the embedded store")
