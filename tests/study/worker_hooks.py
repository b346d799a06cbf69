"""A plugin for tests of the study's workers. In a trial's process (any but ARCHSEARCH_TEST_DRIVER_PID's), once
ARCHSEARCH_TEST_LOG names a file (outside the run directory):

- opening, making, renaming or removing anything under ARCHSEARCH_TEST_RUN_DIR raises, and the path is logged as
  a `violation` line: a study finds its files in the run directory only if the driver's side wrote them;
- each proxy run logs a line `run PID NODE_ID DIGEST THREAD` (NODE_ID: the Ray node's; THREAD: the thread's ident);
- with ARCHSEARCH_TEST_KILL (a marker file's path), the study's first proxy run SIGKILLs its own process right
  after its first evaluation is reported (the marker says that it happened).

List it last among the plugins: it wraps the trainer the trials see at its import.
"""

import os
import signal
import sys
import threading

from archsearch.study import _trial

LOG = os.environ.get("ARCHSEARCH_TEST_LOG")
RUN = os.path.abspath(os.environ.get("ARCHSEARCH_TEST_RUN_DIR", "/nonexistent"))
KILL = os.environ.get("ARCHSEARCH_TEST_KILL")
WATCHED = {"open", "os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.listdir", "os.scandir", "shutil.rmtree"}


def log(line: str) -> None:
    with open(LOG, "a") as f:
        f.write(line + "\n")


def under_run_dir(path) -> bool:
    if not isinstance(path, str | bytes | os.PathLike):
        return False  # a file descriptor
    full = os.path.abspath(os.fsdecode(path))
    return full == RUN or full.startswith(RUN + os.sep)


def guard(event: str, args: tuple) -> None:
    if event in WATCHED:
        for path in args[:2] if event == "os.rename" else args[:1]:
            if under_run_dir(path):
                log(f"violation {event} {os.fsdecode(path)}")
                raise PermissionError(f"a trial's process touched the run directory: {event} {os.fsdecode(path)}")


def first_in_study(marker: str) -> bool:
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def hooked(run_proxy):
    def run(arch, settings, report=None, *args, **kwargs):
        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
        log(f"run {os.getpid()} {node} {arch.digest} {threading.get_ident()}")
        if KILL and report is not None and first_in_study(KILL):
            original = report

            def report(point):
                original(point)
                os.kill(os.getpid(), signal.SIGKILL)

        return run_proxy(arch, settings, report, *args, **kwargs)

    return run


if LOG and str(os.getpid()) != os.environ.get("ARCHSEARCH_TEST_DRIVER_PID"):
    _trial.run_proxy = hooked(_trial.run_proxy)
    sys.addaudithook(guard)
