"""Reading labelled pair files and corpora.

Pair files
    ``sentence1<TAB>sentence2<TAB>label`` with no header, or a CSV/TSV whose header names
    the columns (``sentence1``/``sentence2``/``label`` and common aliases), or any other
    layout through ``columns`` (1-based field numbers or header names). Labels are 0/1
    (``1.0`` and surrounding spaces are accepted), or graded scores (any other number, such
    as Chinese STS-B's 0-5): a file with one graded label is ``Pairs.graded``, which
    evaluation reads as scores to correlate with and training refuses.
Corpora
    Plain text (one document per line, id = line number), or CSV/TSV/JSONL with a text
    column (``text`` unless named), an optional id column (``id`` if present, else the
    1-based record number), and every other column kept as metadata.
Tables
    Pair files and corpora may also be Parquet or Excel files, or pandas DataFrames, with
    the columns of a CSV file and the same rules (``frames.py``; the header is line 1).

All files are UTF-8; a leading BOM and CRLF line endings are accepted. ``.tsv`` and other
tab-separated files are read without quoting (sentences may contain quote characters);
comma-separated ``.csv`` files use standard CSV quoting. A ``.csv`` whose first line
contains a tab is read as tab-separated, as real files named ``.csv`` often are.
Every problem is reported as an :class:`InputError` naming the file and line.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import frames
from .errors import InputError
from .text import is_blank, normalize

if TYPE_CHECKING:
    import pandas as pd

SENTENCE1_NAMES = {"sentence1", "sentence_1", "s1", "text_a", "text1", "question1", "query1", "q1"}
SENTENCE2_NAMES = {"sentence2", "sentence_2", "s2", "text_b", "text2", "question2", "query2", "q2"}
LABEL_NAMES = {"label", "labels", "is_duplicate", "similar", "y"}
CORPUS_SUFFIXES = {".csv", ".tsv", ".jsonl", ".ndjson"}
FIELD_LIMIT = 64 << 20  # characters in one field (csv's default, 131,072, refuses 1 MB lines)
POSITIVE_AT = 0.5
"""A pair means the same when its label is at least this: the one place that rule is written."""


def is_graded(labels: np.ndarray) -> bool:
    """Whether labels are graded scores (any label other than 0 and 1), not same/not same: the
    one place that rule is written."""
    labels = np.asarray(labels)
    return bool(np.any((labels != 0) & (labels != 1)))


def is_positive(labels: np.ndarray) -> np.ndarray:
    """Which labels mark a positive pair (``POSITIVE_AT``), as a boolean array."""
    return np.asarray(labels) >= POSITIVE_AT


@dataclass(frozen=True)
class Pairs:
    """Labelled sentence pairs; ``labels`` is a float32 array of 0/1."""

    left: list[str]
    right: list[str]
    labels: np.ndarray
    source: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def graded(self) -> bool:
        """Whether the labels are graded scores (any label other than 0 and 1), not same/not same."""
        return is_graded(self.labels)

    @property
    def positive(self) -> np.ndarray:
        """Which pairs are positive (``is_positive`` of the labels)."""
        return is_positive(self.labels)

    def subset(self, rows: slice | np.ndarray) -> Pairs:
        """The pairs at ``rows`` (a slice, positions or a boolean mask), from the same source."""
        keep = np.arange(len(self))[rows]
        return Pairs([self.left[i] for i in keep], [self.right[i] for i in keep], self.labels[keep], self.source)

    def distinct(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The distinct sentences (in first-seen order) and each pair's left and right position
        among them, so that a sentence held by many pairs is encoded once."""
        texts = list(dict.fromkeys(self.left + self.right))
        where = {t: i for i, t in enumerate(texts)}
        return texts, np.array([where[t] for t in self.left], dtype=np.int64), np.array(
            [where[t] for t in self.right], dtype=np.int64)


