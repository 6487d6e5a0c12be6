"""Pure functions on tensors/arrays for evaluating generative models. No I/O."""

from metrics.likelihood import bits_per_dim, uniform_bits_per_dim

__all__ = ["bits_per_dim", "uniform_bits_per_dim"]
