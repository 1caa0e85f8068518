"""The apply-function protocol the losses use, and its adapters for Flax linen and NNX modules.

An apply function maps (params, model_state, inputs) to (logits, new_model_state)::

    apply_fn(params, model_state, inputs, **hidden) -> (logits [B, C], new_model_state)

`model_state` holds the non-trainable collections (BatchNorm's `batch_stats`); it is `{}` for
models without state. Models that expose hidden layers (for Manifold Mixup and the MixupE term
at a hidden layer) accept `hidden_layer: int` and `hidden_transform: h -> h'`, applied to the
representation after block `hidden_layer` (0 is the input).

An apply function may say whether example i's logits can depend on another example's input (train-
mode BatchNorm, a graph convolution over the batch's nodes) through an attribute
`couples_examples`: a bool, or a function of the model state. The MixupE losses read it through
`couples_examples(apply_fn, model_state)` to skip work only where the official per-example split
cannot matter; an apply function without the attribute is assumed to couple them (always correct).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol, cast

import flax.linen as nn
import jax

Params = Any
ModelState = dict[str, Any]
# A model with dropout keeps its RNG key (raw uint32 data) in the model state under this name: each
# train-mode call draws from it and returns it advanced, so every pass gets new masks and the
# masks are a function of the seed and the step (checkpointed with the state).
DROPOUT_RNG = "dropout_rng"


def dropout_rngs(model_state: ModelState, train: bool) -> tuple[dict, ModelState]:
  """(rngs for `module.apply`, the state with its key advanced) in train mode with a key; else
  ({}, the state unchanged).

  Args:
    model_state: the model state, holding the dropout key under DROPOUT_RNG if the model has
      dropout.
    train: whether the call is in train mode.

  Returns:
    (rngs, model_state): `{"dropout": key}` and the state with its key advanced, or `{}` and the
    state as it was.

  >>> import jax
  >>> from mixupe_jax.models import apply
  >>> state = {apply.DROPOUT_RNG: jax.random.key_data(jax.random.key(0))}
  >>> rngs, advanced = apply.dropout_rngs(state, train=True)
  >>> list(rngs), bool((advanced[apply.DROPOUT_RNG] != state[apply.DROPOUT_RNG]).any())
  (['dropout'], True)
  >>> apply.dropout_rngs(state, train=False)[0]
  {}
  """
  if not train or DROPOUT_RNG not in model_state:
    return {}, model_state
  key, dropout = jax.random.split(jax.random.wrap_key_data(model_state[DROPOUT_RNG]))
  return {"dropout": dropout}, {**model_state, DROPOUT_RNG: jax.random.key_data(key)}


class ApplyFn(Protocol):
  """(params, model_state, inputs, hidden-layer keywords) -> (logits, new_model_state)."""

  def __call__(
    self, params: Params, model_state: ModelState, inputs: jax.Array, **hidden: Any
  ) -> tuple[jax.Array, ModelState]: ...


def couples_examples(apply_fn: ApplyFn, model_state: ModelState) -> bool:
  """Whether `apply_fn` may let example i's logits depend on example j's input (see above).

  Args:
    apply_fn: an apply function, with or without a `couples_examples` attribute.
    model_state: the state it is called with (the attribute may be a function of it).

  Returns:
    The declaration, or True where there is none (always correct).

  >>> from mixupe_jax.models import apply
  >>> apply.couples_examples(lambda params, state, x: (x, state), {})
  True
  """
  declared = getattr(apply_fn, "couples_examples", True)
  return bool(declared(model_state) if callable(declared) else declared)


def flax_apply_fn(
  module: nn.Module, *, train: bool = True, couples_examples: bool | None = None
) -> ApplyFn:
  """An `ApplyFn` for a linen module whose `__call__(x, train=...)` returns logits.

  In train mode every collection in `model_state` is mutable (BatchNorm uses and updates the batch
  statistics); in eval mode the state is used read-only and returned unchanged.
  `couples_examples` (None: inferred) says whether examples interact: by default, exactly when a
  train-mode module has state (BatchNorm's batch statistics); pass True for a module that mixes
  examples without state (e.g. attention across the batch).

  Args:
    module: the linen module.
    train: train mode (BatchNorm's batch statistics, dropout) or eval mode.
    couples_examples: the declaration; None infers it.

  Returns:
    The `ApplyFn`.

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax.models import MLP, apply, init_model
  >>> from mixupe_jax.models import flax_apply_fn
  >>> model = MLP(num_classes=3, hidden_sizes=(8,))
  >>> params, state = init_model(model, jax.random.key(0), jnp.ones((1, 4)))
  >>> logits, state = flax_apply_fn(model)(params, state, jnp.ones((2, 4)))
  >>> logits.shape, apply.couples_examples(flax_apply_fn(model), state)  # MLP: no BatchNorm
  ((2, 3), False)
  """

  def apply_fn(params, model_state, inputs, **hidden):
    rngs, model_state = dropout_rngs(model_state, train)
    collections = {k: v for k, v in model_state.items() if k != DROPOUT_RNG}
    variables = {"params": params, **collections}
    if train and collections:
      logits, updates = module.apply(
        variables, inputs, train=True, rngs=rngs, mutable=list(collections), **hidden
      )
      return logits, {**model_state, **updates}
    return module.apply(variables, inputs, train=train, rngs=rngs, **hidden), model_state

  if couples_examples is None:
    return declare_coupling(
      apply_fn, lambda model_state: train and bool(set(model_state) - {DROPOUT_RNG})
    )
  return declare_coupling(apply_fn, couples_examples)


def declare_coupling(apply_fn: Callable, couples: bool | Callable[[ModelState], bool]) -> ApplyFn:
  """`apply_fn` with its `couples_examples` declaration (see above) attached; returns it.

  Args:
    apply_fn: any function of (params, model_state, inputs).
    couples: a bool, or a function of the model state.

  Returns:
    `apply_fn` itself, declared.

  >>> from mixupe_jax.models import apply
  >>> apply_fn = apply.declare_coupling(lambda params, state, x: (x, state), False)
  >>> apply.couples_examples(apply_fn, {})
  False
  """
  apply_fn.couples_examples = couples  # type: ignore[attr-defined]  # Functions take attributes.
  return apply_fn  # type: ignore[return-value]  # It now has the ApplyFn shape and attribute.


def nnx_apply_fn(
  model: Any, *, train: bool = True, couples_examples: bool | None = None
) -> tuple[ApplyFn, Params, ModelState]:
  """(apply_fn, params, model_state) for a Flax NNX module whose `__call__(x)` returns logits.

  `params` are the module's `nnx.Param`s, `model_state` every other variable (BatchNorm's
  statistics, dropout's RNG counts), both `nnx.State` pytrees that optax and `jax.jit` take as
  they are. Each call merges a copy of the module (`nnx.merge(..., copy=True)`, so the function
  stays pure under jit, grad and jvp), puts it in train or eval mode (`module.train()` /
  `module.eval()`), runs it and returns the logits and the updated `model_state`; the mixed and
  the clean pass of MixupE therefore both update BatchNorm's running statistics in train mode,
  as for linen. Hidden-layer keywords (`hidden_layer`, `hidden_transform`) are passed through to
  modules that take them. `couples_examples` as in `flax_apply_fn` (None: train mode with
  BatchNorm statistics).

  Args:
    model: the `nnx.Module`.
    train: train mode or eval mode.
    couples_examples: the declaration; None infers it.

  Returns:
    (apply_fn, params, model_state).

  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> from mixupe_jax.models import apply
  >>> apply_fn, params, state = apply.nnx_apply_fn(nnx.Linear(4, 3, rngs=nnx.Rngs(0)))
  >>> apply_fn(params, state, jnp.ones((2, 4)))[0].shape
  (2, 3)
  """
  from flax import nnx  # Only for NNX users.

  graphdef, params, model_state = cast(tuple[Any, Any, Any], nnx.split(model, nnx.Param, ...))

  def apply_fn(params, model_state, inputs, **hidden):
    module = nnx.merge(graphdef, params, model_state, copy=True)
    if train:
      module.train()
    else:
      module.eval()
    logits = module(inputs, **hidden)
    _, _, new_state = cast(tuple[Any, Any, Any], nnx.split(module, nnx.Param, ...))
    return logits, (new_state if train else model_state)

  def has_batch_statistics(state):
    variables = jax.tree.leaves(state, is_leaf=lambda v: isinstance(v, nnx.Variable))
    return train and any(isinstance(v, nnx.BatchStat) for v in variables)

  coupling = has_batch_statistics if couples_examples is None else couples_examples
  return declare_coupling(apply_fn, coupling), params, model_state


# jax.checkpoint_policies that need no arguments, by name (config files name one of these).
REMAT_POLICIES = (
  "dots_saveable",
  "nothing_saveable",
  "dots_with_no_batch_dims_saveable",
  "everything_saveable",
)
RematPolicy = Callable[..., bool]


def remat_policy(policy: str | RematPolicy) -> RematPolicy:
  """A policy of `jax.checkpoint_policies` by name (REMAT_POLICIES), or a policy itself.

  Args:
    policy: a name in REMAT_POLICIES, or a policy.

  Returns:
    The policy; a ValueError lists the valid names for an unknown one.

  >>> import jax
  >>> from mixupe_jax.models import apply
  >>> apply.remat_policy("dots_saveable") is jax.checkpoint_policies.dots_saveable
  True
  """
  if callable(policy):
    return policy
  if policy not in REMAT_POLICIES:
    raise ValueError(
      f"Unknown rematerialization policy {policy!r}; valid names are "
      f"{', '.join(REMAT_POLICIES)} (or pass a jax.checkpoint_policies policy)."
    )
  return getattr(jax.checkpoint_policies, policy)


def rematerialized(apply_fn: ApplyFn, policy: str | RematPolicy) -> ApplyFn:
  """`apply_fn` under `jax.checkpoint(policy=...)`: the backward pass recomputes what the policy
  does not save instead of keeping it from the forward pass. Derivatives taken through it
  (`jax.jvp`, `jax.linearize`, the gradient of both) equal those of `apply_fn`; only memory and
  FLOPs change. With "dots_saveable" the outputs of the convolutions and matrix products are kept
  and the normalizations and activations between them recomputed.

  Args:
    apply_fn: the apply function.
    policy: a name in REMAT_POLICIES, or a `jax.checkpoint_policies` policy.

  Returns:
    The rematerialized `ApplyFn`, with `apply_fn`'s coupling declaration.

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax.models import MLP, apply, init_model
  >>> from mixupe_jax.models import flax_apply_fn
  >>> model = MLP(num_classes=3, hidden_sizes=(8,))
  >>> params, state = init_model(model, jax.random.key(0), jnp.ones((1, 4)))
  >>> plain = flax_apply_fn(model)
  >>> remat = apply.rematerialized(plain, "dots_saveable")
  >>> bool(jnp.array_equal(plain(params, state, jnp.ones((2, 4)))[0],
  ...                      remat(params, state, jnp.ones((2, 4)))[0]))
  True
  """
  saved = remat_policy(policy)

  def apply(params, model_state, inputs, **hidden):
    call = functools.partial(apply_fn, **hidden)
    return jax.checkpoint(call, policy=saved)(params, model_state, inputs)

  return declare_coupling(apply, getattr(apply_fn, "couples_examples", True))


def init_model(
  module: nn.Module, key: jax.Array, sample_inputs: jax.Array, dropout_key: jax.Array | None = None
) -> tuple[Params, ModelState]:
  """Initializes a linen module; returns (params, model_state). A module with dropout needs
  `dropout_key`, which the state then carries (see DROPOUT_RNG).

  Args:
    module: the linen module.
    key: the `jax.random` key of the initialization.
    sample_inputs: an input batch of the right shape (one example is enough).
    dropout_key: the key dropout's masks are drawn from, for modules with dropout.

  Returns:
    (params, model_state); `model_state` is `{}` without BatchNorm or dropout.

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax.models import MLP, apply, init_model
  >>> params, state = init_model(MLP(num_classes=3, hidden_sizes=(8,)), jax.random.key(0),
  ...                            jnp.ones((1, 4)))
  >>> jax.tree.map(jnp.shape, params)["Dense_0"], state
  ({'bias': (8,), 'kernel': (4, 8)}, {})
  """
  # One compiled program, as the flax examples initialize: run eagerly, init compiles and
  # dispatches each of its operations on its own (hundreds for a ResNet). The values are the same
  # bits either way (tests/test_models.py).
  variables = dict(jax.jit(functools.partial(module.init, train=False))(key, sample_inputs))
  params = variables.pop("params")
  if dropout_key is not None:
    variables[DROPOUT_RNG] = jax.random.key_data(dropout_key)
  return params, variables


HiddenTransform = Callable[[jax.Array], jax.Array]


def maybe_transform(
  h: jax.Array, layer: int, hidden_layer: int | None, hidden_transform: HiddenTransform | None
) -> jax.Array:
  """Applies the hidden transform to h when this is the requested layer (inside a model).

  Args:
    h: the representation after block `layer`.
    layer: the index of this point in the model.
    hidden_layer: the layer the caller asked for, or None.
    hidden_transform: h -> h', or None.

  Returns:
    hidden_transform(h) at the requested layer, else h.

  >>> import jax.numpy as jnp
  >>> from mixupe_jax.models import apply
  >>> apply.maybe_transform(jnp.ones(2), 1, 1, lambda h: 2 * h).tolist()
  [2.0, 2.0]
  >>> apply.maybe_transform(jnp.ones(2), 0, 1, lambda h: 2 * h).tolist()
  [1.0, 1.0]
  """
  if hidden_layer == layer and hidden_transform is not None:
    return hidden_transform(h)
  return h


def check_hidden_layer(hidden_layer: int | None, num_layers: int, model_name: str) -> None:
  """A model's hidden layers are 0 (the input) .. num_layers; a ValueError names the bad one.

  Args:
    hidden_layer: the requested layer, or None.
    num_layers: the model's last hidden layer.
    model_name: the model's name, for the message.

  >>> from mixupe_jax.models import apply
  >>> apply.check_hidden_layer(3, 2, "MLP")
  Traceback (most recent call last):
  ValueError: MLP exposes hidden layers 0..2, got hidden_layer=3.
  """
  if hidden_layer is not None and not 0 <= hidden_layer <= num_layers:
    raise ValueError(
      f"{model_name} exposes hidden layers 0..{num_layers}, got hidden_layer={hidden_layer}."
    )


def output_dtype(compute_dtype: Any) -> Any:
  """Logits leave the model in float32 (float64 when computing in float64), whatever the
  compute dtype, so losses are never taken in bfloat16.

  Args:
    compute_dtype: the model's compute dtype.

  Returns:
    float32, or float64.

  >>> import jax.numpy as jnp
  >>> from mixupe_jax.models import apply
  >>> apply.output_dtype(jnp.bfloat16)
  dtype('float32')
  """
  return jax.numpy.promote_types(compute_dtype, jax.numpy.float32)
