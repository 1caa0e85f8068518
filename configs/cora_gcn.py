"""Cora (Planetoid files), Kipf & Welling's GCN recipe: two graph convolutions (16 hidden units, the
second gives the logits), dropout 0.5, row-normalized features, weight decay 5e-4 on the first
layer, Adam 0.01, 200 full-batch epochs. Its ERM gives 81.5% test accuracy here (mean of seeds 0-2:
80.9, 81.3, 82.2), Kipf & Welling's published figure. Manifold MixupE mixes at the hidden layer,
after the first propagation. Full-batch: one device, pairing across all training nodes.

Why not input Mixup: a mixed training node keeps node i's neighbours while its label leans to
node j, and on Cora (a 16-unit GCN without dropout) that took test accuracy from 0.81 (ERM) to
0.56.

    python train.py --config=configs/cora_gcn.py --config.dataset=planetoid:cora:/path/to/planetoid
"""

from mixupe_jax.models.registry import model_config
from mixupe_jax.train.defaults import default_config


def get_config():
  config = default_config()
  config.name = "cora_gcn"
  config.dataset = "planetoid:cora:../shared/data/planetoid"  # 140 / 500 / 1,000 nodes.
  config.model = model_config("gcn", hidden_sizes=(16,), propagate_output=True, dropout_rate=0.5)
  config.graph_row_normalize = True
  config.method = "manifold_mixupe"
  config.manifold_layers = (1,)
  config.num_epochs = 200  # One full-batch step per epoch.
  config.optimizer = "adam"
  config.learning_rate = 0.01
  config.weight_decay = 5e-4
  config.weight_decay_scope = "first_layer"
  config.schedule = "constant"
  config.log_every_steps = 10
  config.eval_every_epochs = 10
  config.checkpoint_every_steps = 100
  return config
