"""Schedules, the optimizer, the sharded train step and the config checks of the training system."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mixupe_jax import evaluation, losses, parallel
from mixupe_jax.experiments.runner import load_config_file
from mixupe_jax.models import MLP, SmallCNN, flax_apply_fn, init_model
from mixupe_jax.models.registry import build_model
from mixupe_jax.train import optim, step as step_lib
from mixupe_jax.train.defaults import default_config
from mixupe_jax.train.loop import train_and_evaluate


def test_step_schedule_warms_up_then_decays_at_the_boundaries():
  config = default_config()
  config.learning_rate, config.schedule = 0.4, "step"
  config.warmup_epochs, config.decay_epochs, config.decay_factor = 2, (5, 8), 0.1
  schedule = optim.learning_rate_schedule(config, steps_per_epoch=10, total_steps=100)
  assert float(schedule(0)) == 0.0
  assert float(schedule(10)) == pytest.approx(0.2)  # Half-way through the linear warm-up.
  assert float(schedule(20)) == pytest.approx(0.4)
  assert float(schedule(49)) == pytest.approx(0.4)
  assert float(schedule(50)) == pytest.approx(0.04)
  assert float(schedule(80)) == pytest.approx(0.004)


def test_cosine_schedule_reaches_zero_at_the_last_step():
  config = default_config()
  config.learning_rate, config.schedule, config.warmup_epochs = 0.1, "cosine", 0
  schedule = optim.learning_rate_schedule(config, steps_per_epoch=10, total_steps=100)
  assert float(schedule(0)) == pytest.approx(0.1)
  assert float(schedule(50)) == pytest.approx(0.05)
  assert float(schedule(100)) == pytest.approx(0.0, abs=1e-8)


def test_cosine_after_warmup_constant_and_one_step_edges():
  """Cosine decays over the steps after the warm-up; "constant" stays at lr past any decay epoch;
  a one-step warm-up starts at 0; a one-step cosine ends at 0."""
  config = default_config()
  config.learning_rate, config.schedule, config.warmup_epochs = 0.1, "cosine", 1
  schedule = optim.learning_rate_schedule(config, steps_per_epoch=10, total_steps=100)
  assert float(schedule(5)) == pytest.approx(0.05)
  assert float(schedule(10)) == pytest.approx(0.1)
  assert float(schedule(55)) == pytest.approx(0.05)  # Half-way through the 90 cosine steps.
  assert float(schedule(100)) == pytest.approx(0.0, abs=1e-8)
  config.warmup_epochs = 0
  assert float(optim.learning_rate_schedule(config, 10, total_steps=1)(1)) == pytest.approx(
      0.0, abs=1e-8)
  config.schedule, config.warmup_epochs = "constant", 0.1  # A one-step warm-up.
  schedule = optim.learning_rate_schedule(config, steps_per_epoch=10, total_steps=3000)
  assert float(schedule(0)) == 0.0
  assert [float(schedule(t)) for t in (1, 1500, 2999)] == pytest.approx([0.1, 0.1, 0.1])


def test_sgd_nesterov_with_weight_decay_matches_the_update_rule():
  config = default_config()
  config.momentum, config.weight_decay = 0.9, 0.01
  optimizer = optim.make_optimizer(config, optax.constant_schedule(0.1))
  theta = {"w": jnp.array([[1.0, -2.0]])}
  state = optimizer.init(theta)
  gradients = [jnp.array([[0.5, 0.25]]), jnp.array([[-1.0, 2.0]])]
  velocity, expected = np.zeros((1, 2)), np.array([[1.0, -2.0]])
  for g in gradients:
    updates, state = optimizer.update({"w": g}, state, theta)
    theta = optax.apply_updates(theta, updates)
    decayed = np.asarray(g) + 0.01 * expected
    velocity = 0.9 * velocity + decayed
    expected = expected - 0.1 * (decayed + 0.9 * velocity)
  np.testing.assert_allclose(theta["w"], expected, rtol=1e-6)


@pytest.mark.parametrize("scope,decayed", [
    ("all", {"Dense_0/kernel", "Dense_0/bias", "BatchNorm_0/scale", "Dense_1/kernel"}),
    ("kernels", {"Dense_0/kernel", "Dense_1/kernel"}),
    ("first_layer", {"Dense_0/kernel", "Dense_0/bias"})])
def test_weight_decay_scopes_decay_exactly_their_parameters(scope, decayed):
  """With zero gradients and no momentum, one SGD step moves theta by -lr wd theta exactly on the
  decayed parameters: all of them, the weight matrices (ndim > 1), or the first layer's."""
  params = {"Dense_0": {"kernel": jnp.full((2, 3), 2.0), "bias": jnp.full(3, 2.0)},
            "BatchNorm_0": {"scale": jnp.full(3, 2.0)},
            "Dense_1": {"kernel": jnp.full((3, 1), 2.0)}}
  for use_shorthand in ((False, True) if scope == "kernels" else (False,)):
    config = default_config()
    config.momentum, config.weight_decay = 0.0, 0.25
    if use_shorthand:
      config.weight_decay_kernels_only = True
    else:
      config.weight_decay_scope = scope
    optimizer = optim.make_optimizer(config, optax.constant_schedule(0.5))
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = optimizer.update(zeros, optimizer.init(params), params)
    for module, leaves in updates.items():
      for name, update in leaves.items():
        expected = -0.5 * 0.25 * 2.0 if f"{module}/{name}" in decayed else 0.0
        np.testing.assert_allclose(update, expected, err_msg=f"{scope} {module}/{name}")
  config = default_config()
  config.weight_decay_scope = "first_layer"
  optimizer = optim.make_optimizer(config, optax.constant_schedule(0.1))
  # A CNN's input layer is Conv_0 (its dense readout is Dense_0).
  conv_params = {"Conv_0": {"kernel": jnp.ones((3, 3, 1, 2))}, "Dense_0": {"kernel": jnp.ones((2, 2))}}
  updates, _ = optimizer.update(jax.tree.map(jnp.zeros_like, conv_params),
                                optimizer.init(conv_params), conv_params)
  assert float(jnp.abs(updates["Conv_0"]["kernel"]).min()) > 0
  np.testing.assert_array_equal(updates["Dense_0"]["kernel"], 0.0)
  with pytest.raises(ValueError, match=r"^weight_decay_scope='first_layer' needs a top-level "
                     r"module named Conv_0 or Dense_0 \(the input layer\); this model's modules "
                     r"are \['Block_0', 'Head'\]\.$"):
    optimizer.init({"Head": {"w": jnp.ones(2)}, "Block_0": {"w": jnp.ones(2)}})
  config.weight_decay_scope = "biases"
  with pytest.raises(ValueError, match="'biases'.*all, kernels, first_layer"):
    optim.make_optimizer(config, optax.constant_schedule(0.1))


