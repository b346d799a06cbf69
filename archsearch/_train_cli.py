"""`archsearch train`: one proxy run with a progress bar, then its metrics."""

from __future__ import annotations

import argparse
import json

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .architecture import Architecture, human, human_bytes
from .errors import SpaceError
from .proxy import DataSpec, ProxySettings, evaluate
from .sampling import sample
from .space import SearchSpace


def run(args: argparse.Namespace) -> int:
    if args.sample is not None:
        arch = sample(SearchSpace.load(args.arch), args.sample)
    else:
        try:
            arch = Architecture.load(args.arch)
        except SpaceError as e:
            if _is_space(args.arch):
                raise SpaceError(args.arch, None, "", "this is a search space, not an architecture; add --sample SEED to train one of its architectures") from None
            raise e from None
    settings = ProxySettings(
        task=args.task, data=DataSpec(source=args.data, tokenizer=args.tokenizer), tokens=args.tokens,
        seconds=args.seconds, seq_len=args.seq_len, batch_size=args.batch_size, lr=args.lr, device=args.device,
        compile=args.compile, inference=args.inference, seed=args.seed,
    )
    print(f"architecture {arch.summary()} ({arch.digest})")
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f} tokens"),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=False) as bar:
        job = bar.add_task("training", total=settings.tokens, status="")
        last_eval = {}

        def on_step(tokens: int, loss: float) -> None:
            bar.update(job, completed=tokens, status=f"loss {loss:.3f}" + (f"  val {last_eval['val_loss']:.3f}" if last_eval else ""))

        metrics = evaluate(arch, settings, report=last_eval.update, on_step=on_step)
    if metrics.status != "ok":
        print(f"status: {metrics.status}: {metrics.reason}")
    rows = [
        ("device", metrics.device),
        ("parameters", human(metrics.params or 0)),
        ("tokens trained", f"{metrics.tokens_trained:,}"),
        ("validation loss", _f(metrics.val_loss, ".4f")),
        ("perplexity", _f(metrics.perplexity, ".3f")),
        ("bits per byte", _f(metrics.bits_per_byte, ".4f")),
        ("accuracy", _f(metrics.accuracy, ".3f")),
        ("train tokens/s", _f(metrics.train_tokens_per_s, ",.0f")),
        ("prefill tokens/s", _f(metrics.prefill_tokens_per_s, ",.0f")),
        ("decode tokens/s", _f(metrics.decode_tokens_per_s, ",.0f")),
        ("peak memory", human_bytes(metrics.peak_memory_bytes) if metrics.peak_memory_bytes else "-"),
        ("wall time", f"{metrics.wall_seconds:.1f} s"),
        ("corpus", metrics.corpus_digest or "-"),
    ]
    for name, value in rows:
        if value != "-":
            print(f"  {name:<17} {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"architecture": arch.to_dict(), "digest": arch.digest, "metrics": metrics.to_dict()}, f, indent=1)
    return 0 if metrics.status == "ok" else 1


def _is_space(path: str) -> bool:
    try:
        SearchSpace.load(path)
    except SpaceError:
        return False
    return True


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)
