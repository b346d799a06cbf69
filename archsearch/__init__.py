"""archsearch: search hybrid language-model architectures (DeltaNet, attention, SSMs, Hyena, GAU, MoE, ...)."""

from .architecture import Architecture, BlockSpec, Cost, LayerSpec
from .errors import ArchsearchError, ConfigError, ConstraintViolation, SpaceError
from .loading import load_space, space_from_yaml
from .model import HybridLM, build_model
from .sampling import Infeasible, OptunaSampler, RandomSampler, enumerate_space, sample, space_size
from .space import SearchSpace

__all__ = [
    "Architecture",
    "ArchsearchError",
    "BlockSpec",
    "ConfigError",
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
    "space_from_yaml",
    "space_size",
]