def test_adam_with_weight_decay_matches_the_update_rule():
  """Adam (b1 0.9, b2 0.999, eps 1e-8) on g + wd theta, written out for two steps."""
  config = default_config()
  config.optimizer, config.weight_decay = "adam", 0.01
  optimizer = optim.make_optimizer(config, optax.constant_schedule(0.1))
  theta = {"w": jnp.array([1.0, -2.0])}
  state = optimizer.init(theta)
  first, second, expected = np.zeros(2), np.zeros(2), np.array([1.0, -2.0])
  for t, g in enumerate([np.array([0.5, 0.25]), np.array([-1.0, 2.0])], start=1):
    updates, state = optimizer.update({"w": jnp.asarray(g)}, state, theta)
    theta = optax.apply_updates(theta, updates)
    decayed = g + 0.01 * expected
    first = 0.9 * first + 0.1 * decayed
    second = 0.999 * second + 0.001 * decayed ** 2
    expected = expected - 0.1 * (first / (1 - 0.9 ** t)) / (
        np.sqrt(second / (1 - 0.999 ** t)) + 1e-8)
  np.testing.assert_allclose(theta["w"], expected, rtol=1e-6)


def test_unknown_names_are_errors_listing_the_valid_ones():
  config = default_config()
  config.schedule = "linear"
  with pytest.raises(ValueError, match="'linear'.*step, cosine, constant"):
    optim.learning_rate_schedule(config, 10, 100)
  config.optimizer = "lamb"
  with pytest.raises(ValueError, match="'lamb'.*sgd, adam"):
    optim.make_optimizer(config, optax.constant_schedule(0.1))
  with pytest.raises(ValueError, match="'resnet9'.*preact_resnet18"):
    build_model("resnet9", num_classes=10)
  with pytest.raises(ValueError, match="'float8'.*bfloat16"):
    build_model("mlp", num_classes=10, dtype="float8")


