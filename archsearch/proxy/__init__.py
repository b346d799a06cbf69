"""Proxies: turn one architecture into numbers (short-budget language modelling, synthetic recall, throughput)."""

from .data import BUILTIN, Corpus, DataError, DataSpec, load_corpus
from .tasks import TASKS, TaskSpec
from .train import COMPILE_CACHE_ENV, Checkpoint, Metrics, ProxySettings, run_proxy

__all__ = ["BUILTIN", "COMPILE_CACHE_ENV", "TASKS", "Checkpoint", "Corpus", "DataError", "DataSpec", "Metrics", "ProxySettings", "TaskSpec",
           "load_corpus", "run_proxy"]
