"""Experiment suites as data: which datasets, methods, seeds and eta grid a suite runs.

A dataset entry names a config file in `configs/` (the same file `train.py` runs) and the changes
that fit the suite's budget; a method entry is the change that selects the method. A searched
method's eta and sign are not set here: the runner picks them per dataset on a validation split
(see `runner`).

    cpu          the paper's four domains on real local data, sized for a 2-core CPU
    bn_ablation  MixupE-exact vs its clean pass alone (eta = 0) on the cpu suite's BatchNorm models
    tiny         two datasets, two methods, one seed, a few steps: for tests and a first try
    converged    models that fit their data, trained until validation accuracy stops improving
    cora_dropout Mixup and its clean pass on Cora at 15 seeds: is converged's gap systematic?
    converged_power  converged's five main methods at the seeds that resolve a 1-point effect
    regmixup     RegMixup beside converged's Mixup, clean pass and MixupE-exact
    fair_alpha   converged_power with Mixup's alpha searched as MixupE's eta is
    label_noise  a regime where Mixup helps: 40% of the training labels wrong, alpha searched
    label_noise_sizing  its ERM and Mixup alone: is Mixup - ERM resolved there?
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
  config_file: str  # Relative to the configs folder, with ":<arg>" where the file takes one.
  overrides: dict[str, Any]  # Dotted config field -> value; "{data_dir}" in strings is filled in.
  # Graphs mix after the last propagation (see configs/cora_gcn.py), so their Mixup is Manifold's.
  manifold: bool = False
  seeds: tuple[int, ...] | None = None  # None: the suite's seeds.
  methods: tuple[str, ...] | None = None  # None: every method of the suite.
  search_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # Search runs only.


@dataclasses.dataclass(frozen=True)
class MethodEntry:
  overrides: dict[str, Any]
  searched: bool = False  # MixupE: eta and flip_sign come from the validation search.
  search_as: str | None = None  # Takes the eta and flip_sign chosen for this other method.


@dataclasses.dataclass(frozen=True)
class Suite:
  name: str
  datasets: dict[str, DatasetEntry]
  methods: dict[str, MethodEntry]
  seeds: tuple[int, ...]
  # The search: every (eta, flip_sign) pair, one seed, trained on train minus a validation split
  # and scored on that split only. flip_sign=False is each variant's published sign.
  eta_grid: tuple[float, ...] = (0.1, 1.0)
  sign_grid: tuple[bool, ...] = (False, True)
  search_seed: int = 0
  validation_fraction: float = 0.1  # Graphs use their standard validation nodes instead.
  # Mixup's alpha, searched like eta (empty: every method at its config's alpha): `alpha_method`
  # at each alpha on the search's seed, budget and split; the chosen alpha then holds for every
  # mixing method of the dataset, MixupE's eta search included.
  alpha_grid: tuple[float, ...] = ()
  alpha_method: str = "mixup"
  # Whether the report pools each contrast over the datasets (`pooled`): not where the datasets
  # are one set in two regimes tried one after the other (a sizing).
  pool: bool = True
  # The comparisons the table reports: (method, baseline).
  comparisons: tuple[tuple[str, str], ...] = (
    ("mixupe_exact", "mixup"),
    ("mixupe_fast", "mixup"),
    ("mixupe_exact_all", "mixup"),
  )
  # Runs live under workdir/experiments/<runs_of or name>: a suite that names another suite here
  # reuses that suite's finished runs (same dataset, method, seed and search) instead of repeating
  # them.
  runs_of: str | None = None
  results_dir: str | None = None  # Where the table goes by default (None: the runs' folder).
  # Where each finished run's result file is kept across sessions (committed; see `runner`).
  store: str | None = None
  # Set on every dataset's config before its own changes. The suites run on one device and were
  # measured pairing over the whole batch, as the official code does, on host-normalized images;
  # pinned so that the library's later defaults (scope "group", normalization on the device,
  # which differs in the last bit) do not change their stored runs.
  overrides: dict[str, Any] = dataclasses.field(
    default_factory=lambda: {"mixing_scope": "global", "normalize_on_device": False}
  )


# The methods: ERM, Mixup, and MixupE in its two main forms, exact (v1, the directional derivative
# by forward mode, threshold tau = -1 on the official per-example r_i) and fast (v3, the official
# README's recipe, tau = 1); and exact without a threshold (tau = +inf: every r_i enters), the
# paper's equation L_mix + eta m_1 (1/B) sum_i r_i, where the per-example split cannot matter.
METHODS = {
  "erm": MethodEntry({"method": "erm"}),
  "mixup": MethodEntry({"method": "mixup"}),
  "mixupe_exact": MethodEntry({"method": "mixupe", "variant": "v1"}, searched=True),
  "mixupe_fast": MethodEntry({"method": "mixupe", "variant": "v3"}, searched=True),
  "mixupe_exact_all": MethodEntry(
    {"method": "mixupe", "variant": "v1", "threshold": float("inf")}, searched=True
  ),
}

_QUIET = {"progress_bar": False, "keep_checkpoints": 1}


def _uci(name: str, **overrides) -> DatasetEntry:
  return DatasetEntry(
    f"uci_mlp.py:{name}", {"dataset": f"uci:{name}:{{data_dir}}/uci", **_QUIET, **overrides}
  )


CPU = Suite(
  name="cpu",
  datasets={
    "digits": DatasetEntry("digits_mlp.py", {"num_epochs": 30, **_QUIET}),
    "fashion_mnist": DatasetEntry(
      "fashion_mnist_cnn.py",
      {
        "dataset": "idx:{data_dir}/fashion_mnist",
        "model.channels": (16, 32),
        "num_train_steps": 200,
        "log_every_steps": 20,
        **_QUIET,
      },
    ),
    # PreActResNet-10 (one block per stage) of width 16: 1/32 of PreActResNet-18's FLOPs.
    "cifar10": DatasetEntry(
      # The MixupE settings its runs were made with (before the config's default became the
      # official README's recipe): alpha 1, the variants' own thresholds.
      "cifar10_preactresnet18.py:official_code_default",
      {
        "dataset": "imagefolder:{data_dir}/cifar10/cifar10_jpeg.zip",
        "model.width": 16,
        "model.stage_sizes": (1, 1, 1, 1),
        "batch_size": 64,
        "eval_batch_size": 512,
        "num_train_steps": 150,
        "schedule": "cosine",
        "learning_rate": 0.05,
        "log_every_steps": 15,
        **_QUIET,
      },
    ),
    "fsdd": DatasetEntry(
      "fsdd_cnn.py",
      {"dataset": "fsdd:{data_dir}/fsdd/fsdd_recordings.zip", "num_epochs": 3, **_QUIET},
    ),
    # The short-budget suite's GCN (before cora_gcn.py took Kipf & Welling's recipe): two
    # 64-unit convolutions, a dense readout, mixing after the last propagation.
    "cora": DatasetEntry(
      "cora_gcn.py",
      {
        "dataset": "planetoid:cora:{data_dir}/planetoid",
        "model.hidden_sizes": (64, 64),
        "model.propagate_output": False,
        "model.dropout_rate": 0.0,
        "graph_row_normalize": False,
        "weight_decay_scope": "all",
        "manifold_layers": (2,),
        **_QUIET,
      },
      manifold=True,
    ),
    "uci_abalone": _uci("abalone"),
    "uci_arcene": _uci("arcene", num_epochs=30),  # 100 training rows: 7 steps per epoch.
    "uci_arrhythmia": _uci("arrhythmia"),
    "uci_htru2": _uci("htru2", batch_size=64),  # 13,000+ rows: batch 64 keeps 10 epochs cheap.
    "uci_iris": _uci("iris", num_epochs=30),
    "uci_phishing": _uci("phishing", batch_size=64),
  },
  methods=METHODS,
  seeds=(0, 1, 2),
  results_dir="results",
  store="results/runs/cpu",
)

# Is MixupE-exact's gain on the BatchNorm models the penalty's or the clean pass's? The clean pass
# runs in train mode, so it also moves BatchNorm's running statistics (used at test time) towards
# clean-batch statistics. "mixup_clean_pass" is MixupE at eta = 0, which (as in the official code)
# still runs the clean pass: the loss and its gradient are exactly Mixup's, only BatchNorm's
# running statistics also see the clean batch. Mixup and MixupE-exact are the cpu suite's own runs.
BN_ABLATION = Suite(
  name="bn_ablation",
  datasets={name: CPU.datasets[name] for name in ("fashion_mnist", "cifar10")},
  methods={
    "mixup": METHODS["mixup"],
    "mixupe_exact": METHODS["mixupe_exact"],
    "mixup_clean_pass": MethodEntry({"method": "mixupe", "variant": "v1", "eta": 0.0}),
  },
  seeds=CPU.seeds,
  comparisons=(
    ("mixupe_exact", "mixup"),
    ("mixup_clean_pass", "mixup"),
    ("mixupe_exact", "mixup_clean_pass"),
  ),
  runs_of="cpu",
  results_dir="results/bn_ablation",
  store="results/runs/cpu",
)

TINY = Suite(
  name="tiny",
  datasets={
    "digits": DatasetEntry(
      "digits_mlp.py", {"num_train_steps": 12, "eval_batch_size": 64, **_QUIET}
    ),
    "iris": DatasetEntry(
      "uci_mlp.py:iris",
      {"dataset": "sklearn:iris", "num_train_steps": 12, "batch_size": 16, **_QUIET},
    ),
  },
  methods={"mixup": METHODS["mixup"], "mixupe_exact": METHODS["mixupe_exact"]},
  seeds=(0,),
  eta_grid=(1.0,),
  comparisons=(("mixupe_exact", "mixup"),),
)

# The converged suite: models that fit their training data, trained until validation accuracy
# stops improving (early stopping on a validation split carved from train; the reported model is
# the kept checkpoint of the best validation step, evaluated once on test and on the unaugmented
# training split). Besides the cpu suite's methods: Mixup with the clean pass (MixupE at eta = 0,
# the fair baseline on BatchNorm models), MixupE-fast at the official README's settings (eta 0.001,
# tau 1, not searched) and MixupE-exact on a quarter of the clean batch (term_fraction = 0.25, at
# the eta and sign searched for mixupe_exact).
CONVERGED_METHODS = {
  **METHODS,
  "mixup_clean_pass": MethodEntry({"method": "mixupe", "variant": "v1", "eta": 0.0}),
  "mixupe_fast_official": MethodEntry(
    {"method": "mixupe", "variant": "v3", "eta": 0.001, "threshold": 1.0}
  ),
  "mixupe_exact_quarter": MethodEntry(
    {"method": "mixupe", "variant": "v1", "term_fraction": 0.25}, search_as="mixupe_exact"
  ),
}
# CIFAR-10 is the most expensive dataset: it drops the two optional methods (the order).
_CIFAR_METHODS = (
  "erm",
  "mixup",
  "mixup_clean_pass",
  "mixupe_exact",
  "mixupe_exact_all",
  "mixupe_fast",
)
_CONVERGED_QUIET = {"progress_bar": False, "keep_checkpoints": 1}


def _converged_uci(name: str, **overrides) -> DatasetEntry:
  return DatasetEntry(
    f"uci_mlp.py:{name}",
    {
      "dataset": f"uci:{name}:{{data_dir}}/uci",
      "num_epochs": 100,
      "early_stopping_patience": 10,
      **_CONVERGED_QUIET,
      **overrides,
    },
    seeds=(0, 1, 2, 3, 4),
    search_overrides={"num_epochs": 50},
  )


CONVERGED = Suite(
  name="converged",
  datasets={
    # Every dataset's budget was sized on ERM's runs: a model that fits its training split,
    # stopped early on validation. What ERM measured is in docs/results.md, "How each dataset
    # was sized". Here: 5,000 training images (the same subset for every seed and method),
    # PreActResNet-18 of width 16, the Mixup paper's optimizer, cosine over 40 epochs.
    "cifar10": DatasetEntry(
      # The MixupE settings its runs were made with (before the config's default became the
      # official README's recipe): alpha 1, the variants' own thresholds.
      "cifar10_preactresnet18.py:official_code_default",
      {
        "dataset": "imagefolder:{data_dir}/cifar10/cifar10_jpeg.zip",
        "train_subset": 5000,
        "model.width": 16,
        "batch_size": 128,
        "eval_batch_size": 1000,
        "num_epochs": 40,
        "schedule": "cosine",
        "learning_rate": 0.1,
        "weight_decay": 1e-4,
        "early_stopping_patience": 10,
        "log_every_steps": 35,
        **_CONVERGED_QUIET,
      },
      methods=_CIFAR_METHODS,
      search_overrides={"num_epochs": 8},
    ),
    # 10,000 training images, a CNN whose flattened readout can fit them.
    "fashion_mnist": DatasetEntry(
      "fashion_mnist_cnn.py",
      {
        "dataset": "idx:{data_dir}/fashion_mnist",
        "train_subset": 10000,
        "model.channels": (32, 64),
        "model.readout": "flatten",
        "batch_size": 128,
        "eval_batch_size": 1000,
        "num_epochs": 30,
        "schedule": "cosine",
        "learning_rate": 0.05,
        "early_stopping_patience": 10,
        "log_every_steps": 70,
        **_CONVERGED_QUIET,
      },
      search_overrides={"num_epochs": 10},
    ),
    "fsdd": DatasetEntry(
      "fsdd_cnn.py",
      {
        "dataset": "fsdd:{data_dir}/fsdd/fsdd_recordings.zip",
        "num_epochs": 40,
        "early_stopping_patience": 10,
        **_CONVERGED_QUIET,
      },
      seeds=(0, 1, 2, 3, 4),
      search_overrides={"num_epochs": 20},
    ),
    # Kipf & Welling's recipe (configs/cora_gcn.py): mixing after the first propagation,
    # early stopping on the standard 500 validation nodes.
    "cora": DatasetEntry(
      "cora_gcn.py",
      {
        "dataset": "planetoid:cora:{data_dir}/planetoid",
        "num_epochs": 400,
        "eval_every_epochs": 1,
        "early_stopping_patience": 50,
        "log_every_steps": 10,
        "checkpoint_every_steps": 400,
        **_CONVERGED_QUIET,
      },
      manifold=True,
      seeds=(0, 1, 2, 3, 4),
      # term_fraction subsets the clean batch, which mixing a hidden layer does not have.
      methods=tuple(m for m in CONVERGED_METHODS if m != "mixupe_exact_quarter"),
    ),
    "digits": DatasetEntry(
      "digits_mlp.py",
      {"num_epochs": 100, "early_stopping_patience": 15, **_CONVERGED_QUIET},
      seeds=(0, 1, 2, 3, 4),
      search_overrides={"num_epochs": 50},
    ),
    # The UCI sets; the small ones (arcene's 100 rows, arrhythmia, iris) keep a fifth for
    # validation, the large ones (htru2, phishing) train 30 epochs in batches of 64.
    "uci_abalone": _converged_uci("abalone"),
    "uci_arcene": _converged_uci("arcene", validation_fraction=0.2),
    "uci_arrhythmia": _converged_uci("arrhythmia", validation_fraction=0.2),
    "uci_htru2": _converged_uci("htru2", batch_size=64, num_epochs=30),
    "uci_iris": _converged_uci("iris", validation_fraction=0.2),
    "uci_phishing": _converged_uci("phishing", batch_size=64, num_epochs=30),
  },
  methods=CONVERGED_METHODS,
  seeds=(0, 1, 2),
  comparisons=(
    ("mixup", "erm"),
    ("mixup_clean_pass", "mixup"),
    ("mixupe_fast", "erm"),
    ("mixupe_exact", "mixup"),
    ("mixupe_exact", "mixup_clean_pass"),
    ("mixupe_exact_all", "mixup_clean_pass"),
    ("mixupe_fast", "mixup"),
    ("mixupe_fast", "mixup_clean_pass"),
    ("mixupe_fast_official", "mixup_clean_pass"),
    ("mixupe_exact_quarter", "mixupe_exact"),
  ),
  results_dir="results/converged",
  store="results/runs/converged",
)

# Is the converged suite's clean-pass gap on Cora (+1.22 points over Mixup at seeds 0-4) systematic?
# On the GCN (dropout, no BatchNorm) the clean pass leaves the gradient unchanged and only
# advances dropout's key once more per step, so the two methods are Mixup under two independent
# dropout streams. Ten more seeds of each test whether the gap holds (seeds 0-4 are the converged
# suite's own runs). It does not: +0.15 [-0.70, +0.99] over the 15 seeds (docs/results.md).
CORA_DROPOUT = Suite(
  name="cora_dropout",
  datasets={
    "cora": dataclasses.replace(CONVERGED.datasets["cora"], seeds=tuple(range(15)), methods=None)
  },
  methods={name: CONVERGED_METHODS[name] for name in ("mixup", "mixup_clean_pass")},
  seeds=tuple(range(15)),
  comparisons=(("mixup_clean_pass", "mixup"),),
  runs_of="converged",
  results_dir="results/cora_dropout",
  store="results/runs/converged",
)

# Seeds with the power to mean it: on the datasets whose runs cost under a minute, seeds until the
# minimum detectable effect (80% power, `experiments.pooled`) of exact - clean pass and of fast -
# clean pass is at most 1 point, or 20 seeds: the count each needs at the seed-to-seed spread of
# its first 5 converged seeds (digits 8, abalone 18, htru2 and phishing 5 already, arcene,
# arrhythmia and iris would need 43-73 and stop at 20; Cora 6, where exact and the clean pass are
# the same computation); CIFAR-10 and FSDD at 5 seeds. At 18 seeds abalone's spread was wider than
# its first 5 showed (fast - clean pass: 1.16 points), so it goes on to 20. The five methods the
# contrasts need; seeds 0-4 (0-2 for CIFAR-10) and the eta search are the converged suite's own
# runs.
_POWER_SEEDS = {
  "cifar10": 5,
  "fsdd": 5,
  "cora": 6,
  "digits": 8,
  "uci_abalone": 20,
  "uci_arcene": 20,
  "uci_arrhythmia": 20,
  "uci_htru2": 5,
  "uci_iris": 20,
  "uci_phishing": 5,
}
CONVERGED_POWER = Suite(
  name="converged_power",
  datasets={
    name: dataclasses.replace(CONVERGED.datasets[name], seeds=tuple(range(count)), methods=None)
    for name, count in _POWER_SEEDS.items()
  },
  methods={
    name: CONVERGED_METHODS[name]
    for name in ("erm", "mixup", "mixup_clean_pass", "mixupe_exact", "mixupe_fast")
  },
  seeds=(0, 1, 2, 3, 4),
  comparisons=(
    ("mixup", "erm"),
    ("mixup_clean_pass", "mixup"),
    ("mixupe_exact", "mixup_clean_pass"),
    ("mixupe_fast", "mixup_clean_pass"),
    ("mixupe_fast", "erm"),
    ("mixupe_exact", "mixup"),
    ("mixupe_fast", "mixup"),
  ),
  runs_of="converged",
  results_dir="results/converged_power",
  store="results/runs/converged",
)

# RegMixup (Pinto et al. 2022: L = CE(f(x), y) + eta L_mix, eta = 1, not searched) beside the
# converged suite's Mixup, Mixup with the clean pass and MixupE-exact, at the converged suite's
# alpha = 1 and seeds, on every dataset mixed at the input (Cora mixes hidden layers, which
# RegMixup does not define). Every run but RegMixup's is the converged suite's own.
REGMIXUP = Suite(
  name="regmixup",
  datasets={
    name: dataclasses.replace(entry, methods=None)
    for name, entry in CONVERGED.datasets.items()
    if not entry.manifold
  },
  methods={
    **{name: CONVERGED_METHODS[name] for name in ("mixup", "mixup_clean_pass", "mixupe_exact")},
    "regmixup": MethodEntry({"method": "regmixup", "eta": 1.0}),
  },
  seeds=CONVERGED.seeds,
  comparisons=(
    ("regmixup", "mixup"),
    ("regmixup", "mixup_clean_pass"),
    ("regmixup", "mixupe_exact"),
  ),
  runs_of="converged",
  results_dir="results/regmixup",
  store="results/runs/converged",
)

# Mixup's alpha searched on the budget MixupE's eta gets (Mixup's usual values, the configs' 1
# among them): the search's seed, budget and validation split.
ALPHA_GRID = (0.2, 0.5, 1.0, 2.0)

# converged_power with Mixup's alpha searched: the chosen alpha holds for every mixing method, and
# MixupE's eta is searched at it. Where alpha 1 is chosen, every run is converged_power's own.
FAIR_ALPHA = dataclasses.replace(
  CONVERGED_POWER, name="fair_alpha", alpha_grid=ALPHA_GRID, results_dir="results/fair_alpha"
)


def _noisy(entry: DatasetEntry, fraction: float) -> DatasetEntry:
  """`entry` with `fraction` of its training labels moved to another class (seeded, symmetric;
  the validation split carved from train is noisy too, the test split clean), at the suite's
  seeds."""
  return dataclasses.replace(
    entry, overrides={**entry.overrides, "label_noise": fraction}, seeds=None
  )


# A regime where Mixup itself helps: symmetric training-label noise, where Mixup's gain over ERM
# grows with the noise (Zhang et al. 2018 on CIFAR-10, at the end of training). The same noisy
# labels for every method and seed (label_noise_seed 0): a paired difference is the methods', not
# the draw's. Mixup's alpha is searched; MixupE's eta at the chosen alpha. Sized on ERM and Mixup
# (label_noise_sizing): stopped early on the noisy validation split, ERM is not yet fitting the
# noise and Mixup - ERM is not resolved; trained its full 100 epochs and reported at the end, as
# Zhang et al. report, ERM fits the wrong labels (docs/results.md, "Where Mixup itself helps").
_EARLY_STOPPED = _noisy(CONVERGED.datasets["digits"], 0.4)
_NOISY_DIGITS = {
  "digits_noise40_early_stopped": _EARLY_STOPPED,
  "digits_noise40": dataclasses.replace(
    _EARLY_STOPPED, overrides={**_EARLY_STOPPED.overrides, "early_stopping_patience": 0}
  ),
}
LABEL_NOISE = Suite(
  name="label_noise",
  datasets={"digits_noise40": _NOISY_DIGITS["digits_noise40"]},
  methods={
    name: CONVERGED_METHODS[name]
    for name in (
      "erm",
      "mixup",
      "mixup_clean_pass",
      "mixupe_exact",
      "mixupe_exact_all",
      "mixupe_fast",
    )
  },
  seeds=tuple(range(10)),  # A run costs under half a minute: 10 seeds, the issue asks 5 or more.
  alpha_grid=ALPHA_GRID,
  comparisons=(
    ("mixup", "erm"),
    ("mixup_clean_pass", "mixup"),
    ("mixupe_exact", "mixup_clean_pass"),
    ("mixupe_exact_all", "mixup_clean_pass"),
    ("mixupe_fast", "mixup_clean_pass"),
    ("mixupe_exact", "mixup"),
    ("mixupe_fast", "mixup"),
    ("mixupe_fast", "erm"),
  ),
  results_dir="results/label_noise",
  store="results/runs/label_noise",
)
# Sizing first: is Mixup - ERM resolved in the noisy regime? ERM and Mixup (alpha searched) only;
# its runs are label_noise's own.
LABEL_NOISE_SIZING = dataclasses.replace(
  LABEL_NOISE,
  name="label_noise_sizing",
  datasets=_NOISY_DIGITS,
  methods={name: LABEL_NOISE.methods[name] for name in ("erm", "mixup")},
  comparisons=(("mixup", "erm"),),
  runs_of="label_noise",
  results_dir="results/label_noise_sizing",
  pool=False,
)

SUITES = {
  suite.name: suite
  for suite in (
    CPU,
    BN_ABLATION,
    TINY,
    CONVERGED,
    CORA_DROPOUT,
    CONVERGED_POWER,
    REGMIXUP,
    FAIR_ALPHA,
    LABEL_NOISE,
    LABEL_NOISE_SIZING,
  )
}


def dataset_seeds(suite: Suite, dataset: str) -> tuple[int, ...]:
  return suite.datasets[dataset].seeds or suite.seeds


def dataset_methods(suite: Suite, dataset: str) -> tuple[str, ...]:
  """The suite's methods that `dataset` runs, in the suite's order."""
  chosen = suite.datasets[dataset].methods
  return tuple(m for m in suite.methods if chosen is None or m in chosen)


def get_suite(name: str) -> Suite:
  if name not in SUITES:
    raise ValueError(f"Unknown suite {name!r}; valid: {', '.join(SUITES)}.")
  return SUITES[name]