def test_unknown_config_field_is_an_error():
  config = default_config()
  config.lock()
  with pytest.raises(AttributeError, match="learning_rat"):
    config.learning_rat = 0.1


def _sharded_step(devices, inputs, labels, preprocess=None):
  module = SmallCNN(4, channels=(4, 8))
  params, model_state = init_model(module, jax.random.key(1), inputs[:1])
  loss_fn = losses.make_loss_fn("mixupe", apply_fn=flax_apply_fn(module), num_classes=4,
                                alpha=1.0, eta=1.0, variant="v1",
                                x_bar=(preprocess or (lambda x: x))(inputs).mean(0))
  config = default_config()
  schedule = optax.constant_schedule(0.05)
  optimizer = optim.make_optimizer(config, schedule)
  mesh = parallel.data_mesh(devices)
  state = parallel.replicate(step_lib.TrainState(jnp.zeros((), jnp.int32), params, model_state,
                                                 optimizer.init(params)), mesh)
  train_step = step_lib.make_train_step(loss_fn, optimizer, schedule, mesh, jax.random.key(2),
                                        preprocess)
  global_inputs, global_labels = step_lib.global_batch((inputs, labels), mesh)
  for _ in range(2):
    state, metrics = train_step(state, global_inputs, global_labels)
  return state, metrics, global_inputs


@pytest.mark.slow
def test_mixupe_train_step_on_8_devices_equals_1_device():
  assert jax.device_count() == 8, "conftest sets 8 simulated CPU devices"
  rng = np.random.default_rng(0)
  inputs = rng.normal(size=(16, 8, 8, 1)).astype(np.float32)
  labels = rng.integers(0, 4, 16).astype(np.int32)
  one_state, one_metrics, _ = _sharded_step(jax.devices()[:1], inputs, labels)
  eight_state, eight_metrics, sharded_inputs = _sharded_step(jax.devices(), inputs, labels)
  # The batch really is split: 8 shards of 2 examples, one per device.
  assert sharded_inputs.sharding.spec == jax.sharding.PartitionSpec(parallel.DATA_AXIS)
  shards = sharded_inputs.addressable_shards
  assert len({s.device for s in shards}) == 8 and {s.data.shape[0] for s in shards} == {2}
  np.testing.assert_allclose(one_metrics["loss"], eight_metrics["loss"], rtol=1e-5)
  for one, eight in zip(jax.tree.leaves(one_state), jax.tree.leaves(eight_state)):
    np.testing.assert_allclose(one, eight, rtol=2e-4, atol=2e-6)
  assert int(eight_state.step) == 2
  # The step reports the loss, the schedule's learning rate, the gradient's norm and the loss's
  # own metrics.
  assert float(eight_metrics["learning_rate"]) == pytest.approx(0.05)
  assert {"loss", "learning_rate", "gradient_norm", "mixup_loss", "regularizer"} <= set(
      eight_metrics)
  np.testing.assert_allclose(one_metrics["gradient_norm"], eight_metrics["gradient_norm"],
                             rtol=1e-4)


