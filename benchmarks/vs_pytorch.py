"""mixupe_jax against the authors' algorithm in PyTorch (double backward), in one process.

Both sides train the same PreActResNet-18 (BatchNorm in train mode, identical layers and padding)
on the same CIFAR-shaped batch with SGD (Nesterov momentum), one jitted / eager step per method,
timed round-robin so that drifts in machine load hit every method alike:

  PyTorch, written here from the algorithm in the paper's official code:
    mixup          L_mix on x~ = lambda x_i + (1 - lambda) x_j (one lambda, one permutation)
    exact (v1)     + the clean pass f(x); g = autograd.grad(sum(f * stopgrad(p - y)), x,
                   create_graph=True); r_i = g_i . (x_bar - x_i); P = (1/B) sum_{r_i < tau} r_i;
                   L = L_mix + eta m_1 P, rescaled by |L_mix| / |L|; backward (double backward)
    fast (v3)      + u_i = f(x_i) . (y_i - p_i); L = L_mix - eta m_1 (1/B) sum_{u_i < tau} u_i
  mixupe_jax (`losses.make_loss_fn`, forward mode): mixup, exact v1 with the official per-example
    split (the default) and with the joint split, fast v3.

Before timing, `--check` (on by default) copies the JAX network's weights into the PyTorch one and
compares, on one batch with the same lambda and permutation, the exact v1 loss and its parameter
gradient (tau = 0, so that about half the examples enter): the timed programs compute the same
thing. The table gives absolute medians, each side's ratio to its own Mixup (median and range of
the per-round ratios) and JAX over PyTorch per method; the JSON keeps every sample.

PyTorch is optional and never needed by the tests: `pip install torch` (the CPU build:
`pip install torch --index-url https://download.pytorch.org/whl/cpu`).

    python benchmarks/vs_pytorch.py --out benchmarks/results/vs_pytorch_cpu.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

ALPHA, EXACT_ETA, EXACT_TAU, FAST_ETA, FAST_TAU = 1.0, 0.1, -1.0, 0.001, 1.0
M1 = ALPHA / (2 * ALPHA + 1)


def import_torch():
  try:
    import torch
  except ImportError:
    sys.exit(
      "benchmarks/vs_pytorch.py needs PyTorch, an optional benchmark dependency: "
      "pip install torch  (CPU build: pip install torch --index-url "
      "https://download.pytorch.org/whl/cpu)"
    )
  return torch


def torch_preact_resnet18(torch, num_classes: int = 10, width: int = 64):
  """PreActResNet-18 with the layers of `mixupe_jax.models.PreActResNet18`: bias-free convolutions,
  BatchNorm (momentum 0.1 = flax's 0.9, eps 1e-5), 1x1 projection shortcuts from the
  pre-activation, and flax's SAME padding (a stride-2 3x3 convolution pads 0 before, 1 after)."""
  nn = torch.nn

  def conv3x3(cin, cout, stride):
    if stride == 1:
      return nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
    return nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(cin, cout, 3, stride, 0, bias=False))

  class Block(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.norm1, self.norm2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
      self.conv1, self.conv2 = conv3x3(cin, cout, stride), conv3x3(cout, cout, 1)
      self.shortcut = (
        nn.Conv2d(cin, cout, 1, stride, 0, bias=False) if stride != 1 or cin != cout else None
      )

    def forward(self, x):
      out = torch.relu(self.norm1(x))
      shortcut = x if self.shortcut is None else self.shortcut(out)
      out = self.conv2(torch.relu(self.norm2(self.conv1(out))))
      return out + shortcut

  class Net(nn.Module):
    def __init__(self):
      super().__init__()
      self.stem = nn.Conv2d(3, width, 3, 1, 1, bias=False)
      blocks, cin = [], width
      for stage in range(4):
        for index in range(2):
          cout = width * 2**stage
          blocks.append(Block(cin, cout, 2 if stage > 0 and index == 0 else 1))
          cin = cout
      self.blocks = nn.Sequential(*blocks)
      self.norm, self.head = nn.BatchNorm2d(cin), nn.Linear(cin, num_classes)

    def forward(self, x):
      h = torch.relu(self.norm(self.blocks(self.stem(x))))
      return self.head(h.mean(dim=(2, 3)))

  return Net()


def torch_parameters_from_flax(torch, net, params) -> dict[str, tuple[str, callable]]:
  """Copies flax parameters into `net`; returns {flax path: (torch name, layout map)} for the
  gradient comparison. Convolutions HWIO -> OIHW, Dense [in, out] -> [out, in]."""
  conv = lambda k: np.transpose(np.asarray(k), (3, 2, 0, 1))
  dense = lambda k: np.asarray(k).T
  same = np.asarray
  names = {
    ("Conv_0", "kernel"): ("stem.weight", conv),
    ("BatchNorm_0", "scale"): ("norm.weight", same),
    ("BatchNorm_0", "bias"): ("norm.bias", same),
    ("Dense_0", "kernel"): ("head.weight", dense),
    ("Dense_0", "bias"): ("head.bias", same),
  }
  for index, block in enumerate(net.blocks):
    prefix = f"PreActBlock_{index}"
    convs = (["shortcut"] if block.shortcut is not None else []) + ["conv1", "conv2"]
    for number, name in enumerate(convs):
      module = getattr(block, name)
      suffix = ".1.weight" if isinstance(module, torch.nn.Sequential) else ".weight"
      names[(prefix, f"Conv_{number}", "kernel")] = (f"blocks.{index}.{name}{suffix}", conv)
    for number in (0, 1):
      names[(prefix, f"BatchNorm_{number}", "scale")] = (
        f"blocks.{index}.norm{number + 1}.weight",
        same,
      )
      names[(prefix, f"BatchNorm_{number}", "bias")] = (
        f"blocks.{index}.norm{number + 1}.bias",
        same,
      )
  state = net.state_dict()
  for path, (name, layout) in names.items():
    leaf = params
    for key in path:
      leaf = leaf[key]
    state[name] = torch.from_numpy(np.ascontiguousarray(layout(leaf)))
  net.load_state_dict(state)
  return names


def torch_step(
  torch,
  method: str,
  net,
  optimizer,
  x,
  y,
  onehot,
  x_bar,
  lam: float,
  partner,
  exact_tau: float = EXACT_TAU,
):
  """One training step of `method` ("mixup", "exact" or "fast"); returns the loss tensor."""
  functional = torch.nn.functional
  mixed = lam * x + (1 - lam) * x[partner]
  out = net(mixed)
  loss = lam * functional.cross_entropy(out, y) + (1 - lam) * functional.cross_entropy(
    out, y[partner]
  )
  if method != "mixup":
    scale = loss.detach().abs()
    batch = x.shape[0]
    if method == "exact":
      clean = x.clone().requires_grad_(True)
      logits = net(clean)
      residual = (torch.softmax(logits, 1) - onehot).detach()
      (gradient,) = torch.autograd.grad((logits * residual).sum(), clean, create_graph=True)
      values = (gradient * (x_bar - x)).sum(dim=(1, 2, 3))
      penalty = M1 * (values * (values.detach() < exact_tau)).sum() / batch
      loss = loss + EXACT_ETA * penalty
    else:
      logits = net(x)
      values = (logits * (onehot - torch.softmax(logits, 1))).sum(1)
      penalty = M1 * (values * (values.detach() < FAST_TAU)).sum() / batch
      loss = loss - FAST_ETA * penalty
    loss = (scale / loss.detach().abs()) * loss
  optimizer.zero_grad(set_to_none=True)
  loss.backward()
  optimizer.step()
  return loss


def check_against_jax(torch, jax_model, params, model_state, x, y, x_bar) -> dict[str, float]:
  """The exact v1 loss and parameter gradient of both implementations on the same weights,
  batch, lambda and permutation (tau = 0): largest relative differences."""
  import jax

  from mixupe_jax import losses, mixing
  from mixupe_jax.models import flax_apply_fn

  mixed = mixing.mixup(jax.random.key(1), x, y, alpha=ALPHA, num_classes=10)
  lam = float(np.asarray(mixed.lam).reshape(-1)[0])
  partner = torch.from_numpy(np.asarray(mixed.partner).astype(np.int64))

  def loss_fn(p):
    return losses.mixupe_loss_fn(
      p,
      model_state,
      mixed,
      x,
      y,
      x_bar,
      apply_fn=flax_apply_fn(jax_model),
      alpha=ALPHA,
      eta=EXACT_ETA,
      variant="v1",
      threshold=0.0,
      num_classes=10,
    )

  (jax_loss, aux), jax_grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  net = torch_preact_resnet18(torch).double()
  names = torch_parameters_from_flax(
    torch, net, jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  )
  tx = torch.from_numpy(np.asarray(x, np.float64)).permute(0, 3, 1, 2).contiguous()
  ty = torch.from_numpy(np.asarray(y).astype(np.int64))
  onehot = torch.nn.functional.one_hot(ty, 10).double()
  tbar = torch.from_numpy(np.asarray(x_bar, np.float64)).permute(2, 0, 1)[None]
  optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
  torch_loss = torch_step(
    torch, "exact", net, optimizer, tx, ty, onehot, tbar, lam, partner, exact_tau=0.0
  )
  torch_grads = dict(net.named_parameters())
  gradient_error = 0.0
  for path, (name, layout) in names.items():
    leaf = jax_grads
    for key in path:
      leaf = leaf[key]
    expected = layout(np.asarray(leaf, np.float64))
    got = torch_grads[name].grad.numpy()
    gradient_error = max(
      gradient_error, float(np.abs(got - expected).max() / (np.abs(expected).max() + 1e-12))
    )
  return dict(
    loss_jax=float(jax_loss),
    loss_torch=float(torch_loss),
    loss_relative_error=abs(float(jax_loss) - float(torch_loss)) / abs(float(jax_loss)),
    gradient_max_relative_error=gradient_error,
    active_fraction=float(aux.metrics["active_fraction"]),
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--image-size", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument(
    "--pause",
    type=float,
    default=0.3,
    help="Seconds of idle time before each timed step, so that neither "
    "library's idle worker threads still spin during the other's step.",
  )
  parser.add_argument("--no-check", dest="check", action="store_false")
  parser.add_argument(
    "--xla-default",
    action="store_true",
    help="Keep XLA's own CPU convolutions (YNNPACK) instead of mixupe_jax.xla_cpu.OPTIONS.",
  )
  parser.add_argument("--out", default="benchmarks/vs_pytorch.json")
  args = parser.parse_args()
  torch = import_torch()
  from mixupe_jax import xla_cpu

  if not args.xla_default:
    xla_cpu.configure()

  import jax
  import jax.numpy as jnp
  from step_cost import compiled_cost, make_problem, make_step  # The sibling benchmark's.

  from mixupe_jax import losses
  from mixupe_jax.models import PreActResNet18, flax_apply_fn

  key = jax.random.key(0)
  inputs, labels, module, params, model_state, x_bar, optimizer = make_problem(
    args.batch_size, args.image_size
  )
  shape = tuple(inputs.shape)

  check = None
  if args.check:
    with jax.enable_x64():
      check = check_against_jax(
        torch,
        PreActResNet18(num_classes=10, dtype=jnp.float64),
        jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params),
        jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model_state),
        jnp.asarray(inputs, jnp.float64),
        labels,
        jnp.asarray(x_bar, jnp.float64),
      )
    print(
      f"  check (float64, tau = 0, {check['active_fraction']:.0%} of examples enter): loss "
      f"jax {check['loss_jax']:.6f} torch {check['loss_torch']:.6f}, largest relative "
      f"gradient difference {check['gradient_max_relative_error']:.1e}",
      flush=True,
    )

  jax_methods = {
    "mixup": dict(method="mixup"),
    "exact_official": dict(
      method="mixupe", variant="v1", eta=EXACT_ETA, threshold=EXACT_TAU, term_split="official"
    ),
    "exact_joint": dict(
      method="mixupe", variant="v1", eta=EXACT_ETA, threshold=EXACT_TAU, term_split="joint"
    ),
    "fast": dict(method="mixupe", variant="v3", eta=FAST_ETA, threshold=FAST_TAU),
  }
  runners, costs = {}, {}
  for name, options in jax_methods.items():
    loss_fn = losses.make_loss_fn(
      apply_fn=flax_apply_fn(module), num_classes=10, alpha=ALPHA, x_bar=x_bar, **options
    )
    step = (
      make_step(loss_fn, optimizer)
      .lower(params, model_state, optimizer.init(params), inputs, labels, key)
      .compile()
    )
    costs[f"jax_{name}"] = compiled_cost(step)
    state = [params, model_state, optimizer.init(params)]

    def run(repeat, step=step, state=state):
      outputs = step(*state, inputs, labels, jax.random.fold_in(key, repeat))
      state[:] = outputs[:3]
      outputs[3].block_until_ready()

    runners[f"jax_{name}"] = run

  torch.manual_seed(0)
  base_net = torch_preact_resnet18(torch)
  tx = torch.from_numpy(np.asarray(inputs)).permute(0, 3, 1, 2).contiguous()
  ty = torch.from_numpy(np.asarray(labels).astype(np.int64))
  onehot = torch.nn.functional.one_hot(ty, 10).float()
  tbar = tx.mean(dim=0, keepdim=True)
  rng = np.random.default_rng(0)
  for name in ("mixup", "exact", "fast"):
    net = copy.deepcopy(base_net)
    sgd = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True)

    def run(repeat, name=name, net=net, sgd=sgd):
      del repeat
      lam = float(rng.beta(ALPHA, ALPHA))
      torch_step(torch, name, net, sgd, tx, ty, onehot, tbar, lam, torch.randperm(len(ty)))

    runners[f"torch_{name}"] = run

  for name, run in runners.items():
    for repeat in range(args.warmup):
      run(args.repeats + repeat)  # Keys the timed rounds do not use.
    print(f"  warmed up {name}", flush=True)
  samples = {name: [] for name in runners}
  for repeat in range(args.repeats):
    for name, run in runners.items():
      time.sleep(args.pause)
      start = time.perf_counter()
      run(repeat)
      samples[name].append(time.perf_counter() - start)
    print(
      f"  round {repeat + 1}/{args.repeats}: "
      + ", ".join(f"{name} {samples[name][-1]:.2f} s" for name in runners),
      flush=True,
    )

  def ratio(name, reference):
    rounds = [a / b for a, b in zip(samples[name], samples[reference], strict=True)]
    return dict(median=statistics.median(rounds), low=min(rounds), high=max(rounds))

  results = {}
  for name in runners:
    side = name.split("_")[0]
    method = name.split("_", 1)[1]
    counterpart = {
      "mixup": "mixup",
      "exact_official": "exact",
      "exact_joint": "exact",
      "fast": "fast",
      "exact": "exact",
    }[method]
    results[name] = dict(
      median_s=statistics.median(samples[name]),
      samples_s=samples[name],
      ratio_to_own_mixup=ratio(name, f"{side}_mixup"),
      **costs.get(name, {}),
    )
    if side == "jax":
      results[name]["ratio_to_torch"] = ratio(name, f"torch_{counterpart}")

  print(
    f"\nPreActResNet-18, batch {'x'.join(map(str, shape))}, CPU ({platform.machine()}, "
    f"{os.cpu_count()} cores), JAX {jax.__version__}, PyTorch {torch.__version__} "
    f"({torch.get_num_threads()} threads), {args.repeats} rounds:"
  )
  print(
    "| implementation | method | median step (s) | vs own Mixup: median (range) | "
    "vs PyTorch, same method: median (range) |"
  )
  print("|---|---|---|---|---|")
  for name, result in results.items():
    own = result["ratio_to_own_mixup"]
    versus = result.get("ratio_to_torch")
    versus_text = (
      f"{versus['median']:.2f}x ({versus['low']:.2f}-{versus['high']:.2f})" if versus else ""
    )
    side, method = name.split("_", 1)
    print(
      f"| {'mixupe_jax' if side == 'jax' else 'PyTorch'} | {method} | "
      f"{result['median_s']:.3f} | {own['median']:.2f}x ({own['low']:.2f}-{own['high']:.2f}) "
      f"| {versus_text} |"
    )
  from provenance import provenance

  report = dict(
    benchmark="vs_pytorch",
    provenance=provenance(),
    model="PreActResNet-18",
    batch_shape=list(shape),
    jax_version=jax.__version__,
    torch_version=torch.__version__,
    torch_threads=torch.get_num_threads(),
    machine=platform.machine(),
    cpus=os.cpu_count(),
    repeats=args.repeats,
    xla_flags=os.environ.get("XLA_FLAGS"),
    check=check,
    results=results,
  )
  with open(args.out, "w") as file:
    json.dump(report, file, indent=2)
  print(f"\nwrote {args.out}")


if __name__ == "__main__":
  main()
