"""archsearch: search hybrid language-model architectures (DeltaNet, attention, SSMs, Hyena, GAU, MoE, ...)."""

from .architecture import Architecture, BlockSpec, Cost, LayerSpec
from .errors import ArchsearchError, ConstraintViolation, SpaceError
from .model import HybridLM, build_model
from .sampling import Infeasible, OptunaSampler, RandomSampler, enumerate_space, sample, space_size
from .space import SearchSpace, load_space

__all__ = [
    "Architecture",
    "ArchsearchError",
    "BlockSpec",
    "ConstraintViolation",
    "Cost",
    "HybridLM",
    "Infeasible",
    "LayerSpec",
    "OptunaSampler",
    "RandomSampler",
    "SearchSpace",
    "SpaceError",
    "build_model",
    "enumerate_space",
    "load_space",
    "sample",
    "space_size",
]