@pytest.mark.slow
def test_the_train_step_maps_its_inputs_with_preprocess_before_the_loss():
  """`preprocess` (the on-device normalization) maps the inputs as they arrive: two steps on 2 x
  with preprocess x / 2 train exactly what two plain steps on x train. Mutants that fail it
  (checked by hand): the inputs, or preprocess's argument, None."""
  rng = np.random.default_rng(1)
  inputs = rng.normal(size=(16, 8, 8, 1)).astype(np.float32)
  labels = rng.integers(0, 4, 16).astype(np.int32)
  plain_state, plain_metrics, _ = _sharded_step(jax.devices(), inputs, labels)
  mapped_state, mapped_metrics, _ = _sharded_step(jax.devices(), 2 * inputs, labels,
                                                  lambda x: x / 2)
  assert float(mapped_metrics["loss"]) == float(plain_metrics["loss"])
  for plain, mapped in zip(jax.tree.leaves(plain_state), jax.tree.leaves(mapped_state),
                           strict=True):
    np.testing.assert_array_equal(plain, mapped)


def test_batch_not_divisible_by_devices_is_a_clear_error(tmp_path):
  config = default_config()
  config.batch_size = 12
  with pytest.raises(ValueError, match="batch size 12 is not divisible by the number of "
                     "devices 8"):
    train_and_evaluate(config, str(tmp_path))


def test_unknown_dataset_and_method_are_clear_errors(tmp_path):
  config = default_config()
  config.dataset = "mnist"
  with pytest.raises(ValueError, match="config.dataset = 'mnist': expected tfds:<name> or one of"):
    train_and_evaluate(config, str(tmp_path))
  config = default_config()
  config.method = "mixupp"
  with pytest.raises(ValueError, match="config.method = 'mixupp': valid values are erm, mixup, "
                                       "mixupe"):
    train_and_evaluate(config, str(tmp_path))
  config = default_config()
  config.eval_splits = ("validaton",)
  with pytest.raises(ValueError, match=r"eval_splits \['validaton'\] not in .*\['test'\]"):
    train_and_evaluate(config, str(tmp_path))


CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs")


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(CONFIG_DIR)
                                        if n.endswith(".py")))
def test_every_config_names_known_parts_and_keeps_the_default_fields(name):
  from mixupe_jax import regularizers
  from mixupe_jax.data import registry
  from mixupe_jax.models.registry import MODELS
  config = load_config_file(CONFIG_DIR, name)
  assert set(config.keys()) == set(default_config().keys()), "configs only change defaults"
  scheme = config.dataset.partition(":")[0]
  assert scheme == "tfds" or scheme in registry.SCHEMES
  assert config.model.name in MODELS
  assert config.method in losses.METHODS
  regularizers.get_variant(config.variant)
  for size in (config.batch_size, config.eval_batch_size):
    assert size % 8 == 0, "batch sizes should split over 8 devices"
  build_model(config.model.name, num_classes=10, dtype=config.dtype,
              **{k: v for k, v in config.model.items() if k not in ("name",)}
              | ({"edges": ([0], [0], [1.0])} if config.model.name == "gcn" else {}))


def test_an_unfinished_save_never_replaces_the_finished_checkpoint(tmp_path):
  from mixupe_jax.train.checkpoint import Checkpointer
  state = {"w": jnp.arange(3.0)}
  checkpointer = Checkpointer(str(tmp_path), max_to_keep=2)
  checkpointer.save(5, state)
  checkpointer.wait()
  # What a save killed mid-write leaves: a temporary folder of a later step, never renamed.
  partial = tmp_path / "9.orbax-checkpoint-tmp-1700000000"
  partial.mkdir()
  (partial / "junk").write_text("half a checkpoint")
  reopened = Checkpointer(str(tmp_path), max_to_keep=2)
  assert reopened.latest_step() == 5
  np.testing.assert_array_equal(reopened.restore_latest({"w": jnp.zeros(3)})["w"], [0, 1, 2])
  reopened.close()
  checkpointer.close()


