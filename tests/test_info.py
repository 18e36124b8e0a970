"""'siamsearch info' and siamsearch.info: what a model or index folder is, without reading its JSON by hand."""

import json

import pytest
from click.testing import CliRunner

from siamsearch import SearchIndex
from siamsearch.cli import main
from siamsearch.errors import IndexDirectoryError, InputError
from siamsearch.info import describe
from siamsearch.lexical import FORWARD_FILES, LEXICAL_FILES


def test_a_model_directory_is_described_from_its_own_record(sample_encoder, tmp_path):
    sample_encoder.save(tmp_path / "m")
    found = describe(tmp_path / "m")
    assert found["what"] == "model" and found["fingerprint"] == sample_encoder.fingerprint
    assert found["characters"] == len(sample_encoder.vocab.chars) and found["threshold"] == sample_encoder.threshold
    assert found["calibration"] == sample_encoder.calibration.to_dict()  # fitted on the training pairs, and says so
    assert found["training"]["pairs"]["n"] == sample_encoder.training["pairs"]["n"]
    assert found["epochs_run"] == len(sample_encoder.history)
    assert found["bytes"] == sum(f.stat().st_size for f in (tmp_path / "m").iterdir())
    text = CliRunner().invoke(main, ["info", str(tmp_path / "m")])
    assert text.exit_code == 0, text.output
    assert f"fingerprint {sample_encoder.fingerprint[:12]}" in text.output and "trained on" in text.output


def test_an_index_reports_kind_counts_tombstones_and_generations(sample_encoder, sample_faq, tmp_path):
    index = SearchIndex.build(sample_faq.texts, sample_encoder, ids=sample_faq.ids, kind="hnsw")
    index.save(tmp_path / "idx")
    index.remove(sample_faq.ids[:3])
    index.save(tmp_path / "idx")
    result = CliRunner().invoke(main, ["info", str(tmp_path / "idx"), "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["what"] == "index" and found["generation"] == 2
    assert found["index"]["kind"] == "hnsw" and "hnsw_m" in found["index"]
    assert (found["documents"], found["rows"], found["tombstones"]) == (len(sample_faq) - 3, len(sample_faq), 3)
    assert 2 in found["generations_on_disk"]
    assert found["encoder"]["fingerprint"] == sample_encoder.fingerprint
    assert set(found["files"]) == {"index.faiss", "vectors.npy", "documents.sqlite", *LEXICAL_FILES, *FORWARD_FILES}
    assert found["lexical"] is True
    text = CliRunner().invoke(main, ["info", str(tmp_path / "idx")])
    assert "tombstones 3" in text.output and "generation 2" in text.output
    assert "modes        dense, lexical, hybrid" in text.output


def test_anything_else_is_one_line_naming_the_path(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="neither a siamsearch model directory nor an index folder"):
        describe(tmp_path / "plain")
    result = CliRunner().invoke(main, ["info", str(tmp_path / "nope")])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [f"Error: {tmp_path / 'nope'}: no such "
                                                                            "file or directory"]


def test_a_damaged_index_is_reported_not_summarised(sample_encoder, sample_faq, tmp_path):
    SearchIndex.build(sample_faq.texts, sample_encoder, ids=sample_faq.ids).save(tmp_path / "idx")
    (tmp_path / "idx" / "manifest.json").write_text("{", encoding="utf-8")
    with pytest.raises(IndexDirectoryError, match="manifest.json is unreadable"):
        describe(tmp_path / "idx")


def test_encoders_and_indexes_say_what_they_are_in_their_repr(sample_encoder, sample_faq, tmp_path):
    assert repr(sample_encoder) == (f"Encoder(fingerprint={sample_encoder.fingerprint[:12]!r}, "
                                    f"characters={len(sample_encoder.vocab.chars):,}, dim=64, "
                                    f"threshold={sample_encoder.threshold:.4g})")
    index = SearchIndex.build(sample_faq.texts[:10], sample_encoder)
    assert repr(index) == (f"SearchIndex(documents=10, kind='flat', encoder={sample_encoder.fingerprint[:12]!r}, "
                           "unsaved)")
    index.save(tmp_path / "idx")
    assert repr(index).endswith(f"path={str(tmp_path / 'idx')!r}, generation=1)")
    hit = index.search(sample_faq.texts[0], 1)[0]
    assert repr(hit).startswith("Hit(rank=1, id='0', text=")


def test_the_package_declares_its_type_hints():
    from importlib.resources import files

    assert files("siamsearch").joinpath("py.typed").is_file()
