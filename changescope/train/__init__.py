"""Training in-domain encoders: self-supervised change-aware contrastive learning (MoCo v2 / SeCo / CACo).

Modules:

- :mod:`~changescope.train.moco`: projection heads, the momentum encoder with its queue, and the InfoNCE loss;
- :mod:`~changescope.train.gating`: the per-location change estimate and its Gaussian-mixture gating (CACo);
- :mod:`~changescope.train.data`: location crops of the user's series and the temporal view sampling per mode;
- :mod:`~changescope.train.augment`: multispectral-safe augmentations;
- :mod:`~changescope.train.geosample`: a geographic sampler for new pretraining sets;
- :mod:`~changescope.train.config` and :mod:`~changescope.train.ssl`: the YAML configuration and the training loop
  (checkpoints every epoch, resume).

Importing this package does not import torch-heavy submodules; import them directly.
"""
