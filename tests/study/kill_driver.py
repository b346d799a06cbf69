"""Run `archsearch run` in this process and SIGKILL its whole process group (the driver and its Ray) at a point.

    python kill_driver.py POINT K -- archsearch run arguments

POINT: `row` (right after the K-th trial row is stored, before Optuna is told), `commit` (right after the K-th
commit of a finished state), `table` (right after the K-th trials table write; the first is the one at start) or
`seconds` (K seconds in).
"""

import os
import signal
import sys
import threading


def die():
    os.killpg(0, signal.SIGKILL)


def kill_after(owner, name, k, counts):
    original, seen = getattr(owner, name), [0]

    def patched(*args, **kwargs):
        out = original(*args, **kwargs)
        if counts(*args, **kwargs):
            seen[0] += 1
            if seen[0] == k:
                die()
        return out

    setattr(owner, name, patched)


point, k = sys.argv[1], float(sys.argv[2])
if point == "seconds":
    threading.Timer(k, die).start()
else:
    import optuna

    from archsearch.study import RunDir

    if point == "row":
        kill_after(optuna.storages.RDBStorage, "set_trial_user_attr", int(k), lambda self, trial_id, key, value: key == "row")
    elif point == "commit":
        kill_after(optuna.storages.RDBStorage, "set_trial_state_values", int(k), lambda self, trial_id, state, values=None: state.is_finished())
    elif point == "table":
        kill_after(RunDir, "write_trials", int(k), lambda self, rows: True)
    else:
        sys.exit(f"unknown point {point}")

from archsearch.cli import main  # noqa: E402

sys.exit(main(sys.argv[sys.argv.index("--") + 1:]))