def _another_value(option, value):
  """A value of the same type as `value`, different from it, that the model accepts."""
  if isinstance(value, bool):
    return not value
  if isinstance(value, int):
    return value + 1
  if isinstance(value, float):
    return 0.5 if value != 0.5 else 0.25
  if isinstance(value, tuple):
    return tuple(v + 1 for v in value)
  return {"activation": "tanh", "readout": "flatten" if value == "average" else "average"}[option]


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(CONFIG_DIR) if n.endswith(".py")))
def test_every_model_option_can_be_set_from_the_command_line(name, monkeypatch):
  """`--config.model.<option>=<value>` parsed as train.py parses it, on the locked config, for
  every option the model registry declares; the model then builds with it."""
  from absl import flags as absl_flags
  from ml_collections import config_flags
  from mixupe_jax.models.registry import model_options
  path = os.path.join(CONFIG_DIR, name) + (":iris" if name == "uci_mlp.py" else "")
  base = load_config_file(CONFIG_DIR, name + (":iris" if name == "uci_mlp.py" else ""))
  options = model_options(base.model.name)
  assert set(base.model) == {"name"} | set(options)
  for option, value in options.items():
    new = _another_value(option, base.model[option])
    text = f"({','.join(map(str, new))},)" if isinstance(new, tuple) else str(new)
    argv = ["train.py", f"--config={path}", f"--config.model.{option}={text}"]
    monkeypatch.setattr(sys, "argv", argv)  # ml_collections reads the overrides from argv.
    flag_values = absl_flags.FlagValues()
    config_flags.DEFINE_config_file("config", "configs/digits_mlp.py", flag_values=flag_values,
                                    lock_config=True)
    flag_values(argv)
    config = flag_values.config
    assert tuple(config.model[option]) == new if isinstance(new, tuple) \
        else config.model[option] == new, (option, config.model[option])
    build_model(config.model.name, num_classes=10, dtype=config.dtype,
                **{k: v for k, v in config.model.items() if k != "name"}
                | ({"edges": ([0], [0], [1.0])} if config.model.name == "gcn" else {}))


def test_an_unknown_model_option_is_an_error_listing_the_valid_ones():
  from mixupe_jax.models.registry import model_config
  with pytest.raises(ValueError, match=r"Model 'small_cnn' has no option widht; its options are "
                                       r"channels, readout"):
    model_config("small_cnn", widht=3)
  with pytest.raises(ValueError, match=r"Model 'mlp' has no option channels; its options are "):
    build_model("mlp", num_classes=3, channels=(4,))
  config = default_config()
  config.model.name = "small_cnn"  # The MLP's options stay: an error that says so.
  from mixupe_jax.train import validation
  with pytest.raises(validation.ConfigError, match=r"config.model has activation, dropout_rate, "
                     r"hidden_sizes, use_bias, which model 'small_cnn' does not take"):
    validation.validate(config)


def test_curves_are_titled_and_the_training_loss_is_named_by_method():
  from mixupe_jax.train import reporting
  records = [{"step": 10, "split": "train", "loss": 1.2}, {"step": 20, "split": "train", "loss": 1.0},
             {"step": 20, "split": "test", "nll": 0.9, "accuracy": 0.7}]
  figure = reporting.curves_figure(records, title="fashion_mnist_cnn: mixupe on idx:data",
                                   method="mixupe")
  assert figure._suptitle.get_text() == "fashion_mnist_cnn: mixupe on idx:data"
  loss_axis, accuracy_axis = figure.axes
  assert [t.get_text() for t in loss_axis.get_legend().get_texts()] == [
      "test: NLL", "train: MixupE loss (= Mixup loss when rescaled)"]
  assert [t.get_text() for t in accuracy_axis.get_legend().get_texts()] == ["test: accuracy"]
  for method, label in reporting.TRAINING_LOSS_LABELS.items():
    assert method in losses.METHODS and label.startswith("train: ")


