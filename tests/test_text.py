import numpy as np

from siamsearch.text import OOV_ID, PAD_ID, Vocabulary, normalize, pad


def test_normalize_strips_whitespace_and_bom_characters():
    assert normalize("\ufeff  退款\ufeff多久 \r\n") == "退款多久"


def test_vocabulary_orders_by_frequency_then_code_point():
    vocab = Vocabulary.fit(["bba", "cb"])
    assert vocab.chars == ["b", "a", "c"]
    assert len(vocab) == 5  # padding + OOV + 3 characters


def test_unknown_characters_map_to_the_oov_id_and_keep_their_place():
    vocab = Vocabulary.fit(["退款"])
    assert vocab.ids("退X款", 10) == [vocab.ids("退", 1)[0], OOV_ID, vocab.ids("款", 1)[0]]


def test_no_lower_casing_every_character_is_a_token():
    vocab = Vocabulary.fit(["Ab"])
    assert vocab.ids("ab", 10)[0] == OOV_ID


def test_long_texts_keep_their_first_max_length_characters():
    vocab = Vocabulary.fit(["abcdef"])
    assert vocab.ids("abcdef", 3) == vocab.ids("abc", 10)


def test_pad_right_pads_with_zero():
    out = pad([[5, 6, 7], [8]])
    assert out.dtype == np.int32
    assert out.tolist() == [[5, 6, 7], [8, PAD_ID, PAD_ID]]


def test_length_sorted_batches_cover_every_row_once_shortest_first_ties_in_order():
    from siamsearch.text import length_sorted_batches

    rows = [[1, 2, 3], [1], [1, 2], [4], [1, 2, 3, 4], [5, 6]]
    batches = length_sorted_batches(rows, 4)
    assert [b.tolist() for b in batches] == [[1, 3, 2, 5], [0, 4]]
