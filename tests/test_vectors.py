import logging

import numpy as np
import pytest

from siamsearch.errors import InputError
from siamsearch.text import OOV_ID, PAD_ID, Vocabulary
from siamsearch.vectors import embedding_matrix, load_vectors, train_char_vectors

from .conftest import shared_file

SENTENCES = ["怎么退货", "如何退款", "退款多久到账", "运费怎么算"]


def test_trained_vectors_are_reproducible_for_a_seed():
    a = train_char_vectors(SENTENCES, dim=16, seed=3)
    b = train_char_vectors(SENTENCES, dim=16, seed=3)
    assert a.index_to_key == b.index_to_key and np.array_equal(a.vectors, b.vectors)


@pytest.mark.parametrize("binary", [False, True])
def test_load_word2vec_text_and_binary(tmp_path, binary):
    kv = train_char_vectors(SENTENCES, dim=8)
    kv.save_word2vec_format(str(tmp_path / "v"), binary=binary)
    loaded = load_vectors(tmp_path / "v")
    assert loaded.index_to_key == kv.index_to_key and np.allclose(loaded.vectors, kv.vectors)


def test_truncated_text_file_with_bom_loads_complete_rows_and_warns(tmp_path, caplog):
    rows = [f"{c} " + " ".join(["0.5"] * 4) for c in "甲乙丙"]
    (tmp_path / "v.txt").write_bytes(("\ufeff10 4\n" + "\n".join(rows) + "\n丁 0.1 0.").encode())
    with caplog.at_level(logging.WARNING, logger="siamsearch"):
        kv = load_vectors(tmp_path / "v.txt")
    assert kv.index_to_key == ["甲", "乙", "丙"]
    assert "promises 10 vectors, 3 rows are complete (and it starts with a BOM)" in caplog.text


def test_the_real_truncated_vectors_file(caplog):
    with caplog.at_level(logging.WARNING, logger="siamsearch"):
        kv = load_vectors(shared_file("token_vec_300_truncated/token_vec_300.bin"))
    assert (len(kv), kv.vector_size) == (912, 300)
    assert "promises 20,028 vectors, 912 rows are complete" in caplog.text


@pytest.mark.parametrize("content", [b"", b"hello world\n", b"99999999 300\n\x00\x01garbage",
                                     b"3 4\n\xe4\xbd\xa0 \x00\x00"])
def test_garbage_vectors_files_are_clear_errors(tmp_path, content):
    (tmp_path / "v").write_bytes(content)
    with pytest.raises(InputError, match="word2vec"):
        load_vectors(tmp_path / "v")


def test_missing_vectors_file(tmp_path):
    with pytest.raises(InputError, match="no such vectors file"):
        load_vectors(tmp_path / "none.bin")


def test_embedding_matrix_rows(caplog):
    kv = train_char_vectors(["甲乙"], dim=4)
    vocab = Vocabulary(["甲", "乙", "丙"])  # 丙 has no vector
    with caplog.at_level(logging.WARNING, logger="siamsearch"):
        m = embedding_matrix(vocab, kv, seed=0)
    assert m.shape == (5, 4) and m.dtype == np.float32
    assert not m[PAD_ID].any()
    assert np.allclose(m[2], kv["甲"]) and np.allclose(m[3], kv["乙"])
    assert m[4].any() and "1 of 3 training characters have no vector" in caplog.text
    assert np.allclose(m[OOV_ID], m[2:].mean(axis=0))
