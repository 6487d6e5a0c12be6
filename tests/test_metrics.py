import math

import torch

from genzoo.metrics.likelihood import bits_per_dim, uniform_bits_per_dim


def test_uniform_distribution_scores_log2_levels():
    dims, levels = 64, 17
    nats = torch.full((5,), -dims * math.log(levels))  # log p(x) of the uniform distribution
    assert abs(bits_per_dim(nats, dims) - uniform_bits_per_dim(levels)) < 1e-6
    assert abs(uniform_bits_per_dim(17) - 4.0875) < 1e-4


def test_bits_per_dim_of_a_point_mass_is_zero_and_sign_is_right():
    assert bits_per_dim(0.0, 10) == 0.0
    assert bits_per_dim(-10 * math.log(2), 10) == 1.0
