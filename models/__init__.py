"""Pure-PyTorch generative families behind one interface (see models/base.py)."""

from genzoo.models import ddpm, gan, pixelcnn, realnvp, vae  # noqa: F401  (registers the families)
from genzoo.models.base import (
    REGISTRY,
    DataSpec,
    Decoder,
    Encoder,
    ExactLikelihood,
    GenerativeModel,
    LikelihoodBound,
    StepOutput,
    build,
    capabilities,
    families_with,
    get_family,
    likelihood_estimator,
    load,
    save,
)

FAMILIES = tuple(REGISTRY)

__all__ = [
    "FAMILIES",
    "REGISTRY",
    "DataSpec",
    "Decoder",
    "Encoder",
    "ExactLikelihood",
    "GenerativeModel",
    "LikelihoodBound",
    "StepOutput",
    "build",
    "capabilities",
    "families_with",
    "get_family",
    "likelihood_estimator",
    "load",
    "save",
]
