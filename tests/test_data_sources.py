"""The data sources, one per kind of data (`train.inputs`): TFDS images streamed, arrays in memory,
a graph. Each gives the loop the same things (batches per process, evaluation passes, x_bar's
inputs, the init sample, the apply functions, where the steps run), and `set_up` reads them
without asking which kind it has."""

import contextlib
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
from test_bad_inputs import planetoid_folder

from mixupe_jax.data import graphs
from mixupe_jax.models.registry import model_config
from mixupe_jax.train import inputs as inputs_lib
from mixupe_jax.train.defaults import default_config
from mixupe_jax.train.loop import set_up

SHARD = dict(local_batch_size=8, local_eval_batch_size=16, process_index=0, process_count=1)


def cifar_mock(tmp_path):
  config = default_config()
  config.dataset, config.model = "tfds:cifar10", model_config("small_cnn", channels=(4, 8))
  return config, tfds.testing.mock_data(num_examples=40)


def digits(tmp_path):
  config = default_config()
  config.dataset, config.validation_fraction = "sklearn:digits", 0.1
  return config, contextlib.nullcontext()


def three_training_classes(parts, index):
  """The 12-node graph with its first 3 nodes labelled for training, one per class, so that
  every class of the held-out nodes has training examples."""
  parts["x"] = parts["allx"][:3]
  parts["y"] = parts["ally"][:3]


def graph(tmp_path):
  config = default_config()
  config.dataset = f"planetoid:cora:{planetoid_folder(tmp_path, edit=three_training_classes)}"
  config.model = model_config("gcn", hidden_sizes=(4,))
  # Cora's layout in 12 nodes: its published node count (checked in test_bad_inputs.py) set to it.
  return config, mock.patch.dict(graphs.PUBLISHED_NODES, {"cora": 12})


# (config maker, the source it gets, the number of training examples, the evaluation splits).
KINDS = {
  "tfds images": (cifar_mock, inputs_lib.StreamedImages, 40, {"test"}),
  "arrays": (digits, inputs_lib.ArraysInMemory, None, {"validation", "test"}),
  "graph": (graph, inputs_lib.Graph, 3, {"validation", "test"}),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_of_data_is_read_by_its_source_through_one_interface(kind, tmp_path):
  """The source `build_inputs` looks up for the spec; its training batches, evaluation passes
  (each example once, padding masked), x_bar's inputs and init sample agree with its declared
  sizes."""
  make, source_type, num_train, splits = KINDS[kind]
  config, context = make(tmp_path)
  with context:
    source = inputs_lib.build_inputs(config, **SHARD)
    assert type(source) is source_type
    if num_train is not None:
      assert source.num_train == num_train
    assert set(source.eval_batches) == splits
    assert set(source.eval_sources()) == splits | {inputs_lib.TRAIN_EVAL}
    shape = tuple(source.example_shape)
    x, y = next(source.train_batches(0))
    batch = source.num_train if kind == "graph" else SHARD["local_batch_size"]
    assert x.shape == (batch,) + shape and y.shape == (batch,)
    assert 0 <= y.min() and y.max() < source.num_classes
    examples = {}
    for split, one_pass in source.eval_sources().items():
      masks = [mask for features, _, mask in one_pass() if features.shape[1:] == shape]
      examples[split] = int(sum(mask.sum() for mask in masks))
      assert all(mask.shape == masks[0].shape for mask in masks)
    assert examples[inputs_lib.TRAIN_EVAL] == source.num_train
    assert sum(len(batch) for batch in source.x_bar_batches()) == source.num_train
    assert np.asarray(source.init_sample()).shape[1:] == shape


def test_a_batched_source_runs_the_config_s_batch_on_every_device():
  """placement: arrays take the config's batch over every device, in its mixing scope; a batch the
  devices do not divide is a ConfigError naming it."""
  config, _ = digits(None)
  config.batch_size, config.mixing_scope = 64, "device"
  arrays = inputs_lib.build_inputs(config, **SHARD).placement(config)
  assert (arrays.mesh.size, arrays.batch_size, arrays.mixing_scope) == (8, 64, "device")
  config.batch_size = 60  # Not a multiple of the 8 devices.
  with pytest.raises(inputs_lib.ConfigError, match="batch_size: The batch size 60 is not divisible"):
    inputs_lib.build_inputs(config, **SHARD).placement(config)


def test_a_graph_trains_on_one_device_and_evaluates_each_split_with_its_own_step(tmp_path):
  """set_up without a branch on the kind: the graph's placement (one device, every training
  node per step, global pairing) and its eval steps (one per split: each split's batch is its own
  nodes); digits' splits share one eval step, compiled once."""
  config, context = graph(tmp_path)
  config.batch_size, config.mixing_scope = 64, "device"  # Both overridden by the graph.
  with context:
    experiment = set_up(config)
  assert experiment.mesh.size == 1 and experiment.batch_size == experiment.data.num_train == 3
  steps = experiment.eval_steps
  assert set(steps) == {"validation", "test", inputs_lib.TRAIN_EVAL}
  assert len({id(step) for step in steps.values()}) == 3

  config, _ = digits(tmp_path)
  config.batch_size = 128
  experiment = set_up(config)
  assert experiment.mesh.size == 8 and experiment.batch_size == 128
  assert len({id(step) for step in experiment.eval_steps.values()}) == 1
