"""Frozen character vectors: load a word2vec file, or train them with gensim.

Training (the default when no vectors file is given): gensim ``Word2Vec`` CBOW over the
characters of every training sentence, settings in ``WORD2VEC_SETTINGS``. One worker
thread and a fixed hash function make it reproducible for a given seed.

Loading: word2vec text or binary format, detected from the first row. A damaged *text*
file (a BOM before the header, a header that promises more rows than are complete, a
cut-off last line) is loaded partially: every complete row is kept and a warning says
how many were found against how many were promised. A damaged binary file is an error.

Rows of the embedding matrix: padding = zeros; OOV = the mean of the vocabulary's
vectors (a "generic character"); a vocabulary character missing from a loaded file gets
a random vector with the file's per-dimension spread (seeded), and a warning counts them.

gensim comes with the ``train`` extra and is imported by the functions that use it, so that
importing this module (``training`` does) needs none of training's packages.
"""

from __future__ import annotations

import logging
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError
from .text import OOV_ID, PAD_ID, RESERVED, Vocabulary, normalize

if TYPE_CHECKING:  # gensim comes with the train extra, and is imported where it is used
    from gensim.models import KeyedVectors

log = logging.getLogger(__name__)

WORD2VEC_SETTINGS = {"sg": 0, "window": 5, "min_count": 1, "epochs": 10, "workers": 1}
BOM = b"\xef\xbb\xbf"


def _stable_hash(s: str) -> int:
    """gensim seeds each word's initial vector with hash(); Python's is salted per process."""
    return zlib.crc32(s.encode("utf-8"))


def train_char_vectors(texts: Sequence[str], dim: int = 300, seed: int = 0) -> KeyedVectors:
    """CBOW character vectors over ``texts`` (each text is a sentence of characters)."""
    from gensim.models import Word2Vec

    sentences = [list(normalize(t)) for t in texts]
    model = Word2Vec(sentences, vector_size=dim, seed=seed, hashfxn=_stable_hash, **WORD2VEC_SETTINGS)
    return model.wv


def _sniff(path: Path) -> tuple[bool, bool, bool]:
    """(starts with a BOM, is text format, header fits the file size)."""
    with open(path, "rb") as f:
        first = f.readline()
        row = f.readline(1 << 20)
    has_bom = first.startswith(BOM)
    try:
        count, dim = (int(x) for x in first.removeprefix(BOM).split()[:2])
    except ValueError:
        return has_bom, False, False
    fields = row.split()
    is_text = len(fields) == dim + 1 and all(_is_float(x) for x in fields[1:])
    # A row takes at least 4 bytes a dimension in binary, 2 ("0 ") in text: a header that
    # promises more than the file can hold is damaged (and would make gensim over-allocate).
    fits = count * dim * (2 if is_text else 4) <= path.stat().st_size
    return has_bom, is_text, fits


def _is_float(x: str | bytes) -> bool:
    try:
        float(x)
    except ValueError:
        return False
    return True


def _complete_text_rows(path: Path, tmp_dir: str) -> tuple[Path, int, int]:
    """Copy the complete rows of a damaged text file under a corrected header."""
    with open(path, "rb") as f:
        lines = f.read().removeprefix(BOM).split(b"\n")
    try:
        promised, dim = (int(x) for x in lines[0].split()[:2])
    except ValueError:
        raise InputError(f"{path}: not a word2vec file (the first line must be '<count> <dimension>')") from None
    rows = []
    for line in lines[1:]:
        fields = line.split()
        if len(fields) != dim + 1:
            continue
        try:
            fields[0].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if not all(_is_float(x) for x in fields[1:]):
            continue
        rows.append(line.rstrip(b"\r"))
    clean = Path(tmp_dir) / "vectors.txt"
    clean.write_bytes(b"%d %d\n" % (len(rows), dim) + b"\n".join(rows) + b"\n")
    return clean, len(rows), promised


