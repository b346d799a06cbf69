"""Fuzzing the config readers: mutated example spaces, studies and architectures load, or fail in one line.

Each example takes an example file, applies a few mutations (line and token deletions, duplications and swaps,
indentation changes, values replaced by hostile ones: huge numbers, negatives, nan, deep nesting, alias bombs,
control characters, bad UTF-8, wrong types, unknown keys, unicode), writes it to a temporary file and runs, in this
process, `archsearch check FILE` (a space), `Study.load(FILE)` (a study, its space referenced or inline) or
`Architecture.load(FILE)`. The property: it exits 0 / loads, or it ends with exactly one line `FILE:LINE: ...`
(exit code 2 / an ArchsearchError), within SECONDS of CPU time and MEMORY more address space; and a mutation that makes
a file invalid by construction (a control character, a nan, an unknown top-level key...) is never accepted.

CI runs FUZZ_EXAMPLES examples, derandomized. On demand:
    ARCHSEARCH_FUZZ_EXAMPLES=2000 ARCHSEARCH_FUZZ_FINDINGS=/tmp/findings pytest tests/test_fuzz.py -s
draws 2,000 fresh examples, keeps going past failures, saves each failing input under the findings folder (one file
per failure class and message) and prints the counts.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import resource
import signal
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from archsearch.architecture import Architecture
from archsearch.cli import main
from archsearch.errors import ArchsearchError
from archsearch.loading import load_space
from archsearch.sampling import RandomSampler, sample
from archsearch.study import Study

ROOT = Path(__file__).resolve().parent.parent
FUZZ_EXAMPLES = int(os.environ.get("ARCHSEARCH_FUZZ_EXAMPLES", "200"))
FINDINGS = os.environ.get("ARCHSEARCH_FUZZ_FINDINGS")
SECONDS = float(os.environ.get("ARCHSEARCH_FUZZ_SECONDS", "5"))
MEMORY = 1 << 30  # address space one load may add

# Values that the YAML reader itself must refuse, wherever they stand.
INVALID = [
    ".nan", ".inf", "-.inf", "1e999", "-1.0e400", "!!float nan", str(10**20), str(-(10**30)), "9" * 5000, "0x" + "f" * 40,
    "[" * 80 + "]" * 80, "{a: " * 70 + "1" + "}" * 70, "&r [1, *r]", "*undefined", '"\\x1b[31mred"', '"\\x00"', '"\\u202e"',
    "!!python/object/apply:os.system [echo]", "!!binary aGk=", "!!set {a, b}", "!custom 1",
    "[&l0 [x,x,x,x,x,x,x,x,x,x], &l1 [" + ",".join(["*l0"] * 10) + "], &l2 [" + ",".join(["*l1"] * 10) + "], &l3 ["
    + ",".join(["*l2"] * 10) + "], &l4 [" + ",".join(["*l3"] * 10) + "], [" + ",".join(["*l4"] * 10) + "]]",
]
# Values the reader passes on: the space, study and architecture parsers must judge them.
HOSTILE = [
    "100000", "1000000000000", str(2**53), "-1", "0", "-0", "1", "3", "7", "1.5", "1e308", "-1e308", "5e-324", "0.0",
    "true", "false", "null", "~", "''", '""', "[]", "{}", "[1, 2]", "[[1]]", "{a: 1}", "yes", "no",
    "2001-13-45", "1:30", "0o17", "017", "1_000", "=", "<<", "'<<'", "-", "?", "x", "ü日本語", "🙂", "\t1", "'a''b'",
    "{choice: []}", "{choice: [1, 1]}", "{choice: [64, 128]}", "{choice: [deltanet, attn]}", "{choice: [0, -1]}",
    "{int: [1, 100000]}", "{int: [1, 1000000000000]}", "{int: [1000000000000, 1]}", "{int: [1, 8], step: 0}",
    "{int: [1, 2], log: true, step: 2}", "{float: [0, 1e308], log: true}", "{float: [1, 1]}", "{float: [-1e308, 1e308]}",
    "{choice: [1], int: [1, 2]}", "{per_layer: true}", "{choice: [64], per_layer: yes}",
    "deltanet+glu", "deltanet+glu x 100000", "attn+glu x 0", "attn + moe x 3", "mamba+glu", "glu+glu", "none",
    "10M", "1e400M", "16MiB", "-5M", "nanM", "infM", "1e308G", "0.5", "lots", "cuda", "cuda:7", "cpu", "auto", "mqar",
    "builtin", "/nonexistent/data", "../../../etc/passwd", "nsga2", "grid", "tpe", "random", "min", "max",
    "{cpu: 1000000}", "{gpu: -1}", "{cpu: 1, tpu: 1}", "{grace: 0, reduction_factor: 1}", "[deltanet+glu, attn+glu]",
    "[{repeat: 1000000000000, layers: [attn+glu]}]", "{repeat: 3, layers: [attn+glu]}", "[bits_per_byte: min]",
    "[accuracy: max]", "{rungs: [1M, 4M], keep: 0.33}", "[30K, 10K]", "[params: up]", "{max: 10K}", "{min: 1G, max: 1K}", "[0, 1, -1]", "[100000]", "{positions: 100000}",
    "{every: 100000, mixer: attn}", "{at: [0], mixer: swa, window: 100000}",
]
# Numbers that are valid YAML and may be absurd sizes (depth, width, repeats, budgets): these find the hangs.
NUMBERS = ["0", "-1", "-100", "100000", "1000000", "1000000000000", str(2**53), "0.5", "1e308", "1e-300", "65536", "4097"]
# Keys: the schema's own (in the wrong places, twice) and unknown ones.
KEYS = [
    "name", "description", "d_model", "n_layers", "vocab_size", "tie_embeddings", "layers", "blocks", "constraints",
    "space", "proxy", "objectives", "search", "out", "plugins", "mixer", "channel", "place", "sequence", "repeat",
    "every", "offset", "at", "heads", "window", "experts", "top_k", "choice", "int", "float", "log", "step",
    "per_layer", "tokens", "seq_len", "batch_size", "lr", "device", "seed", "trials", "resources", "early_stopping", "fidelity", "rungs", "keep",
    "params", "state_bytes", "context", "data", "synthetic", "min", "max", "<<", "d_modle", "n_layer", "bogus",
    "ünïcode", "1", "2.5", "null", "true", "'quoted key'", "? complex",
]
CHARS = ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\u2028", "\u202e", "\ufeff", "\r", "\t", "{", "}", "[", "]", ":",
         ",", "-", "&", "*", "!", "|", ">", "'", '"', "%", "@", "`", "#", "?", " ", "\n", "é", "日", "🙂"]
UNKNOWN_TOP_KEYS = ["bogus", "d_modle", "n_layer", "sampler", "ünïcode_key", "plugin"]


@dataclass
class Case:
    """One fuzzed input: which base file, which mutations, the bytes written, and whether it must be refused."""

    target: str  # check, study or architecture
    base: str
    ops: list[str] = field(default_factory=list)
    data: bytes = b""
    must_fail: str = ""  # why the input is invalid by construction, if it is


def _space_with_absolute_path(study_text: str, space_file: Path) -> str:
    return re.sub(r"(?m)^space:.*$", f"space: {space_file}", study_text)


def _inline_space(study_text: str, space_file: Path) -> str:
    inline = "\n".join("  " + line for line in space_file.read_text().splitlines() if line.strip())
    return re.sub(r"(?m)^space:.*$", lambda _: "space:\n" + inline, study_text)


def _bases() -> dict[str, list[tuple[str, str]]]:
    spaces = {p.name: p.read_text() for p in sorted((ROOT / "search_spaces").glob("*.yaml"))}
    studies = []
    for p in sorted((ROOT / "studies").glob("*.yaml")):
        text = p.read_text()
        space_ref = re.search(r"(?m)^space:\s*(\S+)", text)
        if space_ref is None:  # the space is inline already
            studies.append((p.name, text))
            continue
        space_file = (p.parent / space_ref.group(1)).resolve()
        studies += [(p.name, _space_with_absolute_path(text, space_file)), (p.name + " (space inline)", _inline_space(text, space_file))]
    archs = []
    for name in ("quickstart.yaml", "open.yaml"):
        space = load_space(str(ROOT / "search_spaces" / name))
        archs.append((f"an architecture of {name}", sample(space, RandomSampler(1)).to_yaml()))
    return {"check": list(spaces.items()), "study": studies, "architecture": archs}


BASES = _bases()
_KEY_LINE = re.compile(r"^(\s*(?:- )?[^\s#:\-][^:#]*:)(\s.*)?$")
_TOKEN = re.compile(r"[A-Za-z0-9_.+\-]+|[^\sA-Za-z0-9_.+\-]")
# The examples' own words and numbers: swapping them about keeps many files valid, so the checks past parsing run too.
PLAUSIBLE = sorted({t for bases in BASES.values() for _, text in bases for line in text.splitlines()
                    if not line.lstrip().startswith("#") for t in re.findall(r"[A-Za-z0-9_.+\-]+", line)})


@st.composite
def cases(draw, target: str) -> Case:
    base, text = draw(st.sampled_from(BASES[target]))
    case = Case(target, base)
    lines = text.splitlines()
    pick = lambda: draw(st.integers(0, max(len(lines) - 1, 0)))  # noqa: E731
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 2, 3, 4]))):
        # Hypothesis leans to the first option and the first line: the ops that reach past the parser come first, and
        # they pick among the lines that hold data (the examples open with a comment)
        op = draw(st.sampled_from(["number", "value", "token value", "delete line", "duplicate line", "swap lines", "indent",
                                   "key", "insert line", "token delete", "token duplicate", "char", "truncate"]))
        if not lines:
            break
        data_lines = [k for k, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]
        if op == "number":
            data_lines = [k for k in data_lines if re.search(r"\d", lines[k].split("#")[0])]
        i = draw(st.sampled_from(data_lines)) if data_lines and op not in ("char", "truncate") else pick()
        if op == "delete line":
            del lines[i]
        elif op == "duplicate line":
            lines.insert(i, lines[i])
        elif op == "swap lines":
            j = pick()
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "indent":
            lines[i] = draw(st.sampled_from(["  ", "    ", " ", "\t"])) + lines[i] if draw(st.booleans()) else lines[i][2:]
        elif op in ("value", "key", "insert line"):
            value = draw(st.sampled_from(HOSTILE) | st.sampled_from(PLAUSIBLE))
            m = _KEY_LINE.match(lines[i])
            if op == "value" and m:
                lines[i] = f"{m.group(1)} {value}"
            elif op == "key" and m:
                lines[i] = re.sub(r"[^\s-][^:#]*:", lambda _: draw(st.sampled_from(KEYS)) + ":", lines[i], count=1)
            else:
                indent = re.match(r"\s*", lines[i]).group()
                lines.insert(i, f"{indent}{draw(st.sampled_from(KEYS))}: {value}")
        elif op.startswith("token"):
            line = lines[i]
            tokens = list(_TOKEN.finditer(line))
            if tokens:
                t = tokens[draw(st.integers(0, len(tokens) - 1))]
                new = {"token delete": "", "token duplicate": t.group() * 2}.get(op) or draw(st.sampled_from(HOSTILE) | st.sampled_from(PLAUSIBLE))
                lines[i] = line[: t.start()] + new + line[t.end():]
        elif op == "number":
            numbers = list(re.finditer(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", lines[i].split("#")[0]))
            if numbers:
                n = numbers[draw(st.integers(0, len(numbers) - 1))]
                lines[i] = lines[i][: n.start()] + draw(st.sampled_from(NUMBERS)) + lines[i][n.end():]
        elif op == "char":
            line = lines[i]
            at = draw(st.integers(0, len(line)))
            lines[i] = line[:at] + draw(st.sampled_from(CHARS)) + line[at:]
        else:
            del lines[i:]
        case.ops.append(f"{op} @line {i + 1}")
    text = "\n".join(lines) + "\n"
    data = text.encode("utf-8", "surrogatepass")
    # at most one mutation that makes the file invalid whatever else happened, applied last so nothing undoes it
    final = draw(st.sampled_from(["none"] * 6 + ["reader value", "control char", "bad utf-8", "unknown top key", "huge file"]))
    if final == "reader value":
        keyed = [k for k, line in enumerate(lines) if _KEY_LINE.match(line) and not line.lstrip().startswith("#")]
        if keyed:
            k = draw(st.sampled_from(keyed))
            value = draw(st.sampled_from(INVALID))
            prefix = _KEY_LINE.match(lines[k]).group(1)
            lines[k] = f"{prefix} {value}"
            data = ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")
            if _is_a_value(data, k, len(prefix) + 1):
                case.must_fail = f"value {value[:40]!r} at line {k + 1}"
    elif final == "control char":
        ch = draw(st.sampled_from(["\x00", "\x01", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\x9f", "\u2028", "\u2029", "\u202e", "\ufffe"]))
        at = draw(st.integers(1, max(len(text) - 1, 1)))  # a byte-order mark at 0 would be fine
        data = (text[:at] + ch + text[at:]).encode("utf-8", "surrogatepass")
        case.must_fail = f"control character U+{ord(ch):04X} at offset {at}"
    elif final == "bad utf-8":
        at = draw(st.integers(0, len(data)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xe9", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf"]))
        data = data[:at] + bad + data[at:]
        case.must_fail = f"bytes {bad!r} at offset {at}"
    elif final == "unknown top key":
        key = draw(st.sampled_from(UNKNOWN_TOP_KEYS))
        data += f"{key}: 1\n".encode()
        case.must_fail = f"unknown top-level key {key}"
    elif final == "huge file":
        data += b"# padding\n" * ((1 << 20) // 10 + 1)
        case.must_fail = "over 1 MiB"
    if final != "none" and case.must_fail:
        case.ops.append(f"then {final}")
    case.data = data
    return case


def _is_a_value(data: bytes, line: int, column: int) -> bool:
    """Whether a node starts at (line, column) (0-based), or the file is no YAML at all: then the value is read, or the
    file refused. A value written inside a quoted or block string of an earlier mutation is only text."""
    try:
        for event in yaml.parse(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            mark = event.start_mark
            if isinstance(event, yaml.NodeEvent) and (mark.line, mark.column) == (line, column):
                return True
            if mark.line > line:
                return False
    except yaml.YAMLError:
        return True
    return False


class _TimeUp(BaseException):  # a BaseException, so that no `except Exception` in the code under test swallows it
    pass


@contextlib.contextmanager
def _bounded():
    """Raise _TimeUp after SECONDS of CPU time (what the code asked for, however busy the machine) or 12 x SECONDS of
    wall-clock time (a wait that burns no CPU), and let the process map at most MEMORY more bytes meanwhile."""
    def time_up(*_):
        raise _TimeUp

    previous = {sig: signal.signal(sig, time_up) for sig in (signal.SIGPROF, signal.SIGALRM)}
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    mapped = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    limit = mapped + MEMORY if hard == resource.RLIM_INFINITY else min(mapped + MEMORY, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.setitimer(signal.ITIMER_PROF, SECONDS)
    signal.setitimer(signal.ITIMER_REAL, 12 * SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# Sizes no space, study or architecture has a use for. Issue 13 asks the parsers to refuse such sizes with one line
# (FILE:LINE: KEY) before work is done; these are the caps proposed for them, and an accepted file beyond one is an
# accepted invalid input. `d_model: 10**15` or `window: 2**53` run fast and say nothing, so no time bound finds them.
CAPS = {"d_model": 65_536, "layers": 1_024, "vocab_size": 1 << 21, "context": 1 << 20,
        "block parameter": 1 << 20}  # integer ones: heads, window, experts, states, ... (a rope_base is a float)


def _beyond_caps(target: str, path: Path) -> str:
    """What an accepted file holds beyond CAPS, or "" (read again: `check` prints, it does not return the space)."""
    if target == "architecture":
        return _architecture_beyond_caps(Architecture.load(str(path)))
    study = Study.load(str(path)) if target == "study" else None
    space = study.space if study else load_space(str(path))
    constraints = [space.constraints, *([study.constraints] if study else [])]
    for bound in (b for c in constraints for b in c.bounds):
        if not all(math.isfinite(x) for x in (bound.low, bound.high) if x is not None):
            return f"constraint {bound.metric} has a bound that is not finite"
    contexts = [c.context for c in constraints] + ([study.proxy.seq_len] if study else [])
    if max(contexts) > CAPS["context"]:
        return f"a context or seq_len of {max(contexts)} (cap {CAPS['context']})"
    if space.depth_bounds()[1] > CAPS["layers"]:
        return f"up to {space.depth_bounds()[1]} layers (cap {CAPS['layers']})"
    try:
        arch = sample(space, RandomSampler(0))
    except ArchsearchError:
        return ""
    return _architecture_beyond_caps(arch)


def _architecture_beyond_caps(arch: Architecture) -> str:
    for name, value, cap in (("d_model", arch.d_model, CAPS["d_model"]), ("layers", len(arch.layers), CAPS["layers"]),
                             ("vocab_size", arch.vocab_size, CAPS["vocab_size"])):
        if value > cap:
            return f"{name} {value} (cap {cap})"
    for i, layer in enumerate(arch.to_dict()["layers"]):
        for role, block in layer.items():
            for key, value in (block.items() if isinstance(block, dict) else ()):
                if isinstance(value, int) and not isinstance(value, bool) and abs(value) > CAPS["block parameter"]:
                    return f"layers[{i}].{role}.{key} = {value} (cap {CAPS['block parameter']})"
    return ""


def _one_line(message: str, files: list[Path]) -> bool:
    """`FILE:LINE: ...` (the CLI puts `error: ` in front) naming one of the files written, on one line."""
    names = "|".join(re.escape(str(f)) for f in files)
    return bool(re.fullmatch(rf"(?:error: )?(?:{names}):\d+: .+", message))


def run_case(case: Case, folder: Path) -> tuple[str, str]:
    """(outcome, detail): ok, refused, accepted-invalid, traceback, hang, memory or bad-message."""
    path = folder / {"check": "space.yaml", "study": "study.yaml", "architecture": "arch.yaml"}[case.target]
    path.write_bytes(case.data)
    files = [path, *((ROOT / "search_spaces").glob("*.yaml"))]  # a study's error may name the space it references
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _bounded():
            if case.target == "check":
                rc = main(["check", str(path), "--samples", "2"])
                message = err.getvalue().removesuffix("\n")
            else:
                rc, message = 0, ""
                try:
                    (Study.load if case.target == "study" else Architecture.load)(str(path))
                except ArchsearchError as e:
                    rc, message = 2, str(e)
        if rc == 0 and not case.must_fail:
            with _bounded():
                beyond = _beyond_caps(case.target, path)
            if beyond:
                return "accepted-invalid", f"accepted, but {beyond}"
    except _TimeUp as e:
        return "hang", f"no answer within {SECONDS:g} s of CPU time ({time.perf_counter() - start:.1f} s wall-clock; at {_where(e)})"
    except MemoryError as e:
        return "memory", f"MemoryError: over {MEMORY >> 20} MiB more address space (raised at {_where(e)})"
    except BaseException as e:  # noqa: BLE001 -- every escape is what this test looks for
        return "traceback", f"{type(e).__name__}: {str(e)[:300]} (raised at {_where(e)})"
    if rc == 0:
        return ("accepted-invalid", f"accepted, but {case.must_fail}") if case.must_fail else ("ok", "")
    if rc == 2 and _one_line(message, files):
        return "refused", message
    return "bad-message", f"exit code {rc}, error output {message[:300]!r}"


def _where(e: BaseException) -> str:
    """The innermost archsearch frame of a traceback (else the innermost frame)."""
    frames = traceback.extract_tb(e.__traceback__)
    frames = [f for f in frames if "/archsearch/" in f.filename] or frames
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}" if frames else "?"


def _save(kind: str, detail: str, case: Case, folder: Path) -> None:
    """One reproducer per failure class and message shape (numbers stripped), named after both."""
    shape = re.sub(r"\d+|/\S+", "N", detail)
    digest = hashlib.sha1(f"{case.target}{shape}".encode()).hexdigest()[:8]
    stem = f"{kind}-{case.target}-{re.sub(r'[^a-z]+', '_', detail.split(':')[0].lower())[:40]}-{digest}"
    target = folder / f"{stem}.yaml"
    if not target.exists() or len(case.data) < target.stat().st_size:  # keep the smallest reproducer
        target.write_bytes(case.data)
        (folder / f"{stem}.txt").write_text(f"{kind}: {detail}\ntarget: {case.target}\nbase: {case.base}\nops: {case.ops}\n")


SHARE = {"check": 0.5, "study": 0.3, "architecture": 0.2}  # of the examples; spaces have the most to check
SETTINGS = settings(
    deadline=None,  # the bound is SECONDS of CPU time (_bounded); Hypothesis' wall-clock deadline is flaky on 2 cores
    derandomize=FINDINGS is None,  # CI draws the same examples every run
    database=None,
    phases=[Phase.generate] if FINDINGS else [Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@pytest.mark.parametrize("target", sorted(SHARE))
def test_mutated_configs_load_or_fail_in_one_line_within_bounds(target, tmp_path):
    found = Path(FINDINGS) if FINDINGS else None
    if found is not None:
        found.mkdir(parents=True, exist_ok=True)
    tally: Counter = Counter()

    @settings(SETTINGS, max_examples=max(1, round(FUZZ_EXAMPLES * SHARE[target])))
    @given(case=cases(target))
    def fuzz(case: Case) -> None:
        kind, detail = run_case(case, tmp_path)
        tally[kind] += 1
        if kind in ("ok", "refused"):
            return
        if found is not None:
            _save(kind, detail, case, found)
            return
        pytest.fail(f"{kind}: {case.target} of {case.base} after {case.ops}: {detail}\ninput: {case.data[:2000]!r}")

    fuzz()
    print(f"\n{target}: fuzzed inputs: {sum(tally.values())}; " + ", ".join(f"{k}: {v}" for k, v in sorted(tally.items())))
    if found is not None:
        (found / f"summary-{target}.json").write_text(json.dumps({"inputs": sum(tally.values()), **tally}, indent=1))
        bad = {k: v for k, v in tally.items() if k not in ("ok", "refused")}
        assert not bad, f"failures saved in {found}: {bad}"


@pytest.mark.parametrize(("target", "base"), [(t, name) for t, bases in sorted(BASES.items()) for name, _ in bases])
def test_every_unmutated_base_is_accepted(target, base, tmp_path):
    text = dict(BASES[target])[base]
    assert run_case(Case(target, base, data=text.encode()), tmp_path) == ("ok", "")
