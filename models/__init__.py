"""Pure-PyTorch generative families behind one interface (see models/base.py)."""

import importlib
import pkgutil

from genzoo.models.base import (
    REGISTRY,
    SHARED_MODULES,
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

# every module here but these holds a family (``@register``): importing it registers the family,
# so adding one is its file and its params block; this file, which every stage's code hash
# reads, does not change (listing the families here made each addition retrain the others)
NOT_FAMILIES = SHARED_MODULES
for _module in pkgutil.iter_modules(__path__):  # sorted by name: the registry's order
    if _module.name not in NOT_FAMILIES and not _module.name.startswith("_"):
        try:
            importlib.import_module(f"{__name__}.{_module.name}")
        except Exception as e:  # a copy of a family (vae_old.py: "registered twice"), a scratch file
            raise ImportError(
                f"models/{_module.name}.py: {e} (every module of models/ but "
                f"{', '.join(sorted(NOT_FAMILIES))} is imported as a family: move other files out of models/)"
            ) from e

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
