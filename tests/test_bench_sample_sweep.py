"""bench/sample_sweep.py's --own-posterior: a family's draws kept by its own Bayes rule."""

import torch

from genzoo import models
from genzoo.models.base import DataSpec
from tests.conftest import TINY, load_bench

sweep = load_bench("sample_sweep")


def test_keep_takes_the_draws_that_pass_in_order_then_the_most_confident():
    labels = torch.tensor([0, 1, 0])  # wanted; three draws each, labels repeated: 0 1 0 | 0 1 0 | 0 1 0
    conf = torch.tensor([0.2, 0.95, 0.3, 0.99, 0.4, 0.1, 0.5, 0.97, 0.92])
    # label 0: draws 0 2 3 5 6 8, passing at 0.9: 3 and 8; label 1: draws 1 4 7, passing: 1 and 7
    assert sweep.keep(conf, labels, 0.9).tolist() == [3, 1, 8]
    # nothing passes at 0.999: the most confident of label 0 (0.99 at 3, then 0.92 at 8), of label 1 (0.97)
    assert sweep.keep(conf, labels, 0.999).tolist() == [3, 7, 8]
    # everything passes at 0: the first draws, as plain sampling takes them
    assert sweep.keep(conf, labels, 0.0).tolist() == [0, 1, 2]


def test_own_posterior_is_bayes_rule_on_the_models_likelihood_and_class_prior():
    spec = DataSpec(1, 8, 8, 17, 3)
    model = models.build("pixelcnn", spec, TINY["pixelcnn"]).eval()
    model.log_class_prior.copy_(torch.tensor([0.5, 0.5, 0.0]).log())  # class 2 never seen in training
    x = torch.rand(5, 1, 8, 8)
    post = sweep.own_posterior(model, x)
    with torch.inference_mode():
        lp = torch.stack([model.log_prob(x, torch.full((5,), c)) for c in range(3)], dim=1).double()
    expect = torch.softmax(lp + torch.tensor([0.5, 0.5, 0.0]).log().double(), dim=1)
    assert post.shape == (5, 3) and torch.allclose(post, expect, atol=1e-6)
    assert torch.allclose(post.sum(1), torch.ones(5, dtype=torch.float64)) and (post[:, 2] == 0).all()
