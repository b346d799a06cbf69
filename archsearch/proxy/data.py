"""Token streams for proxies: the built-in corpus, text files or folders, nanoGPT .bin files, Hugging Face datasets.

Every corpus is split into train and validation deterministically and carries a content digest that is recorded
with every result, so two numbers are only compared when they come from the same text.
"""

from __future__ import annotations

import hashlib
import math
import os
import sysconfig
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..errors import ArchsearchError

BUILTIN = "builtin"
MIN_TOKENS = 4096  # below this a split cannot hold even a few proxy batches


class DataError(ArchsearchError):
    """Missing, empty, unreadable or too-small data: names the path and what was expected."""


@dataclass(frozen=True)
class DataSpec:
    """Where the text comes from and how it becomes tokens."""

    source: str = field(default=BUILTIN, metadata={"help": "builtin, a text file or folder, a train.bin/val.bin folder, or a saved HF dataset"})
    tokenizer: str | None = field(default=None, metadata={"help": "a tokenizer.json (Hugging Face tokenizers); none: bytes"})
    val_fraction: float = field(default=0.05, metadata={"help": "share of files (text) or rows (datasets) held out, chosen by a hash of their name"})
    text_field: str = field(default="text", metadata={"help": "the text column of a Hugging Face dataset"})
    bin_dtype: str = field(default="uint16", metadata={"help": "token dtype of .bin files"})
    bytes_per_token: float | None = field(default=None, metadata={"help": "for .bin files, whose text is not at hand: what bits per byte divide by"})
    suffixes: tuple[str, ...] = (".txt", ".md", ".py", ".rst", ".json", ".csv", ".html", ".c", ".h", ".tex")

    def __post_init__(self) -> None:
        if not (math.isfinite(self.val_fraction) and 0 < self.val_fraction < 1):
            raise ArchsearchError(f"val_fraction: expected a share between 0 and 1, got {self.val_fraction!r}")
        if self.bytes_per_token is not None and not (math.isfinite(self.bytes_per_token) and self.bytes_per_token > 0):
            raise ArchsearchError(f"bytes_per_token: expected a positive number, got {self.bytes_per_token!r}")
        if self.bin_dtype not in ("uint8", "uint16", "uint32", "int32", "int64"):
            raise ArchsearchError(f"bin_dtype: expected uint8, uint16, uint32, int32 or int64, got {self.bin_dtype!r}")

    def unreadable(self) -> str | None:
        """Why the source or tokenizer cannot be read here (checked before a study starts), or None."""
        for name, path in (("source", self.source), ("tokenizer", self.tokenizer)):
            if path is None or (name == "source" and path == BUILTIN):
                continue
            if not os.path.exists(path):
                return f"{name}: {path}: no such file or folder"
            if not os.access(path, os.R_OK):
                return f"{name}: {path}: not readable"
        return None


