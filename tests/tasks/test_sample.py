"""Sampling a trained model by class (tasks/sample.py)."""

import pytest
import torch

from genzoo import models
from genzoo.models import DataSpec
from genzoo.tasks.sample import resolve_class


def test_a_class_left_out_of_training_is_drawn_when_asked_with_a_warning(caplog, tiny):
    """exclude_classes gives a class no prior mass (never drawn unasked); asked for by index
    or name, it is drawn, with a warning that the weights never saw one."""
    model = models.build("vae", DataSpec(1, 8, 8, 17, 3), tiny["vae"])
    model.log_class_prior.copy_(torch.tensor([0.0, float("-inf"), 0.0]).log_softmax(0))
    names = ["cat", "dog", "owl"]
    with caplog.at_level("WARNING", "genzoo.sample"):
        assert resolve_class(model, "0", None) == 0 and resolve_class(model, "owl", names) == 2
        assert not caplog.messages
        assert resolve_class(model, 1, None) == 1 and resolve_class(model, "dog", names) == 1
    assert caplog.messages == [
        "--class 1: left out of this model's training (exclude_classes): its images come from weights "
        "that never saw one",
        "--class dog: left out of this model's training (exclude_classes): its images come from weights "
        "that never saw one",
    ]
    with pytest.raises(ValueError, match=r"--class 3: out of range \[0, 3\)"):
        resolve_class(model, 3, None)
