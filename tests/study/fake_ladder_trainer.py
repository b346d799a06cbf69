"""A plugin for tests: in each trial's process, the proxy trainer is replaced by a fast fake that speaks the ladder
API (a rung point at each rung below the budget, a checkpoint per rung, a run that finds one resumes from its rung
and reports that rung again).

Its figures follow from the architecture alone (a wider or deeper model learns more and trains slower, with a
digest-seeded term so that some architectures are dominated), so the study side of the ladder is tested in seconds,
independently of the real trainer and its timing. Each run appends one line to `fake_runs.txt` in the run
When FAKE_LADDER_LOG names a file (outside the run directory, which trials never write), each run appends one line
to it: the digest and the checkpoint's rung it resumed from, or "fresh".
"""

import dataclasses
import json
import math
import os
import time

from archsearch.proxy import Metrics
from archsearch.study import _trial

SECONDS_PER_RUNG = float(os.environ.get("FAKE_LADDER_SECONDS", "0.5"))


@dataclasses.dataclass
class RungMetrics(Metrics):
    rung: int | None = None  # the trainer's Metrics gains it with the ladder; declared here too, so the fake runs either way


def figures(arch, tokens: int) -> dict[str, float]:
    params = arch.d_model * arch.d_model * len(arch.layers)
    noise = int(arch.digest[:6], 16) / 0xFFFFFF  # 0..1, fixed per architecture
    bpb = 1.0 + 3e4 / params + 0.6 * noise + 2e4 / tokens
    return {"val_loss": bpb * math.log(2), "bits_per_byte": bpb, "perplexity": math.exp(bpb * math.log(2)),
            "train_tokens_per_s": 1e9 / params * (1.5 - noise)}


def fake_run_proxy(arch, settings, report=None, on_step=None, save_weights=None, *, rungs=(), checkpoint=None):
    budgets = [*rungs, settings.tokens]
    data = checkpoint.load() if checkpoint else None
    saved = json.loads(data)["rung"] if data is not None else None
    if checkpoint and os.environ.get("FAKE_LADDER_LOG"):
        with open(os.environ["FAKE_LADDER_LOG"], "a") as log:
            log.write(f"{arch.digest} {'fresh' if saved is None else saved}\n")
    for rung in range(saved or 0, len(rungs)):
        if rung != saved:  # the saved rung's point is reported again without training
            time.sleep(SECONDS_PER_RUNG)
        point = {"rung": rung, "tokens": budgets[rung], **figures(arch, budgets[rung])}
        checkpoint.save(json.dumps({"rung": rung}).encode())
        if report is not None and report(dict(point)) is False:
            return RungMetrics(tokens_trained=budgets[rung], rung=rung, **figures(arch, budgets[rung]))
    time.sleep(SECONDS_PER_RUNG)
    return RungMetrics(tokens_trained=settings.tokens, rung=len(rungs), wall_seconds=SECONDS_PER_RUNG * (len(rungs) + 1),
                       **figures(arch, settings.tokens))


_trial.run_proxy = fake_run_proxy
