"""Proxy data: the built-in corpus, user text, token files; clear errors for bad paths."""

import numpy as np
import pytest
import torch

from archsearch.proxy import DataError, DataSpec, load_corpus
from archsearch.proxy.data import _held_out


def test_builtin_corpus_is_real_text_split_by_file_with_a_digest():
    corpus = load_corpus(DataSpec())
    assert corpus.vocab_size == 256 and corpus.bytes_per_token == 1.0
    assert len(corpus.train) > 10_000_000 and 200_000 < len(corpus.val) < len(corpus.train) / 10
    assert b"def " in corpus.train[:100_000].tobytes() and len(corpus.digest) == 16
    assert load_corpus(DataSpec()).digest == corpus.digest


def test_the_split_is_by_name_and_stable():
    names = [f"pkg/module_{i}.py" for i in range(2000)]
    held = [n for n in names if _held_out(n, 0.05)]
    assert 50 < len(held) < 150 and held == [n for n in names if _held_out(n, 0.05)]


def test_batches_are_next_token_windows():
    corpus = load_corpus(DataSpec())
    x, y = corpus.batch("train", 4, 32, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 32) and torch.equal(x[:, 1:], y[:, :-1])
    windows = list(corpus.val_batches(4, 32, 32 * 10))
    assert sum(len(w[0]) for w in windows) == 10 and torch.equal(windows[0][0], next(corpus.val_batches(4, 32, 32 * 10))[0])


def test_a_text_folder_is_split_by_file(tmp_path):
    for i in range(60):
        (tmp_path / f"doc{i}.txt").write_text(f"document {i} " * 400)
    corpus = load_corpus(DataSpec(source=str(tmp_path), val_fraction=0.2), min_tokens=1000)
    assert len(corpus.val) > 1000 and len(corpus.train) > 4 * len(corpus.val) / 2


def test_a_single_text_file_holds_out_its_end(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("abcdefghij" * 5000)
    corpus = load_corpus(DataSpec(source=str(path), val_fraction=0.1), min_tokens=1000)
    assert len(corpus.val) == 5000 and len(corpus.train) == 45000


def test_nanogpt_token_files_are_memory_mapped(tmp_path):
    np.arange(20000, dtype=np.uint16).tofile(tmp_path / "train.bin")
    (np.arange(5000, dtype=np.uint16) % 300).tofile(tmp_path / "val.bin")
    corpus = load_corpus(DataSpec(source=str(tmp_path), bytes_per_token=3.5), min_tokens=1000)
    assert isinstance(corpus.train, np.memmap) and corpus.vocab_size == 32768 and corpus.bytes_per_token == 3.5


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: str(p / "missing"), "no such file or folder"),
        (lambda p: (p / "empty").mkdir() or str(p / "empty"), "holds no text files"),
        (lambda p: (p / "tiny.txt").write_text("hi") and str(p / "tiny.txt"), "expected at least"),
        (lambda p: (p / "toks").mkdir() or np.zeros(10, np.uint16).tofile(p / "toks" / "train.bin") or str(p / "toks"), "val.bin: missing"),
        (lambda p: (p / "e.txt").write_text("") or str(p / "e.txt"), "empty"),
    ],
    ids=["missing", "empty-folder", "too-small", "no-val-bin", "empty-file"],
)
def test_bad_data_is_one_line_naming_the_path(tmp_path, make, fragment):
    source = make(tmp_path)
    with pytest.raises(DataError) as info:
        load_corpus(DataSpec(source=source))
    assert fragment in str(info.value) and "\n" not in str(info.value) and str(tmp_path) in str(info.value)


def _tokenizer(path, texts):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]"]))
    tok.save(str(path))
    return tok


def test_a_saved_hugging_face_dataset_with_a_tokenizer_reports_bytes_per_token(tmp_path):
    import datasets

    texts = [f"the quick brown fox {i} jumps over the lazy dog number {i * 7}. " * 20 for i in range(300)]
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "ds"))
    tok = _tokenizer(tmp_path / "tokenizer.json", texts)
    corpus = load_corpus(DataSpec(source=str(tmp_path / "ds"), tokenizer=str(tmp_path / "tokenizer.json")), min_tokens=500)
    assert corpus.vocab_size == tok.get_vocab_size() and corpus.bytes_per_token > 1.5
    assert int(corpus.train.max()) < corpus.vocab_size and len(corpus.val) > 500
    with pytest.raises(DataError, match="no column 'body'"):
        load_corpus(DataSpec(source=str(tmp_path / "ds"), tokenizer=str(tmp_path / "tokenizer.json"), text_field="body"))


def test_a_text_file_with_a_tokenizer_and_a_bad_tokenizer_file(tmp_path):
    texts = ["hello world, this is a test of tokenized text. " * 50] * 40
    (tmp_path / "t.txt").write_text("".join(texts))
    _tokenizer(tmp_path / "tok.json", texts)
    corpus = load_corpus(DataSpec(source=str(tmp_path / "t.txt"), tokenizer=str(tmp_path / "tok.json")), min_tokens=100)
    assert corpus.bytes_per_token > 2
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json: not a tokenizer.json"):
        load_corpus(DataSpec(source=str(tmp_path / "t.txt"), tokenizer=str(tmp_path / "bad.json")))
