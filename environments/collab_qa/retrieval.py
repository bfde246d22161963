"""BM25 search over a corpus of documents, built once and cached on disk.

A search tool in a game is a :class:`BM25Index` over one corpus (``bm25s``,
Lucene's BM25 variant, k1=1.5, b=0.75). Documents are ``(id, text)`` pairs;
the text is what gets indexed and what a search returns.

    index = cached_index(ids, texts)
    index.search("where was Varo Quell born", k=3)   # [(doc_id, text, score), ...]

Tokenisation is deliberately plain and language-agnostic: lower case, runs of
letters and digits, English stop words dropped, no stemming.

Caching. :func:`cached_index` keys an index by the corpus content (every id
and text), the tokeniser and the BM25 parameters, and stores it under
``$ARENA_HOME/indexes/bm25-<key>/`` (``~/.cache/arena`` without ARENA_HOME),
built in a temporary directory and renamed into place (``arena.tiny.build_once``),
so a killed build never leaves half an index. In a process each index is
loaded once and kept; changing any document changes the key.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path

import bm25s
import numpy as np

#: bump when tokenisation or the on-disk layout changes: it is part of every cache key
INDEX_VERSION = "1"
K1, B = 1.5, 0.75
META_FILE = "arena_index.json"
IDS_FILE = "ids.json"

STOPWORDS = frozenset(
    "a an and are as at be been but by did do does for from had has have he her his how i in into is it its "
    "of on or she that the their them they this to was were what when where which who whom whose why will "
    "with you your".split()
)
_TOKEN = re.compile(r"[^\W_]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased runs of letters and digits, without English stop words."""
    return [t for t in _TOKEN.findall(text.lower()) if t not in STOPWORDS]


def corpus_key(ids: Sequence[str], texts: Sequence[str]) -> str:
    """A short hash of the corpus content, the tokeniser version and the BM25 parameters."""
    h = hashlib.sha256(f"bm25s:{INDEX_VERSION}:{K1}:{B}\0".encode())
    for i, t in zip(ids, texts):
        h.update(i.encode("utf-8") + b"\0" + t.encode("utf-8") + b"\0")
    return h.hexdigest()[:16]


class BM25Index:
    """A BM25 index over ``(id, text)`` documents. Build with :meth:`build` or :func:`cached_index`."""

    def __init__(self, ids: Sequence[str], texts: Sequence[str], retriever: bm25s.BM25):
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
        self.ids = list(ids)
        self.texts = list(texts)
        self.retriever = retriever
        self._vocab = retriever.vocab_dict

    @classmethod
    def build(cls, ids: Sequence[str], texts: Sequence[str]) -> BM25Index:
        _check_corpus(ids, texts)
        retriever = bm25s.BM25(k1=K1, b=B)
        retriever.index([tokenize(t) for t in texts], show_progress=False)
        return cls(ids, texts, retriever)

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, query: str, k: int = 3) -> list[tuple[str, str, float]]:
        """The ``k`` best documents for ``query`` as ``(doc_id, text, score)``, best first.

        Only documents sharing a term with the query are returned (so possibly
        fewer than ``k``, or none); ties go to the earlier document.
        """
        if k <= 0:
            return []
        terms = [t for t in tokenize(query) if t in self._vocab]
        if not terms:
            return []
        scores = np.asarray(self.retriever.get_scores(terms), dtype=np.float64)
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self.ids[i], self.texts[i], float(scores[i])) for i in order if scores[i] > 0]

    def save(self, directory: Path) -> None:
        self.retriever.save(str(directory), show_progress=False)
        (directory / IDS_FILE).write_text(json.dumps(self.ids))
        meta = {"version": INDEX_VERSION, "k1": K1, "b": B, "documents": len(self.ids), "key": corpus_key(self.ids, self.texts)}
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")  # written last: marks the build complete

    @classmethod
    def load(cls, directory: Path, ids: Sequence[str], texts: Sequence[str]) -> BM25Index:
        stored = json.loads((directory / IDS_FILE).read_text())
        if stored != list(ids):
            raise ValueError(f"the index in {directory} was built for other documents")
        retriever = bm25s.BM25.load(str(directory), show_progress=False)
        return cls(ids, texts, retriever)


def _check_corpus(ids: Sequence[str], texts: Sequence[str]) -> None:
    if not ids:
        raise ValueError("cannot index an empty corpus")
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"duplicate document id {i!r}")
        seen.add(i)


_LOADED: dict[str, BM25Index] = {}


def index_dir(key: str, cache_dir: Path | None = None) -> Path:
    # imported here: arena.tiny loads torch and transformers (seconds), which a search never needs
    from arena.tiny import default_cache_dir

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "indexes" / f"bm25-{key}"


def cached_index(ids: Sequence[str], texts: Sequence[str], cache_dir: Path | None = None) -> BM25Index:
    """The BM25 index of this corpus: from this process's memory, else from the disk cache, else
    built and saved there (see the module docstring)."""
    ids, texts = list(ids), list(texts)
    _check_corpus(ids, texts)
    key = corpus_key(ids, texts)
    if key in _LOADED:
        return _LOADED[key]
    from arena.tiny import build_once

    final = build_once(index_dir(key, cache_dir), lambda tmp: BM25Index.build(ids, texts).save(tmp), marker=META_FILE)
    index = BM25Index.load(final, ids, texts)
    _LOADED[key] = index
    return index


def clear_memory_cache() -> None:
    """Forget the indexes loaded in this process (the disk cache stays)."""
    _LOADED.clear()
