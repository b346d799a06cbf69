"""Host cost of the synthetic tasks' batches: milliseconds to draw one training batch of each task at its default
sizes, on one CPU thread. The proxy draws each batch on the host between GPU steps, so a task whose batch takes
longer than a step caps its tokens/s whatever the GPU.

    python benchmarks/task_batches.py [--batch 128] [--repeats 20]
"""

from __future__ import annotations

import argparse
import time

import torch

from archsearch.proxy import ProxySettings
from archsearch.proxy.suite import suite_specs
from archsearch.proxy.tasks import TASKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, batch {args.batch}, one thread, median of {args.repeats} draws")
    print(f"{'task':20s} {'seq':>5s} {'ms/batch':>9s} {'M tokens/s':>11s}")
    for name in [s.name for s in suite_specs("all")]:
        spec = ProxySettings(task=name, batch_size=args.batch).task_spec()
        g = torch.Generator().manual_seed(0)
        TASKS[name](spec, args.batch, g)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            TASKS[name](spec, args.batch, g)
            times.append(time.perf_counter() - start)
        ms = sorted(times)[len(times) // 2] * 1e3
        print(f"{name:20s} {spec.seq_len:5d} {ms:9.2f} {args.batch * spec.seq_len / ms / 1e3:11.2f}")


if __name__ == "__main__":
    main()