def load_vectors(path: str | Path) -> KeyedVectors:
    """Load a word2vec text or binary file with gensim (see the module docstring)."""
    from gensim.models import KeyedVectors

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such vectors file")
    try:
        has_bom, is_text, fits = _sniff(path)
        if not is_text:
            if has_bom or not fits:
                raise InputError(f"{path}: damaged or not a word2vec file; re-export it in word2vec format")
            return KeyedVectors.load_word2vec_format(str(path), binary=True)
        if not has_bom and fits:
            return KeyedVectors.load_word2vec_format(str(path), binary=False)
    except (ValueError, EOFError, UnicodeDecodeError) as e:
        if not is_text:
            raise InputError(f"{path}: damaged or not a word2vec binary file ({e}); re-export it") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    with tempfile.TemporaryDirectory() as tmp:
        clean, found, promised = _complete_text_rows(path, tmp)
        if found == 0:
            raise InputError(f"{path}: no complete vector rows; check that it is a word2vec file")
        kv = KeyedVectors.load_word2vec_format(str(clean), binary=False)
    log.warning(
        "%s is damaged: its header promises %s vectors, %s rows are complete%s; loaded those %s",
        path, f"{promised:,}", f"{found:,}", " (and it starts with a BOM)" if has_bom else "", f"{found:,}",
    )
    return kv


def embedding_matrix(vocab: Vocabulary, kv: KeyedVectors, seed: int = 0) -> np.ndarray:
    """The frozen (len(vocab), dim) float32 matrix for the encoder's embedding layer."""
    dim = kv.vector_size
    matrix = np.zeros((len(vocab), dim), dtype=np.float32)
    known = np.array([c in kv.key_to_index for c in vocab.chars], dtype=bool)
    if known.any():
        matrix[RESERVED:][known] = kv[[c for c, k in zip(vocab.chars, known) if k]]
    missing = int((~known).sum())
    if missing:
        spread = kv.vectors.std(axis=0) if len(kv) > 1 else np.full(dim, 0.1, dtype=np.float32)
        rng = np.random.default_rng(seed)
        matrix[RESERVED:][~known] = rng.normal(0.0, 1.0, (missing, dim)) * spread
        log.warning(
            "%s of %s training characters have no vector in the vectors file; they got random vectors",
            f"{missing:,}", f"{len(vocab.chars):,}",
        )
    matrix[PAD_ID] = 0.0
    matrix[OOV_ID] = matrix[RESERVED:].mean(axis=0) if len(vocab.chars) else 0.0
    return matrix


NEW_CHAR_MIN_COUNT = 2
"""With ``init``, a character the model has not seen joins its vocabulary when it occurs at
least this often in the training text; rarer ones are read as the unknown character."""
RIDGE = 1.0


def extend_embedding(matrix: np.ndarray, vocab: Vocabulary, new_chars: Sequence[str],
                     kv: KeyedVectors) -> np.ndarray:
    """A model's embedding ``matrix`` with rows appended for ``new_chars`` (ids after the
    model's own, which keep theirs), placed in the model's vector space: a linear map from
    ``kv`` (vectors trained on the new text) to the model's rows is fitted by ridge
    regression on the characters both know, and applied to the new characters' vectors.
    Where that cannot be fitted (fewer than 10 shared characters) or ``kv`` lacks a character,
    the new row is the model's unknown-character row (the mean character)."""
    rows = np.repeat(matrix[OOV_ID][None, :], len(new_chars), axis=0).astype(np.float32)
    shared = [c for c in vocab.chars if c in kv.key_to_index]
    mapped = [i for i, c in enumerate(new_chars) if c in kv.key_to_index]
    if len(shared) >= 10 and mapped:
        source = kv[shared].astype(np.float64)
        target = matrix[[vocab.id_of(c) for c in shared]].astype(np.float64)
        mean_s, mean_t = source.mean(axis=0), target.mean(axis=0)
        x, y = source - mean_s, target - mean_t
        weights = np.linalg.solve(x.T @ x + RIDGE * len(shared) * np.eye(x.shape[1]), x.T @ y)
        rows[mapped] = (kv[[new_chars[i] for i in mapped]] - mean_s) @ weights + mean_t
    return np.concatenate([matrix, rows]).astype(np.float32)
