"""The run directory as Ray trials reach it: an actor on the driver's node writes what trials hand it as bytes,
so trials on any node of a cluster need no shared disk, and the driver's side alone writes the run directory."""

from __future__ import annotations

from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ._rundir import RunDir


class _RunDirWriter:
    """The actor: `RunDir`'s trial files, on the driver's node."""

    def __init__(self, path: str) -> None:
        self.run_dir = RunDir(path)

    def write_weights(self, trial: int, data: bytes) -> None:
        self.run_dir.write_weights(trial, data)

    def save_checkpoint(self, trial: int, data: bytes) -> None:
        self.run_dir.save_checkpoint(trial, data)

    def load_checkpoint(self, trial: int) -> bytes | None:
        return self.run_dir.load_checkpoint(trial)


class DriverFiles:
    """A trial's `TrialFiles` on a Ray worker. Each call waits for the actor, so a write is on the driver's disk
    before the trial reports on (a rung point the scheduler stops the trial at finds its checkpoint saved)."""

    def __init__(self, writer: ray.actor.ActorHandle, compile_cache: Path) -> None:
        self.writer, self.compile_cache = writer, compile_cache

    @classmethod
    def start(cls, run_dir: RunDir) -> DriverFiles:
        """Start the writer on this (the driver's) node; it takes no CPU from the trials. Each call replaces a
        whole file, so a writer that died is started again and the call retried."""
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        actor = ray.remote(num_cpus=0, scheduling_strategy=here, max_restarts=-1, max_task_retries=-1)(_RunDirWriter)
        return cls(actor.remote(str(run_dir.path)), run_dir.compile_cache)

    def stop(self) -> None:
        ray.kill(self.writer)

    def write_weights(self, trial: int, data: bytes) -> None:
        ray.get(self.writer.write_weights.remote(trial, data))

    def save_checkpoint(self, trial: int, data: bytes) -> None:
        ray.get(self.writer.save_checkpoint.remote(trial, data))

    def load_checkpoint(self, trial: int) -> bytes | None:
        return ray.get(self.writer.load_checkpoint.remote(trial))
