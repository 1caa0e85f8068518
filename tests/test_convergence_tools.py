"""What training to convergence needs: early stopping on a validation split (resumable), dropout
with its RNG in the model state, and Kipf & Welling's GCN recipe (row-normalized features, weight
decay on the first layer, dropout active in train mode only)."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.sparse

from mixupe_jax.experiments.runner import load_config_file
from mixupe_jax.models import GCN, flax_apply_fn, init_model, node_apply_fn, normalized_edges
from mixupe_jax.models.apply import DROPOUT_RNG
from mixupe_jax.train import optim, train_and_evaluate
from mixupe_jax.train.defaults import default_config
from mixupe_jax.train.early_stopping import EarlyStopping
from mixupe_jax.data.graphs import row_normalized

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_early_stopping_keeps_the_best_evaluation_and_counts_patience():
  stopper = EarlyStopping("validation", patience=2)
  evaluation = lambda accuracy, nll: {"validation": {"accuracy": accuracy, "nll": nll},
                                      "test": {"accuracy": accuracy / 2, "nll": nll}}
  assert not stopper.update(1, evaluation(0.5, 1.0))
  assert not stopper.update(2, evaluation(0.7, 0.9))
  assert not stopper.update(3, evaluation(0.7, 0.8))  # Same accuracy, lower NLL: better.
  assert stopper.best_step == 3
  assert not stopper.update(4, evaluation(0.6, 0.5))
  assert stopper.update(5, evaluation(0.7, 0.8))  # Ties are not improvements.
  assert stopper.best_step == 3 and stopper.best["test"]["accuracy"] == 0.35
  records = [{"step": s, "split": split, **m} for s, e in
             [(1, evaluation(0.5, 1.0)), (2, evaluation(0.7, 0.9)), (3, evaluation(0.7, 0.8))]
             for split, m in e.items()] + [{"step": 3, "split": "train", "loss": 1.0}]
  replayed = EarlyStopping.from_log(records, "validation", 2)
  assert (replayed.best_step, replayed.waited, replayed.score) == (3, 0, (0.7, -0.8))


def early_stopping_config(steps=0):
  config = load_config_file(os.path.join(ROOT, "configs"), "digits_mlp.py")
  config.validation_fraction, config.eval_splits = 0.1, ("validation", "test")
  config.early_stopping_patience, config.num_epochs, config.learning_rate = 3, 60, 0.2
  config.schedule, config.progress_bar, config.num_train_steps = "constant", False, steps
  return config


@pytest.mark.slow
def test_an_early_stopped_run_resumes_to_the_same_result(tmp_path):
  uninterrupted = train_and_evaluate(early_stopping_config(), str(tmp_path / "a"))
  assert uninterrupted["stopped_early"] and uninterrupted["final_step"] < 60 * 18
  assert uninterrupted["best_step"] < uninterrupted["final_step"]
  # Stopped part way (a budget of 5 epochs), then resumed with the full budget. The stopped run's
  # folder is copied for the two cases below, which resume it after changing it.
  resumed_dir = str(tmp_path / "b")
  train_and_evaluate(early_stopping_config(steps=5 * 18), resumed_dir)
  for name in ("no_log", "old_checkpoint"):
    shutil.copytree(resumed_dir, tmp_path / name)
  resumed = train_and_evaluate(early_stopping_config(), resumed_dir)
  assert resumed == uninterrupted
  # A finished early-stopped run is not trained again.
  assert train_and_evaluate(early_stopping_config(), resumed_dir) == uninterrupted

  # The early-stopping state is the checkpoint's: without the metric log the resumed run still
  # stops where the uninterrupted one did. A checkpoint written before that state was saved (its
  # "loop" item removed) rebuilds it from the log, once.
  for name, remove in (("no_log", "metrics.jsonl"), ("old_checkpoint", "loop")):
    workdir = tmp_path / name
    checkpoints = workdir / "checkpoints"
    if remove == "metrics.jsonl":
      os.remove(workdir / remove)
    else:
      for step in os.listdir(checkpoints):
        assert (checkpoints / step / "loop").is_dir()
        shutil.rmtree(checkpoints / step / "loop")
    assert train_and_evaluate(early_stopping_config(), str(workdir)) == uninterrupted, name
    final = checkpoints / str(uninterrupted["final_step"]) / "loop"
    assert final.is_dir()  # Saved again from here on.


def test_the_loop_state_round_trips_and_names_a_changed_split():
  stopper = EarlyStopping("validation", patience=2)
  assert EarlyStopping.from_state(stopper.to_state(), "validation", 2) == stopper  # No best.
  stopper.update(10, {"validation": {"accuracy": 0.8, "nll": 0.4}})
  stopper.update(20, {"validation": {"accuracy": 0.7, "nll": 0.4}})
  state = json.loads(json.dumps(stopper.to_state()))  # What the JSON item holds.
  restored = EarlyStopping.from_state(state, "validation", 2)
  assert (restored.best_step, restored.score, restored.waited) == (10, (0.8, -0.4), 1)
  assert restored.update(30, {"validation": {"accuracy": 0.7, "nll": 0.4}})  # Patience spent.
  with pytest.raises(ValueError, match="watched 'validation', this config 'test'"):
    EarlyStopping.from_state(state, "test", 2)


def test_the_early_stopping_split_must_be_evaluated(tmp_path):
  from mixupe_jax.train.validation import ConfigError
  config = early_stopping_config()
  config.eval_splits = ("test",)
  with pytest.raises(ConfigError, match=r"early_stopping_split = 'validation' is not evaluated"):
    train_and_evaluate(config, str(tmp_path))


def small_graph():
  rng = np.random.default_rng(0)
  adjacency = scipy.sparse.random(12, 12, density=0.3, random_state=0)
  adjacency = ((adjacency + adjacency.T) > 0).astype(np.float32)
  return rng.random((12, 5)).astype(np.float32), normalized_edges(adjacency)


def test_gcn_propagates_and_drops_out_in_train_mode_only():
  features, edges = small_graph()
  module = GCN(3, edges=edges, hidden_sizes=(8,), dropout_rate=0.5)
  params, state = init_model(module, jax.random.key(0), features, jax.random.key(1))
  nodes = np.arange(12)
  train_fn = node_apply_fn(module, features, nodes, train=True)
  eval_fn = node_apply_fn(module, features, nodes, train=False)
  first, state1 = train_fn(params, state, features)
  second, state2 = train_fn(params, state1, features)
  assert not np.allclose(first, second)  # New dropout masks on every train pass...
  assert not np.array_equal(state1[DROPOUT_RNG], state[DROPOUT_RNG])
  again, _ = train_fn(params, state, features)
  np.testing.assert_array_equal(first, again)  # ...that are a function of the state's key.
  evaluated, eval_state = eval_fn(params, state, features)
  np.testing.assert_allclose(evaluated, eval_fn(params, state1, features)[0])  # No dropout.
  assert eval_state is state
  # Without dropout, train and eval compute the same function, and it propagates: changing one
  # node's features changes its neighbours' logits.
  plain = GCN(3, edges=edges, hidden_sizes=(8,))
  plain_params, _ = init_model(plain, jax.random.key(0), features)
  plain_train = node_apply_fn(plain, features, nodes, train=True)
  plain_eval = node_apply_fn(plain, features, nodes, train=False)
  np.testing.assert_allclose(plain_train(plain_params, {}, features)[0],
                             plain_eval(plain_params, {}, features)[0], rtol=1e-6)
  senders, receivers, _ = edges
  node = int(senders[senders != receivers][0])
  neighbour = int(receivers[(senders == node) & (receivers != node)][0])
  moved = features.copy()
  moved[node] += 1.0
  before, after = plain_eval(plain_params, {}, features)[0], plain_eval(plain_params, {}, moved)[0]
  assert not np.allclose(before[neighbour], after[neighbour])


def test_first_layer_weight_decay_and_row_normalization():
  params = {"Dense_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
            "Dense_1": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
  config = default_config()
  config.optimizer, config.weight_decay, config.weight_decay_scope = "sgd", 0.5, "first_layer"
  config.momentum = 0.0
  optimizer = optim.make_optimizer(config, optax.constant_schedule(1.0))
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = optimizer.update(zeros, optimizer.init(params), params)
  np.testing.assert_allclose(updates["Dense_0"]["kernel"], -0.5)
  np.testing.assert_allclose(updates["Dense_0"]["bias"], -0.5)
  np.testing.assert_allclose(updates["Dense_1"]["kernel"], 0.0)
  features = np.array([[1.0, 3.0], [0.0, 0.0], [2.0, 2.0]], np.float32)
  np.testing.assert_allclose(row_normalized(features), [[0.25, 0.75], [0, 0], [0.5, 0.5]])


@pytest.mark.slow
def test_an_mlp_with_dropout_trains_with_its_key_in_the_state(tmp_path):
  config = load_config_file(os.path.join(ROOT, "configs"), "digits_mlp.py")
  config.model.dropout_rate, config.num_train_steps, config.progress_bar = 0.3, 40, False
  first = train_and_evaluate(config, str(tmp_path / "a"))
  assert first == train_and_evaluate(config, str(tmp_path / "b"))  # Seeded masks.
  assert first["test"]["accuracy"] > 0.5


@pytest.mark.slow
def test_the_reported_model_is_the_kept_best_checkpoint(tmp_path):
  """An early-stopped run keeps the checkpoint of its best validation step besides the latest;
  restoring it and evaluating gives the summary's numbers, and `best_eval_splits` (test and the
  unaugmented training split evaluated once, on that checkpoint) gives the same test numbers as
  evaluating test at every epoch."""
  from mixupe_jax.train.loop import BEST_CHECKPOINT_DIR, evaluate_checkpoint
  every_epoch = early_stopping_config()
  summary = train_and_evaluate(every_epoch, str(tmp_path / "a"))
  assert summary["stopped_early"] and summary["best_step"] < summary["final_step"]
  assert summary["best_checkpoint"] == os.path.join(BEST_CHECKPOINT_DIR, str(summary["best_step"]))
  assert os.listdir(tmp_path / "a" / BEST_CHECKPOINT_DIR) == [str(summary["best_step"])]
  step, metrics = evaluate_checkpoint(every_epoch, str(tmp_path / "a"))
  assert step == summary["best_step"]
  for split in ("validation", "test"):
    for name in ("accuracy", "nll", "ece"):
      np.testing.assert_allclose(metrics[split][name], summary[split][name], rtol=1e-6)
  latest_step, latest = evaluate_checkpoint(every_epoch, str(tmp_path / "a"), best=False)
  assert latest_step == summary["final_step"]
  assert latest["validation"]["nll"] != summary["validation"]["nll"]

  at_the_end = early_stopping_config()
  at_the_end.eval_splits, at_the_end.best_eval_splits = ("validation",), ("test", "train_eval")
  # Interrupted after 5 epochs, then resumed: the best checkpoint is the uninterrupted run's.
  train_and_evaluate(early_stopping_config(steps=5 * 18), str(tmp_path / "b"))
  ended = train_and_evaluate(at_the_end, str(tmp_path / "b"))
  assert ended["best_step"] == summary["best_step"]
  for name in ("accuracy", "nll", "ece"):
    np.testing.assert_allclose(ended["test"][name], summary["test"][name], rtol=1e-6)
  assert 0.9 < ended["train_eval"]["accuracy"] <= 1.0
  records = [json.loads(line) for line in open(tmp_path / "b" / "metrics.jsonl")]
  assert {r["split"] for r in records if r["step"] > 5 * 18} == {"train", "validation"}


def test_best_eval_splits_need_early_stopping_and_known_splits(tmp_path):
  from mixupe_jax.train.validation import ConfigError
  config = early_stopping_config()
  config.early_stopping_patience, config.best_eval_splits = 0, ("test",)
  with pytest.raises(ConfigError, match=r"best_eval_splits = \('test',\).*early_stopping"):
    train_and_evaluate(config, str(tmp_path / "a"))
  config = early_stopping_config()
  config.best_eval_splits = ("tset",)
  with pytest.raises(ValueError, match=r"best_eval_splits \['tset'\] not in .*'train_eval'"):
    train_and_evaluate(config, str(tmp_path / "b"))


def test_a_training_subset_is_stratified_fixed_across_seeds_and_bounded(tmp_path):
  from mixupe_jax.train import inputs
  config = early_stopping_config()
  config.train_subset, config.validation_fraction = 500, 0.0

  def training_split(seed):
    config.seed = seed
    data = inputs.build_inputs(config, local_batch_size=50, local_eval_batch_size=50,
                               process_index=0, process_count=1)
    images, labels, mask = zip(*data.train_eval_batches())
    keep = np.concatenate(mask) > 0
    return data.num_train, np.concatenate(images)[keep], np.concatenate(labels)[keep]

  count, images, labels = training_split(0)
  assert count == len(labels) == 500
  # Each class keeps its share of the 1,347 training digits to within one row, and the total is
  # exact: floor(500 N_c / 1347) rows plus one for the largest remainders.
  config.train_subset = 0
  assert training_split(0)[0] == 1347
  shares = np.bincount(training_split(0)[2])
  counts = np.bincount(labels)
  assert np.all(np.abs(counts - 500 * shares / shares.sum()) < 1) and counts.sum() == 500
  config.train_subset = 500
  _, images_again, _ = training_split(1)
  np.testing.assert_array_equal(images, images_again)  # The subset's seed is its own.
  config.train_subset_seed = 1
  assert not np.array_equal(training_split(0)[1], images)
  config.train_subset = 5000
  with pytest.raises(ValueError, match="train_subset = 5000 is more than the 1347 training"):
    training_split(0)
