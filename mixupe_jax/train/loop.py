"""The training loop: data-parallel steps on every device, evaluation every epoch, checkpoints,
metrics. It knows nothing of the method it trains beyond calling one loss function.

    summary = train_and_evaluate(config, workdir)

Resuming is automatic: when `workdir/checkpoints` holds a finished checkpoint, training continues
from it and reproduces the uninterrupted run exactly; a finished run is not trained again (its
summary is returned as it is). SIGTERM saves a checkpoint at the next step boundary and exits
with status 143; a NaN or infinite loss stops training with the step named, before any
checkpoint of the diverged state is written. The config is validated before anything is loaded,
and one run at a time holds the workdir (see `workdir`).

With early stopping the run also keeps the checkpoint of its best evaluation in
`workdir/best_checkpoint` (the summary names its step): the model the summary reports, which
`evaluate_checkpoint(config, workdir)` restores and evaluates again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh

from mixupe_jax import evaluation, losses, parallel, regularizers
from mixupe_jax.models import init_model
from mixupe_jax.models.apply import ApplyFn
from mixupe_jax.models.registry import build_model
from mixupe_jax.train import actions, checkpoint, optim, reporting, runaway, validation
from mixupe_jax.train import inputs as inputs_lib
from mixupe_jax.train import workdir as workdir_lib
from mixupe_jax.train.actions import Preempted
from mixupe_jax.train.early_stopping import EarlyStopping
from mixupe_jax.train.errors import ConfigError
from mixupe_jax.train.step import (
  TrainState,
  global_batch,
  make_eval_step,
  make_train_step,
  run_keys,
)

# With early stopping, the checkpoint of the best evaluation is kept here (besides the latest ones
# in checkpoints/, for resuming): the model the summary reports.
BEST_CHECKPOINT_DIR = "best_checkpoint"
PREEMPTED_EXIT_STATUS = Preempted.EXIT_STATUS


def _needs_x_bar(config) -> bool:
  return config.method == "mixupe" and regularizers.get_variant(config.variant).uses_derivative


def _truncate_log(path: str, last_step: int) -> None:
  """Drops records past the resumed step, so a resumed run's log reads like an uninterrupted one."""
  if os.path.exists(path):
    kept = [r for r in reporting.read_log(path) if r["step"] <= last_step]
    with open(path, "w") as file:
      file.writelines(json.dumps(r) + "\n" for r in kept)


def start_distributed(config) -> None:
  """`jax.distributed.initialize` with the config's coordinator, process count and id (each None
  is detected from the environment: TPU pods, SLURM), then a check that every process runs the
  same config. On CPU the collectives go through gloo."""
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  given = {
    name: config[name]
    for name in ("coordinator_address", "num_processes", "process_id")
    if config[name] is not None
  }
  jax.distributed.initialize(**given, heartbeat_timeout_seconds=config.heartbeat_timeout_seconds)
  check_same_config_everywhere(config)


