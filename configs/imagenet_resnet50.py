"""ImageNet (TFDS imagenet2012), ResNet-50 at 224x224, MixupE fast (v3, the official recipe).

Goyal et al.'s large-batch schedule: batch 1024, learning rate 0.1 x 1024 / 256 = 0.4 with SGD
Nesterov, 5 warm-up epochs, / 10 at epochs 30, 60 and 80 of 90; weight decay 1e-4; bfloat16 compute
with float32 parameters. Mixing groups of 16 examples (the default scope): the same run on 1, 2, 4,
8, 16, 32 or 64 devices (on a larger pod, keep 16 examples per device: batch_size = 16 x devices,
with the learning rate scaled as below). Prepare the data once with `tfds build imagenet2012`
(manual download of the ILSVRC2012 tars), then on a GPU host or a TPU VM / pod:

    python train.py --config=configs/imagenet_resnet50.py --workdir=gs://.../imagenet
    python train.py --config=configs/imagenet_resnet50.py --config.distributed=True  # every host

Scale, from the TPU and GPU compilers' memory analysis without the hardware (docs/benchmarks.md,
"The ImageNet step on a pod"): at 128 images per chip the step needs 9.2 GiB of a TPU v4 chip
and 10.5 GiB of an H100; the largest per-chip batch that fits is 992 on TPU v4, 640 on TPU v5e
and 1,392 on an H100 (MixupE-exact: 384, 192 and 704; Mixup: 2,128, 944 and 2,800), where the
compilers rematerialize to fit. Raise the batch per chip with the learning rate as below; keep
clean_pass_remat off.
"""

from mixupe_jax.models.registry import model_config
from mixupe_jax.train.defaults import default_config


def get_config():
  config = default_config()
  config.name = "imagenet_resnet50"
  config.dataset = "tfds:imagenet2012"
  config.image_size = 224
  config.augment = "inception"
  # Bilinear without antialiasing, as tf.image.resize's default in the TensorFlow ResNet-50
  # pipelines this recipe comes from: a fifth less time per crop than PIL's antialiased resize,
  # what lets grain keep up with tf.data per core (docs/benchmarks.md, "Input pipeline throughput").
  config.resize_antialias = False
  config.input_threads = 16
  config.model = model_config("resnet50")
  config.dtype = "bfloat16"
  # The gradient is computed in bfloat16 (the cotangents of the bfloat16 compute), so summing it
  # across devices in bfloat16 rounds little, and halves the step's one all-reduce: every method
  # then moves Mixup's bytes under the earlier, compiler-partitioned step (docs/benchmarks.md).
  config.gradient_all_reduce_dtype = "bfloat16"
  config.method, config.alpha, config.eta, config.variant = "mixupe", 0.2, 0.1, "fast"
  config.batch_size = 1024
  config.eval_batch_size = 1024
  config.num_epochs = 90
  config.learning_rate = 0.1 * config.batch_size / 256
  config.warmup_epochs = 5.0
  config.schedule = "step"
  config.decay_epochs = (30, 60, 80)
  config.weight_decay = 1e-4
  config.log_every_steps = 100
  config.checkpoint_every_steps = 5000
  return config
