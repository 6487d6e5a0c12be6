"""Pure functions on tensors/arrays for evaluating generative models. No I/O."""

from genzoo.metrics.likelihood import bits_per_dim, uniform_bits_per_dim
from genzoo.metrics.quality import (
    diversity,
    frechet_distance,
    inception_score,
    kid,
    mean_ci,
    memorization,
    prdc,
    sharpness,
)

__all__ = [
    "bits_per_dim",
    "diversity",
    "frechet_distance",
    "inception_score",
    "kid",
    "mean_ci",
    "memorization",
    "prdc",
    "sharpness",
    "uniform_bits_per_dim",
]
