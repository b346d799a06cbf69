"""Synthetic proxies that separate the mixers: Zoology's multi-query associative recall, MAD's six tasks (in-context
recall plain, noisy and fuzzy; selective copying; compression; memorisation) and induction.

Each task draws batches (x [B, T], y [B, T]) whose targets are -1 except where an answer is scored; accuracy is the
share of scored positions predicted exactly. `TASKS` maps a name to its `Task` (call it to draw a batch); a
`TaskSpec` holds a task's settings, defaults filled in, and raises `TaskError` naming the setting it cannot use.
docs/synthetic-tasks.md says where each task follows or leaves Zoology and MAD.
"""

from . import _copying, _memorization, _recall  # noqa: F401  (each registers its tasks)
from ._copying import compression, selective_copy
from ._memorization import kv_map, memorization
from ._recall import fuzzy_recall, in_context_recall, induction, mqar
from ._spec import TASKS, Batch, Task, TaskError, TaskSpec, accuracy, distinct, register

__all__ = [
    "TASKS", "Batch", "Task", "TaskError", "TaskSpec", "accuracy", "compression", "distinct", "fuzzy_recall", "in_context_recall",
    "induction", "kv_map", "memorization", "mqar", "register", "selective_copy",
]
