"""Likelihood in the units genzoo reports: bits per dimension of the discrete data."""

from __future__ import annotations

import math

import torch


def bits_per_dim(log_likelihood_nats: torch.Tensor | float, dims: int) -> float:
    """Mean log-likelihood in nats per image -> bits per dimension (lower is better)."""
    ll = torch.as_tensor(log_likelihood_nats, dtype=torch.float64).mean().item()
    return -ll / (dims * math.log(2))


def uniform_bits_per_dim(levels: int) -> float:
    """The uniform distribution over ``levels`` values: the score of knowing nothing."""
    return math.log2(levels)