def test_eval_step_splits_the_batch_and_returns_replicated_sums():
  """The eval step takes the batch split over the 8 devices (params replicated) and returns the
  batch's metric sums replicated, so every process can read them; the sums are those of
  evaluation.batch_sums on the whole batch."""
  mesh = parallel.data_mesh()
  module = MLP(3, hidden_sizes=(4,))
  inputs = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32)
  labels, mask = (np.arange(16) % 3).astype(np.int32), np.ones(16, np.float32)
  params, model_state = init_model(module, jax.random.key(0), inputs)
  state = step_lib.TrainState(jnp.zeros((), jnp.int32), params, model_state, ())
  eval_step = step_lib.make_eval_step(flax_apply_fn(module, train=False), mesh)
  compiled = eval_step.lower(state, inputs, labels, mask).compile()
  batch = parallel.batch_sharding(mesh)
  assert all(sharding.is_equivalent_to(batch, 2) for sharding in compiled.input_shardings[0][1:])
  sums = eval_step(state, inputs, labels, mask)
  expected = evaluation.batch_sums(module.apply({"params": params}, inputs, train=False), labels,
                                   mask)
  for name, value in sums.items():
    assert value.sharding.is_fully_replicated, name
    np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6)
  # The step's `preprocess` (the on-device normalization) maps the inputs before the model
  # (mutants that fail this, checked by hand: the inputs, or preprocess's argument, None).
  doubled = step_lib.make_eval_step(flax_apply_fn(module, train=False), mesh, lambda x: 2 * x)
  expected = evaluation.batch_sums(module.apply({"params": params}, 2 * inputs, train=False),
                                   labels, mask)
  for name, value in doubled(state, inputs, labels, mask).items():
    np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_the_train_step_shards_the_batch_donates_the_state_and_reports_the_gradient_norm():
  """Lowered with host arrays, the compiled step takes the batch split over the 8 devices and
  returns the state and metrics replicated; a step donates the old state's buffers (the memory a
  large model needs twice otherwise) and leaves the batch alone; the reported gradient norm is
  that of jax.grad of the loss with step 0's key, fold_in(base_key, 0), computed here.
  Mutants that fail it (checked by hand): in_shardings dropped or None, donate_argnums dropped,
  None or 1, the norm taken of None."""
  mesh = parallel.data_mesh()
  module = MLP(3, hidden_sizes=(4,))
  inputs = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32)
  labels = (np.arange(16) % 3).astype(np.int32)
  params, model_state = init_model(module, jax.random.key(0), inputs)
  loss_fn = losses.make_loss_fn("mixup", apply_fn=flax_apply_fn(module), num_classes=3, alpha=1.0)
  optimizer, schedule = optax.sgd(0.1), optax.constant_schedule(0.1)
  state = parallel.replicate(step_lib.TrainState(jnp.zeros((), jnp.int32), params, model_state,
                                                 optimizer.init(params)), mesh)
  base_key = jax.random.key(2)
  train_step = step_lib.make_train_step(loss_fn, optimizer, schedule, mesh, base_key)
  compiled = train_step.lower(state, inputs, labels).compile()
  batch = parallel.batch_sharding(mesh)
  assert all(sharding.is_equivalent_to(batch, 2) for sharding in compiled.input_shardings[0][1:])
  replicated = parallel.replicated_sharding(mesh)
  assert all(sharding.is_equivalent_to(replicated, len(info.shape))
             for sharding, info in zip(jax.tree.leaves(compiled.output_shardings),
                                       jax.tree.leaves(compiled.out_info), strict=True))
  grads = jax.grad(lambda p: loss_fn(p, model_state, inputs, labels,
                                     jax.random.fold_in(base_key, 0))[0])(params)
  global_inputs, global_labels = step_lib.global_batch((inputs, labels), mesh)
  new_state, metrics = train_step(state, global_inputs, global_labels)
  np.testing.assert_allclose(metrics["gradient_norm"], optax.tree.norm(grads), rtol=1e-5)
  assert all(leaf.is_deleted() for leaf in jax.tree.leaves(state.params))
  assert not global_inputs.is_deleted() and not global_labels.is_deleted()
  assert int(new_state.step) == 1