@dataclass(frozen=True)
class Corpus:
    """Documents to index; ``skipped`` counts blank documents left out.

    ``ids_given`` says whether ids came from an id column (rather than line or record
    numbers), i.e. whether they can name existing documents to replace.
    """

    ids: list[str]
    texts: list[str]
    metadata: list[dict] = field(default_factory=list)
    skipped: int = 0
    ids_given: bool = False
    lines: list[int] = field(default_factory=list)
    """The line each document starts on (for errors found after reading, such as a repeated id)."""
    source: str = ""

    def __len__(self) -> int:
        return len(self.texts)


def read_text(path: str | Path) -> str:
    """A whole UTF-8 file, BOM removed, or an InputError naming the file (and line) at fault."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise _unreadable(path, e) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, raw[: e.start].count(b"\n") + 1) from None


def _unreadable(path: Path, e: OSError) -> InputError:
    if isinstance(e, FileNotFoundError):
        return InputError(f"{path}: no such file", path=path)
    if isinstance(e, IsADirectoryError):
        return InputError(f"{path}: is a directory, expected a file", path=path)
    return InputError(f"{path}: cannot read ({e.strerror})", path=path)


def _not_utf8(path: Path, line: int) -> InputError:
    return InputError(f"{path} line {line}: not valid UTF-8 text; save the file as UTF-8", path=path, line=line)


@contextmanager
def _open_lines(path: Path, newline: str) -> Iterator[Iterator[str]]:
    """A UTF-8 file's lines, read one at a time (BOM removed): split on LF alone with
    ``newline="\\n"`` (as ``_lines`` splits), or as ``csv`` wants with ``newline=""``. A line
    that is not UTF-8 is an InputError naming it, as ``read_text`` would."""
    try:
        f = open(path, encoding="utf-8-sig", newline=newline)
    except OSError as e:
        raise _unreadable(path, e) from None

    def lines() -> Iterator[str]:
        try:
            yield from f
        except UnicodeDecodeError:  # decoded a block at a time, so find the line from the bytes
            with open(path, "rb") as raw:
                for n, line in enumerate(raw, 1):
                    try:
                        line.decode("utf-8")
                    except UnicodeDecodeError:
                        raise _not_utf8(path, n) from None
            raise _not_utf8(path, 1) from None  # a sequence split across lines (unreachable for UTF-8)
        except OSError as e:
            raise _unreadable(path, e) from None

    with f:
        yield lines()


def _lines(text: str) -> list[str]:
    """Lines split on LF alone (CR stripped later by normalize): U+2028 and friends stay inside a line."""
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _rows(path: Path, text: str) -> tuple[list[list[str]], list[int]]:
    """Split a delimited file into rows, with the line number each row starts on."""
    found = list(_iter_rows(path, io.StringIO(text, newline=""), text.split("\n", 1)[0]))
    return [row for row, _ in found], [line for _, line in found]


def _iter_rows(path: Path, lines: Iterable[str], first: str) -> Iterator[tuple[list[str], int]]:
    """The non-blank rows of a delimited file's ``lines`` (``first`` is line 1: a ``.csv``
    whose first line holds a tab is tab-separated), with the line each starts on."""
    if path.suffix.lower() == ".csv" and "\t" not in first:
        reader = csv.reader(lines, strict=True)
    else:
        reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    limit = csv.field_size_limit(FIELD_LIMIT)
    try:
        start = 1
        for row in reader:
            if row and any(f.strip() for f in row):
                yield row, start
            start = reader.line_num + 1
    except csv.Error as e:
        raise InputError(f"{path} line {reader.line_num}: {e}", path=path, line=reader.line_num) from None
    finally:
        csv.field_size_limit(limit)


def _parse_label(value: str, path: Path, line: int) -> float:
    try:
        label = float(value)
    except ValueError:
        label = float("nan")
    if not np.isfinite(label):
        hint = "; if line 1 is a header, name the fields with columns" if line == 1 else ""
        raise InputError(f"{path} line {line}: label {value.strip()[:40]!r} is not 0 or 1"
                         f"{hint or ' (nor a graded score such as 0-5)'}", path=path, line=line,
                         argument="columns" if hint else None)
    return label


def _pair_columns(
    path: Path, header: list[str], columns: Sequence[str | int] | None
) -> tuple[list[int], bool] | None:
    """0-based (sentence1, sentence2, label) field indexes, and whether row 1 is a header."""
    names = [normalize(h).lower() for h in header]
    if columns is None:
        found = [next((i for i, n in enumerate(names) if n in group), None)
                 for group in (SENTENCE1_NAMES, SENTENCE2_NAMES, LABEL_NAMES)]
        return (found, True) if None not in found else None
    if len(columns) != 3:
        raise InputError(f"columns must name 3 fields (sentence1, sentence2, label), got {len(columns)}",
                         argument="columns")
    if all(isinstance(c, int) or str(c).isdigit() for c in columns):
        idx = [int(c) - 1 for c in columns]
        if min(idx) < 0:
            raise InputError("columns are 1-based field numbers (the first field is 1)", argument="columns")
        return idx, False
    missing = [str(c) for c in columns if str(c).lower() not in names]
    if missing:
        raise InputError(f"{path}: no column named {', '.join(missing)} in the header ({', '.join(header)})",
                         path=path, line=1, argument="columns")
    return [names.index(str(c).lower()) for c in columns], True


def _source(source: str | Path | pd.DataFrame) -> tuple[Path, bool]:
    """The name errors give the source by, and whether it is a table (a DataFrame or a
    Parquet/Excel file, read through pandas) rather than a text file."""
    if frames.is_frame(source):
        return Path("DataFrame"), True
    path = Path(source)
    return path, frames.is_table(path)


def read_pairs(source: str | Path | pd.DataFrame, columns: Sequence[str | int] | None = None) -> Pairs:
    """Read labelled pairs: a file or a DataFrame (see the module docstring for layouts).
    Example: ``read_pairs("pairs.tsv")``, ``read_pairs(df, columns=["q1", "q2", "same"])``."""
    path, table = _source(source)
    if table:
        rows, lines = frames.rows(source if frames.is_frame(source) else frames.read_table(path))
    else:
        rows, lines = _rows(path, read_text(path))
    if not rows:
        raise InputError(f"{path}: no pairs found (expected sentence1<TAB>sentence2<TAB>label lines)", path=path)
    layout = _pair_columns(path, rows[0], columns)
    if layout is None:
        idx, has_header = [0, 1, 2], table  # a table's first row is always its header
    else:
        idx, has_header = layout
    if has_header:
        rows, lines = rows[1:], lines[1:]
    exact = layout is None  # the default layout: exactly three fields
    need = max(idx) + 1
    left, right, labels = [], [], []
    for row, line in zip(rows, lines):
        if len(row) < need or (exact and len(row) != 3):
            hint = " (e.g. columns 2,3,4)" if len(row) == 4 else ""
            raise InputError(
                f"{path} line {line}: expected {3 if exact else f'at least {need}'} fields "
                f"(sentence1, sentence2, label), found {len(row)}; choose them with columns{hint}",
                path=path, line=line, argument="columns")
        a, b = normalize(row[idx[0]]), normalize(row[idx[1]])
        if is_blank(a) or is_blank(b):
            raise InputError(f"{path} line {line}: {'sentence1' if is_blank(a) else 'sentence2'} is empty",
                             path=path, line=line)
        left.append(a)
        right.append(b)
        labels.append(_parse_label(row[idx[2]], path, line))
    if not labels:
        raise InputError(f"{path}: no pairs found below the header", path=path)
    return Pairs(left, right, np.asarray(labels, dtype=np.float32), str(path))


CORPUS_CHUNK = 20_000
"""Documents per chunk of ``stream_corpus``: memory for the text of a chunk, not of the corpus."""


def _jsonl_records(path: Path, lines: Iterable[str]) -> Iterator[tuple[dict, int]]:
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path} line {n}: not valid JSON ({e.msg})", path=path, line=n) from None
        if not isinstance(obj, dict):
            raise InputError(f"{path} line {n}: expected a JSON object per line", path=path, line=n)
        yield obj, n


def _delimited_records(path: Path, lines: Iterable[str], first: str) -> Iterator[tuple[dict, int]]:
    """Header-keyed CSV/TSV rows, with their line numbers."""
    rows = _iter_rows(path, lines, first)
    for header, line in rows:
        header = [normalize(h) for h in header]
        if len(set(header)) != len(header):
            raise InputError(f"{path} line {line}: the header repeats a column name", path=path, line=line)
        break
    else:
        return
    for row, line in rows:
        if len(row) != len(header):
            raise InputError(f"{path} line {line}: {len(row)} fields, but the header has {len(header)}", path=path,
                             line=line)
        yield dict(zip(header, row)), line


@contextmanager
def _records(path: Path, text_column: str | None, id_column: str | None) -> Iterator[Iterator[tuple[dict, int]]]:
    """The records of a corpus file, read as they are needed, with their line numbers: a plain
    text line is ``{"text": line}``, a CSV/TSV row is keyed by the header, a JSONL line is
    its object, a Parquet/Excel row is keyed by its columns."""
    suffix = path.suffix.lower()
    if frames.is_table(path):
        yield frames.iter_records(path, CORPUS_CHUNK)
    elif suffix in {".jsonl", ".ndjson"}:
        with _open_lines(path, "\n") as lines:
            yield _jsonl_records(path, lines)
    elif suffix in CORPUS_SUFFIXES:
        with _open_lines(path, "") as lines:
            first = next(lines, "")
            yield _delimited_records(path, _chain(first, lines), first)
    else:
        if text_column or id_column:
            argument = "text_column" if text_column else "id_column"
            raise InputError(f"{path}: {argument}: columns apply to .csv, .tsv and .jsonl corpora, not plain text",
                             path=path, argument=argument)
        with _open_lines(path, "\n") as lines:
            yield (({"text": line.removesuffix("\n")}, n) for n, line in enumerate(lines, 1))


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    if first:
        yield first
    yield from rest


def stream_corpus(source: str | Path, text_column: str | None = None, id_column: str | None = None,
                  chunk_size: int = CORPUS_CHUNK, id_prefix: str = "") -> Iterator[Corpus]:
    """Read a corpus file ``chunk_size`` documents at a time, so that a corpus of any size
    can be indexed in bounded memory (``build.py``); the rules are ``read_corpus``'s, except
    that a repeated id is left for the reader of the chunks to find (it would take memory
    for every id). ``id_prefix`` goes before ids made from line or record numbers, so that
    several files' documents can share one index. Example:
    ``for chunk in stream_corpus("faq.tsv", "question"): print(len(chunk), chunk.ids[0])``."""
    path = Path(source)
    plain = path.suffix.lower() not in CORPUS_SUFFIXES and not frames.is_table(path)
    with _records(path, text_column, id_column) as records:
        yield from _chunks(path, records, plain, text_column, id_column, chunk_size, id_prefix)


def _chunks(path: Path, records: Iterable[tuple[dict, int]], plain: bool, text_column: str | None,
            id_column: str | None, chunk_size: int, id_prefix: str = "") -> Iterator[Corpus]:
    """Documents from records: the text column, the id column (else the record number), the
    rest metadata; blank texts skipped."""
    text_key, id_key = text_column or "text", None
    ids, texts, metadata, lines, skipped, given, n = [], [], [], [], 0, 0, 0
    for n, (record, line) in enumerate(records, 1):
        if n == 1 and not plain:
            columns = list(record)
            id_key = id_column or ("id" if "id" in columns else None)
            for key, argument in ((text_key, "text_column"), (id_key, "id_column")):
                if key is not None and key not in columns:
                    raise InputError(f"{path}: no column {key!r}; choose one with {argument} "
                                     f"(columns: {', '.join(columns)})", path=path, argument=argument)
        value = record.get(text_key)
        if value is not None and not isinstance(value, str):
            raise InputError(f"{path} line {line}: {text_key!r} must be a string", path=path, line=line)
        doc_text = normalize(value or "")
        if is_blank(doc_text):
            skipped += 1
            continue
        if id_key is None:
            doc_id = f"{id_prefix}{n}"
        else:
            doc_id = "" if record.get(id_key) is None else str(record[id_key]).strip()
            if not doc_id:
                raise InputError(f"{path} line {line}: empty id in column {id_key!r}", path=path, line=line)
        ids.append(doc_id)
        texts.append(doc_text)
        metadata.append({k: v for k, v in record.items() if k not in (text_key, id_key)})
        lines.append(line)
        if len(texts) >= chunk_size:
            yield Corpus(ids, texts, metadata, skipped, id_key is not None, lines, str(path))
            given += len(texts)
            ids, texts, metadata, lines, skipped = [], [], [], [], 0
    if texts or (skipped and given):
        yield Corpus(ids, texts, metadata, skipped, id_key is not None, lines, str(path))
    elif not given:
        every = "" if plain or not n else f" (every {text_key!r} is blank)"
        raise InputError(f"{path}: the corpus has no documents{every}", path=path)


def read_corpus(source: str | Path | pd.DataFrame, text_column: str | None = None,
                id_column: str | None = None) -> Corpus:
    """Read documents to index: a file or a DataFrame (see the module docstring for formats).
    Example: ``read_corpus("faq.tsv", text_column="question")``, ``read_corpus(df, "title", "sku")``."""
    whole = 1 << 62
    if frames.is_frame(source):
        records, lines = frames.records(source)
        corpus = next(_chunks(Path("DataFrame"), zip(records, lines), False, text_column, id_column, whole))
    else:
        corpus = next(stream_corpus(source, text_column, id_column, whole))
    seen: dict[str, int] = {}
    for doc_id, line in zip(corpus.ids, corpus.lines):
        if doc_id in seen:
            raise InputError(f"{corpus.source} line {line}: duplicate id {doc_id!r} (first on line {seen[doc_id]})",
                             path=Path(corpus.source), line=line)
        seen[doc_id] = line
    return corpus


def read_sentences(path: str | Path, text_column: str | None = None) -> list[str]:
    """Unlabelled sentences: a corpus's texts (CSV/TSV/JSONL, ``text_column``), or every
    tab-separated field of every line of a plain text file (so that a file of unlabelled
    pairs gives both its sentences); blank ones are skipped."""
    path = Path(path)
    if path.suffix.lower() in CORPUS_SUFFIXES or frames.is_table(path):
        return read_corpus(path, text_column).texts
    sentences = [normalize(f) for line in _lines(read_text(path)) for f in line.split("\t")]
    sentences = [s for s in sentences if not is_blank(s)]
    if not sentences:
        raise InputError(f"{path}: no sentences found", path=path)
    return sentences


def paraphrase_groups(texts: Sequence[str], pairs: Pairs) -> np.ndarray:
    """Group number of each of ``texts``: texts linked by positive pairs, directly or through
    other texts, share a group (connected components); texts in no positive pair are alone.

    Used for the relevant documents of the retrieval task and to keep paraphrases from
    being treated as negatives of each other during in-batch training. Both sentences of
    every pair must be among ``texts``.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    position = {t: i for i, t in enumerate(texts)}
    positive = pairs.positive
    rows = [position[a] for a, p in zip(pairs.left, positive) if p]
    cols = [position[b] for b, p in zip(pairs.right, positive) if p]
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(len(texts), len(texts)))
    return connected_components(graph, directed=False)[1]