def check_same_config_everywhere(config) -> None:
  """Every process must train the same config (process ids aside): a ConfigError otherwise."""
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils

  shared = {k: v for k, v in config.to_dict().items() if k not in ("process_id",)}
  digest = np.frombuffer(
    hashlib.sha256(json.dumps(shared, sort_keys=True, default=str).encode()).digest(), np.uint8
  )
  digests = np.asarray(multihost_utils.process_allgather(digest))
  differing = [
    index for index in range(len(digests)) if not np.array_equal(digests[index], digests[0])
  ]
  if differing:
    raise validation.ConfigError(
      f"Processes {differing} run a config that differs from process 0's; every process of a "
      "run must be started with the same config and flags (process_id aside)."
    )


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Trains `config` in `workdir` (created if needed); returns the final evaluation."""
  validation.validate(config)
  if config.distributed:
    start_distributed(config)
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() != 0:  # The chief holds the lock for every process of the run.
    return _train_and_evaluate(config, workdir)
  with workdir_lib.exclusive(workdir):
    return _train_and_evaluate(config, workdir)


@dataclasses.dataclass
class Experiment:
  """What a config builds before any step: the data, the device mesh, the initial (replicated)
  state, the loss and the optimizer, and one eval step per split."""

  config: Any
  data: inputs_lib.DataSource
  mesh: Any
  batch_size: int
  steps_per_epoch: int
  total_steps: int
  state: TrainState
  loss_fn: Any
  axis_name: str | None  # The train step's per-shard axis (`parallel.step_axis`), or None.
  optimizer: Any
  schedule: Any
  step_key: jax.Array
  eval_sources: dict[str, Callable]  # split -> one padded pass; TRAIN_EVAL included.
  eval_steps: dict[str, Callable]
  evaluated_splits: tuple[str, ...]  # Evaluated every eval_every_epochs.
  # config.mixup_off_epoch in steps: from this step on the loss is `unmixed_loss_fn`. None: never.
  mixing_off_step: int | None = None
  unmixed_loss_fn: Any = None
  _train_steps: dict[bool, Callable] = dataclasses.field(default_factory=dict, repr=False)

  def mixes_at(self, step: int) -> bool:
    """Whether the step from `step` to `step + 1` mixes: step < mixing_off_step."""
    return self.mixing_off_step is None or step < self.mixing_off_step

  def train_step_at(self, step: int) -> Callable:
    """The train step that takes the state from `step` to `step + 1` (built once per kind)."""
    mixing = self.mixes_at(step)
    if mixing not in self._train_steps:
      self._train_steps[mixing] = self.train_step(mixing)
    return self._train_steps[mixing]

  def train_step(self, mixing: bool = True) -> Callable:
    """The jitted train step of this experiment (`make_train_step`, per shard over its axis);
    with mixing=False the one after config.mixup_off_epoch (clean batch, smoothed labels)."""
    return make_train_step(
      self.loss_fn if mixing else self.unmixed_loss_fn,
      self.optimizer,
      self.schedule,
      self.mesh,
      self.step_key,
      self.data.device_preprocess,
      axis_name=self.axis_name,
      gradient_dtype=self.config.gradient_all_reduce_dtype,
    )

  def evaluate(self, state: TrainState, splits=None) -> dict[str, dict[str, float]]:
    """Accuracy, NLL and ECE of `state` on each split (default: the evaluated splits)."""
    results = {}
    for split in self.evaluated_splits if splits is None else splits:
      totals = None
      for batch in self.eval_sources[split]():
        sums = self.eval_steps[split](state, *global_batch(batch, self.mesh))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
      results[split] = evaluation.summarize(jax.device_get(totals))
    return results


def _chosen_splits(config, data: inputs_lib.DataSource, eval_sources: dict) -> tuple[str, ...]:
  """The splits evaluated during training (config.eval_splits, default every split but the
  training split); an unknown name in eval_splits or best_eval_splits is an error."""
  for field in ("eval_splits", "best_eval_splits"):
    unknown = set(config[field]) - set(eval_sources)
    if unknown:
      raise ConfigError(
        f"{field} {sorted(unknown)} not in {data.name}'s splits "
        f"{sorted(data.eval_batches)} (or {inputs_lib.TRAIN_EVAL!r}, the "
        "training split without augmentation)."
      )
  return tuple(config.eval_splits) or tuple(data.eval_batches)


def make_loss_and_optimizer(
  config,
  mesh: Mesh,
  apply_fn: ApplyFn,
  num_classes: int,
  x_bar: jax.Array | None,
  steps_per_epoch: int,
  total_steps: int,
  mixing_scope: str | None = None,
  axis_name: str | None = None,
  mixing: bool = True,
) -> tuple[losses.LossFn, optax.Schedule, optax.GradientTransformation]:
  """(loss_fn, schedule, optimizer) a config trains with on `mesh`: its method's loss with the
  mixer and term subset of its mixing scope (`mixing_scope`, default the config's), per shard
  over `axis_name` when set (see `parallel.step_axis`), and its optimizer over its learning-rate
  schedule.

  With mixing=False, the loss after config.mixup_off_epoch (timm's `mixup_off_epoch`): every
  mixing method's, the MixupE term included, becomes the cross-entropy of the clean batch with
  the mixer's label smoothing (Mixup with prob = 0: lambda = 1 for every example)."""
  scope = parallel.resolve_mixing_scope(
    config.mixing_scope if mixing_scope is None else mixing_scope, mesh
  )
  method, mixer_options = config.method, dict(config.mixer_options)
  if not mixing and method != "erm":
    method, mixer_options["prob"] = "mixup", 0.0
  mixer = losses.make_mixer(
    config.mixer, alpha=config.alpha, num_classes=num_classes, **mixer_options
  )
  subsample = functools.partial(regularizers.subsample_examples, fraction=config.term_fraction)
  group_size = config.mixing_group_size
  if axis_name is None:
    mixer = parallel.mixer_for_scope(mixer, mesh, scope, group_size=group_size)
    term_subsample = parallel.subsample_for_scope(subsample, mesh, scope, group_size=group_size)
  else:
    mixer = parallel.shard_mixer(mixer, scope, axis_name, group_size)
    term_subsample = parallel.shard_subsample(subsample, scope, axis_name, group_size)
  loss_fn = losses.make_loss_fn(
    method,
    apply_fn=apply_fn,
    num_classes=num_classes,
    alpha=config.alpha,
    x_bar=x_bar,
    mixer=mixer,
    manifold_layers=tuple(config.manifold_layers),
    term_subsample=term_subsample,
    mixupe=regularizers.MixupEOptions.from_config(config),
    axis_name=axis_name,
  )
  schedule = optim.learning_rate_schedule(config, steps_per_epoch, total_steps)
  return loss_fn, schedule, optim.make_optimizer(config, schedule)


def set_up(config) -> Experiment:
  """Builds the `Experiment` of a validated `config` (this process's share of the data)."""
  process_count = jax.process_count()
  data = inputs_lib.build_inputs(
    config,
    local_batch_size=config.batch_size // process_count,
    local_eval_batch_size=config.eval_batch_size // process_count,
    process_index=jax.process_index(),
    process_count=process_count,
  )
  eval_sources = data.eval_sources()
  evaluated_splits = _chosen_splits(config, data, eval_sources)
  placement = data.placement(config)
  mesh, batch_size = placement.mesh, placement.batch_size
  if parallel.resolve_mixing_scope(placement.mixing_scope, mesh) == "group":
    parallel.check_group_size(batch_size, mesh, config.mixing_group_size)
  steps_per_epoch = _steps_per_epoch(data, batch_size)
  total_steps = config.num_train_steps or config.num_epochs * steps_per_epoch
  axis_name = parallel.step_axis(mesh, placement.mixing_scope)
  model = _model(config, data, axis_name)
  keys = run_keys(config.seed, dropout=config.model.get("dropout_rate", 0.0) > 0)
  train_apply, eval_steps = _apply_and_eval_steps(data, model, tuple(eval_sources), mesh)
  # A model with dropout carries its RNG key in the state (models.apply.DROPOUT_RNG).
  params, model_state = init_model(model, keys.init, jnp.asarray(data.init_sample()), keys.dropout)
  x_bar = jnp.asarray(inputs_lib.compute_x_bar(data)) if _needs_x_bar(config) else None
  loss_options = dict(
    mesh=mesh,
    apply_fn=train_apply,
    num_classes=data.num_classes,
    x_bar=x_bar,
    steps_per_epoch=steps_per_epoch,
    total_steps=total_steps,
    mixing_scope=placement.mixing_scope,
    axis_name=axis_name,
  )
  loss_fn, schedule, optimizer = make_loss_and_optimizer(config, **loss_options)
  mixing_off_step, unmixed_loss_fn = None, None
  if config.mixup_off_epoch is not None:  # The loss from mixup_off_epoch on.
    mixing_off_step = config.mixup_off_epoch * steps_per_epoch
    unmixed_loss_fn = make_loss_and_optimizer(config, **loss_options, mixing=False)[0]
  state = TrainState(jnp.zeros((), jnp.int32), params, model_state, optimizer.init(params))
  return Experiment(
    config=config,
    data=data,
    mesh=mesh,
    batch_size=batch_size,
    steps_per_epoch=steps_per_epoch,
    total_steps=total_steps,
    state=parallel.replicate(state, mesh),
    loss_fn=loss_fn,
    axis_name=axis_name,
    optimizer=optimizer,
    schedule=schedule,
    step_key=keys.step,
    eval_sources=eval_sources,
    eval_steps=eval_steps,
    evaluated_splits=evaluated_splits,
    mixing_off_step=mixing_off_step,
    unmixed_loss_fn=unmixed_loss_fn,
  )


def _steps_per_epoch(data: inputs_lib.DataSource, batch_size: int) -> int:
  """Whole batches per epoch; at least one, or a ConfigError."""
  if batch_size > data.num_train:
    raise ConfigError(
      f"batch_size {batch_size} is larger than the {data.num_train} training "
      f"examples of {data.name}."
    )
  return data.num_train // batch_size


def _model(config, data: inputs_lib.DataSource, axis_name: str | None):
  """The config's model for this data (its classes, and options such as a graph's edges)."""
  return build_model(
    config.model.name,
    num_classes=data.num_classes,
    dtype=config.dtype,
    axis_name=axis_name,
    **{k: v for k, v in config.model.items() if k != "name"},
    **data.model_options(),
  )


def _apply_and_eval_steps(
  data: inputs_lib.DataSource, model, splits: tuple[str, ...], mesh: Mesh
) -> tuple[ApplyFn, dict[str, Callable]]:
  """(the train apply function, {split: compiled eval step}); splits the source evaluates with
  one apply function share one eval step (one compilation)."""
  train_apply, eval_groups = data.apply_fns(model, splits)
  eval_steps: dict[str, Callable] = {}
  for apply, group in eval_groups:
    eval_steps.update(dict.fromkeys(group, make_eval_step(apply, mesh, data.device_preprocess)))
  return train_apply, eval_steps


def evaluate_checkpoint(
  config, workdir: str, splits=None, *, best: bool = True
) -> tuple[int, dict[str, dict[str, float]]]:
  """(step, metrics per split) of the run's kept best-validation checkpoint (`best=True`; the
  model an early-stopped run reports) or of its latest one, evaluated on `splits` (default: the
  config's evaluated splits and best_eval_splits)."""
  validation.validate(config)
  experiment = set_up(config)
  folder = os.path.join(workdir, BEST_CHECKPOINT_DIR if best else "checkpoints")
  checkpointer = checkpoint.Checkpointer(folder, max_to_keep=1 if best else config.keep_checkpoints)
  try:
    state = checkpointer.restore_latest(experiment.state)
  finally:
    checkpointer.close()
  if state is None:
    raise checkpoint.CheckpointError(f"{folder} holds no checkpoint to evaluate.")
  if splits is None:
    splits = tuple(dict.fromkeys(experiment.evaluated_splits + tuple(config.best_eval_splits)))
  return int(state.step), experiment.evaluate(state, splits)


SUMMARY_FILE = "summary.json"


def _train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Set-up, the resume and finished checks, the steps, the summary. One ExitStack owns every
  resource the run opens (checkpointers, the log, the progress bar, the input workers, the
  SIGTERM handler) and closes them in reverse order, whatever ends the run."""
  experiment = set_up(config)
  data, is_chief = experiment.data, jax.process_index() == 0
  with contextlib.ExitStack() as stack:
    checkpointer = stack.enter_context(
      checkpoint.Checkpointer(
        os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_checkpoints
      )
    )
    state, loop_state, finished = _resume(experiment, checkpointer, workdir)
    if finished is not None:
      return finished
    log = stack.enter_context(contextlib.closing(reporting.MetricLog(workdir, enabled=is_chief)))
    start_step = int(state.step)
    if is_chief:
      _truncate_log(log.path, start_step)
      with open(os.path.join(workdir, "config.json"), "w") as file:
        file.write(config.to_json_best_effort(indent=2))
    stopper, best_checkpointer = _early_stopping(
      experiment, loop_state, log.path, workdir, start_step
    )
    if best_checkpointer is not None:
      stack.enter_context(best_checkpointer)
    logging.info(
      "%s: %d examples, %d classes, %d steps/epoch, %d steps, %d device(s)%s",
      data.name,
      data.num_train,
      data.num_classes,
      experiment.steps_per_epoch,
      experiment.total_steps,
      experiment.mesh.size,
      f", resuming at step {start_step}" if start_step else "",
    )
    state, results = _run_steps(
      experiment, state, stack, checkpointer, best_checkpointer, stopper, log, workdir
    )
    summary = _summary(experiment, state, results, stopper, best_checkpointer)
  if is_chief:
    summary_path = os.path.join(workdir, SUMMARY_FILE)
    with open(f"{summary_path}.tmp", "w") as file:
      json.dump(summary, file, indent=2)
    os.replace(f"{summary_path}.tmp", summary_path)
    reporting.plot_curves(
      log.path,
      os.path.join(workdir, "curves.png"),
      title=f"{config.name}: {config.method} on {data.name}",
      method=config.method,
    )
  return summary


def _resume(
  experiment: Experiment, checkpointer: checkpoint.Checkpointer, workdir: str
) -> tuple[TrainState, dict[str, Any] | None, dict[str, Any] | None]:
  """(the state to continue from: the newest restorable checkpoint's, else the initial one;
  the loop state saved with it, or None; the summary when the run finished already at that
  step, else None). A checkpoint past this config's steps is a ConfigError."""
  restored, loop_state = checkpointer.restore_latest_with_loop(experiment.state)
  state = experiment.state if restored is None else restored
  start_step, total_steps = int(state.step), experiment.total_steps
  if start_step > total_steps:
    raise validation.ConfigError(
      f"{workdir} holds a checkpoint of step {start_step}, past this config's {total_steps} "
      "steps (the config changed?); use another workdir."
    )
  summary_path = os.path.join(workdir, SUMMARY_FILE)
  if os.path.exists(summary_path):
    with open(summary_path) as file:
      finished = json.load(file)
    if (
      finished.get("steps") == total_steps
      and finished.get("final_step", finished.get("steps")) == start_step
    ):
      logging.info("%s finished already (step %d); its summary is unchanged.", workdir, start_step)
      return state, loop_state, finished
  return state, loop_state, None


def _early_stopping(
  experiment: Experiment,
  loop_state: dict[str, Any] | None,
  log_path: str,
  workdir: str,
  start_step: int,
) -> tuple[EarlyStopping | None, checkpoint.Checkpointer | None]:
  """The early-stopping state the resumed checkpoint saved (`loop_state`), or, for a checkpoint
  written without it, replayed from the log up to `start_step`; and the checkpointer of the best
  step (None, None without early stopping)."""
  config = experiment.config
  if not config.early_stopping_patience:
    return None, None
  if config.early_stopping_split not in experiment.evaluated_splits:
    raise validation.ConfigError(
      f"config.early_stopping_split = {config.early_stopping_split!r} is not evaluated; the "
      f"evaluated splits are {sorted(experiment.evaluated_splits)}."
    )
  split, patience = config.early_stopping_split, config.early_stopping_patience
  if loop_state is not None and "early_stopping" in loop_state:
    try:
      stopper = EarlyStopping.from_state(loop_state["early_stopping"], split, patience)
    except ValueError as error:
      raise validation.ConfigError(f"{workdir}: {error}") from None
  else:  # A fresh run, or a checkpoint written before the loop state was saved with it.
    records = reporting.read_log(log_path) if os.path.exists(log_path) else []
    stopper = EarlyStopping.from_log(records, split, patience)
  best_checkpointer = checkpoint.Checkpointer(
    os.path.join(workdir, BEST_CHECKPOINT_DIR), max_to_keep=1
  )
  # A best step past the resumed one is saved again, identically, when the replay reaches it.
  best_checkpointer.delete_after(start_step)
  return stopper, best_checkpointer


def _actions(
  experiment: Experiment,
  start_step: int,
  checkpointer,
  best_checkpointer,
  stopper,
  log: reporting.MetricLog,
  workdir: str,
):
  """The run's schedule and its three periodic actions (`train.actions`)."""
  config, data = experiment.config, experiment.data
  schedule = actions.Schedule(
    experiment.steps_per_epoch,
    experiment.total_steps,
    config.log_every_steps,
    config.eval_every_epochs,
    config.checkpoint_every_steps,
  )
  folder = os.path.join(workdir, "checkpoints")
  metrics = actions.TrainMetrics(
    log,
    runaway.RunawayWatch(config, data.num_classes),
    experiment.batch_size,
    start_step,
    lambda loss, step: actions.non_finite_loss_message(
      loss, step, data.name, checkpointer.latest_step(), folder
    ),
  )
  evaluation = actions.Evaluation(experiment.evaluate, log, stopper, best_checkpointer)
  return schedule, metrics, evaluation, actions.Checkpointing(checkpointer, stopper)


def _run_steps(
  experiment: Experiment,
  state: TrainState,
  stack: contextlib.ExitStack,
  checkpointer: checkpoint.Checkpointer,
  best_checkpointer: checkpoint.Checkpointer | None,
  stopper: EarlyStopping | None,
  log: reporting.MetricLog,
  workdir: str,
) -> tuple[TrainState, dict[str, dict[str, float]]]:
  """The steps from `state`'s to the end (or to early stopping), each followed by the periodic
  actions the schedule triggers: the train metrics and the NaN check, the evaluation with early
  stopping, the checkpoint (and on preemption `Preempted`). Returns the last state and its last
  evaluation; `stack` closes what this opens."""
  start_step = int(state.step)
  schedule, metrics, evaluation, saving = _actions(
    experiment, start_step, checkpointer, best_checkpointer, stopper, log, workdir
  )
  progress = stack.enter_context(_progress_bar(experiment, start_step))
  batches = experiment.data.train_batches(start_step)
  if hasattr(batches, "close"):  # Worker processes (config.input_workers) end with the run.
    stack.callback(batches.close)
  preemption = stack.enter_context(checkpoint.PreemptionFlag())
  postfix: dict[str, str] = {}
  # A run that stopped after its last checkpoint but before its summary is evaluated again; an
  # early-stopped run whose checkpoint says it stopped here trains no further.
  end_step = start_step if stopper is not None and stopper.stopped else schedule.total_steps
  if start_step == end_step:
    evaluation.results = experiment.evaluate(state)
  for step in range(start_step, end_step):
    state, step_metrics = experiment.train_step_at(step)(
      state, *global_batch(next(batches), experiment.mesh)
    )
    done, preempted = step + 1, preemption.reached(step + 1)
    metrics.add(done, step_metrics)
    progress.update(1)
    if schedule.logs(done) or preempted:
      _show(progress, postfix, metrics.flush(done))
    evaluates = schedule.evaluates(done)
    stop = evaluates and evaluation.run(done, state)
    if evaluates:
      _show(progress, postfix, evaluation.results)
    if schedule.saves(done) or stop or preempted:
      saving.run(done, state, preempted=preempted)
    if stop:
      return state, evaluation.results
  return state, evaluation.results


def _progress_bar(experiment: Experiment, start_step: int):
  """tqdm's bar on the chief process when config.progress_bar, closed by the caller's stack."""
  from tqdm.auto import tqdm

  bar = tqdm(
    total=experiment.total_steps,
    initial=start_step,
    unit="step",
    mininterval=1.0,
    disable=not (jax.process_index() == 0 and experiment.config.progress_bar),
    file=sys.stdout,
  )
  return contextlib.closing(bar)


def _show(progress, postfix: dict[str, str], values: dict[str, Any]) -> None:
  """Updates the bar's `postfix` (the last train loss and examples/s, each split's last
  accuracy) with `values`, a flush's train metrics or an evaluation's results."""
  if "loss" in values:
    postfix.update(loss=f"{values['loss']:.4f}", ex_per_s=f"{values['examples_per_second']:.0f}")
  for split, split_metrics in values.items():
    if isinstance(split_metrics, dict):
      postfix[f"{split}_acc"] = f"{split_metrics['accuracy']:.4f}"
  progress.set_postfix(postfix, refresh=False)


def _summary(
  experiment: Experiment,
  state: TrainState,
  results: dict[str, dict[str, float]],
  stopper: EarlyStopping | None,
  best_checkpointer: checkpoint.Checkpointer | None,
) -> dict[str, Any]:
  """What the run reports: the last evaluation; with early stopping the best evaluation on the
  early-stopping split (every split at that step), and best_eval_splits evaluated once on the
  kept checkpoint of that step."""
  config = experiment.config
  final_step = int(state.step)
  summary = {
    "dataset": experiment.data.name,
    "method": config.method,
    "steps": experiment.total_steps,
    "final_step": final_step,
    "epochs": config.num_epochs,
  }
  if stopper is None or stopper.best is None:
    return {**summary, **results}
  best_results = dict(stopper.best)
  if config.best_eval_splits:
    assert best_checkpointer is not None and stopper.best_step is not None  # With the stopper.
    best_state = best_checkpointer.restore_step(stopper.best_step, state)
    best_results.update(experiment.evaluate(best_state, tuple(config.best_eval_splits)))
  return {
    **summary,
    "best_step": stopper.best_step,
    "stopped_early": final_step < experiment.total_steps,
    "best_checkpoint": os.path.join(BEST_CHECKPOINT_DIR, str(stopper.best_step)),
    **best_results,
  }