@dataclass
class Corpus:
    """Train and validation tokens with what it takes to report bits per byte."""

    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    bytes_per_token: float | None  # validation text bytes per token; 1 for bytes
    digest: str
    description: str

    def batch(self, split: str, batch_size: int, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows (nanoGPT style): x [B, T] and the next tokens y [B, T]."""
        data = self.train if split == "train" else self.val
        starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=generator).numpy()
        return self._windows(data, starts, seq_len)

    def val_batches(self, batch_size: int, seq_len: int, tokens: int):
        """Fixed, evenly spread validation windows covering about `tokens` tokens: every evaluation sees the same ones."""
        n = max(1, min(tokens // seq_len, (len(self.val) - 1) // seq_len))
        starts = np.linspace(0, len(self.val) - seq_len - 1, n).astype(np.int64)
        for i in range(0, n, batch_size):
            yield self._windows(self.val, starts[i : i + batch_size], seq_len)

    @staticmethod
    def _windows(data: np.ndarray, starts: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = starts[:, None] + np.arange(seq_len + 1)
        chunk = torch.from_numpy(data[idx].astype(np.int64))
        return chunk[:, :-1], chunk[:, 1:]


def load_corpus(spec: DataSpec, min_tokens: int = MIN_TOKENS) -> Corpus:
    """The corpus a DataSpec names (cached per process: trials in one worker share it)."""
    corpus = _load(spec)
    for split, data in (("train", corpus.train), ("validation", corpus.val)):
        if len(data) < min_tokens:
            raise DataError(f"{spec.source}: the {split} split has {len(data)} tokens; expected at least {min_tokens}")
    return corpus


@lru_cache(maxsize=4)
def _load(spec: DataSpec) -> Corpus:
    if spec.source == BUILTIN:
        return _text_corpus(_builtin_files(), spec, "the Python standard library's source files, as bytes")
    path = Path(spec.source).expanduser()
    if not path.exists():
        raise DataError(f"{spec.source}: no such file or folder; expected a text file, a folder, train.bin/val.bin or a saved dataset")
    if path.is_dir() and (path / "train.bin").exists():
        return _bin_corpus(path, spec)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        return _hf_corpus(path, spec)
    if path.is_file():
        return _text_corpus([(path.name, path)], spec, f"text file {path}", single_file=True)
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in spec.suffixes)
    if not files:
        raise DataError(f"{spec.source}: the folder holds no text files ({', '.join(spec.suffixes)})")
    return _text_corpus([(str(p.relative_to(path)), p) for p in files], spec, f"{len(files)} text files under {path}")


def _builtin_files() -> list[tuple[str, Path]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in ("site-packages", "dist-packages", "__pycache__"))
        files += [(str(Path(folder, n).relative_to(root)), Path(folder, n)) for n in sorted(names) if n.endswith(".py")]
    return files


def _held_out(name: str, fraction: float) -> bool:
    """A stable, content-independent split: the same file lands in the same split on every machine."""
    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 16**8 < fraction


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def _text_corpus(files: list[tuple[str, Path]], spec: DataSpec, description: str, single_file: bool = False) -> Corpus:
    digest = hashlib.sha256()
    parts = {"train": [], "val": []}
    for name, path in files:
        data = _read(path)
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        if single_file:  # one file: the last val_fraction of it is validation
            cut = len(data) - int(len(data) * spec.val_fraction)
            parts["train"].append(data[:cut])
            parts["val"].append(data[cut:])
        else:
            parts["val" if _held_out(name, spec.val_fraction) else "train"].append(data)
    if not any(parts["train"]) and not any(parts["val"]):
        raise DataError(f"{spec.source}: the text is empty; expected some text to train on")
    train, val = (b"\n".join(parts[s]) for s in ("train", "val"))
    tokenizer = _tokenizer(spec)
    if tokenizer is None:
        return Corpus(np.frombuffer(train, np.uint8), np.frombuffer(val, np.uint8), 256, 1.0, digest.hexdigest()[:16], description)
    train_ids = _encode(tokenizer, train)
    val_ids = _encode(tokenizer, val)
    digest.update(Path(spec.tokenizer).read_bytes())
    return Corpus(train_ids, val_ids, tokenizer.get_vocab_size(), len(val) / max(len(val_ids), 1), digest.hexdigest()[:16], f"{description}, tokenized by {spec.tokenizer}")


def _tokenizer(spec: DataSpec):
    if spec.tokenizer is None:
        return None
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise DataError(f"{spec.tokenizer}: reading a tokenizer needs the tokenizers package (pip install 'archsearch[hf]')") from None
    try:
        return Tokenizer.from_file(spec.tokenizer)
    except Exception as e:  # the library raises its own untyped exceptions for a bad file
        raise DataError(f"{spec.tokenizer}: not a tokenizer.json ({str(e).splitlines()[0]})") from None


def _encode(tokenizer, text: bytes) -> np.ndarray:
    ids = tokenizer.encode(text.decode("utf-8", errors="replace")).ids
    return np.asarray(ids, dtype=np.uint32 if tokenizer.get_vocab_size() > 65535 else np.uint16)


def _bin_corpus(path: Path, spec: DataSpec) -> Corpus:
    splits = {}
    for split in ("train", "val"):
        f = path / f"{split}.bin"
        if not f.exists():
            raise DataError(f"{f}: missing; a token folder needs train.bin and val.bin")
        try:
            splits[split] = np.memmap(f, dtype=np.dtype(spec.bin_dtype), mode="r")
        except (OSError, ValueError) as e:
            raise DataError(f"{f}: cannot map as {spec.bin_dtype} tokens ({e})") from None
    head = np.concatenate([splits["train"][:1 << 20], splits["val"][:1 << 20]])
    vocab = int(head.max()) + 1 if len(head) else 0
    meta = path / "meta.json"
    if meta.exists():
        import json

        try:
            stated = json.loads(meta.read_text()).get("vocab_size", 0)
        except (OSError, UnicodeDecodeError, ValueError, AttributeError) as e:  # unreadable, not JSON, not a mapping
            raise DataError(f"{meta}: cannot read it ({type(e).__name__}); expected JSON like {{\"vocab_size\": 50304}}") from None
        if isinstance(stated, bool) or not isinstance(stated, int) or not 0 <= stated <= 1 << 21:
            raise DataError(f"{meta}: vocab_size: expected an integer from 0 to {1 << 21:,}, got {stated!r}")
        vocab = max(vocab, stated)
    vocab = 1 << math.ceil(math.log2(max(vocab, 2)))  # tokens beyond the first MiB may be larger: round up
    digest = hashlib.sha256(b"".join(hashlib.sha256(np.asarray(splits[s][: 1 << 22]).tobytes()).digest() for s in ("train", "val")))
    digest.update(f"{len(splits['train'])},{len(splits['val'])}".encode())
    return Corpus(splits["train"], splits["val"], vocab, spec.bytes_per_token, digest.hexdigest()[:16], f"token files in {path}")


def _hf_corpus(path: Path, spec: DataSpec) -> Corpus:
    try:
        import datasets
    except ImportError:
        raise DataError(f"{path}: reading a saved dataset needs the datasets package (pip install datasets)") from None
    if spec.tokenizer is None:
        raise DataError(f"{path}: a Hugging Face dataset needs a tokenizer (tokenizer: path/to/tokenizer.json), or use bytes by exporting text")
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
    if spec.text_field not in ds.column_names:
        raise DataError(f"{path}: no column {spec.text_field!r}; expected one of {', '.join(ds.column_names)}")
    texts = ds[spec.text_field]
    files = [(f"row{i}", t) for i, t in enumerate(texts)]
    parts = {"train": [], "val": []}
    for name, text in files:
        parts["val" if _held_out(name, spec.val_fraction) else "train"].append(text.encode())
    train, val = b"\n".join(parts["train"]), b"\n".join(parts["val"])
    tok = _tokenizer(spec)
    train_ids, val_ids = _encode(tok, train), _encode(tok, val)
    digest = hashlib.sha256(train + b"\0" + val + Path(spec.tokenizer).read_bytes()).hexdigest()[:16]
    return Corpus(train_ids, val_ids, tok.get_vocab_size(), len(val) / max(len(val_ids), 1), digest, f"dataset {path}, tokenized by {spec.tokenizer}")
