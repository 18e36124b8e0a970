"""The demo: train on the bundled sample pairs, index the sample FAQ, answer sample queries.

It walks the path a user walks, on data written for the project (``sample/README.md``),
and leaves ``models/demo`` and ``indexes/demo`` behind to explore with the other commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .data import read_corpus, read_pairs
from .encoder import Encoder
from .search import BuildProgress, Hit, SearchIndex
from .training import EpochCallback, TrainConfig, train

SAMPLE_DIR = Path(__file__).parent / "sample"
SAMPLE_PAIRS = SAMPLE_DIR / "pairs.tsv"
SAMPLE_FAQ = SAMPLE_DIR / "faq.tsv"
SAMPLE_QUERIES = SAMPLE_DIR / "queries.txt"


@dataclass(frozen=True)
class DemoResult:
    encoder: Encoder
    index: SearchIndex
    model_dir: Path
    index_dir: Path
    results: list[tuple[str, list[Hit]]]


def run_demo(workdir: str | Path = ".", epochs: int = 20, k: int = 3,
             on_epoch_end: EpochCallback | None = None, progress: BuildProgress | None = None) -> DemoResult:
    workdir = Path(workdir)
    encoder = train(read_pairs(SAMPLE_PAIRS), config=TrainConfig(epochs=epochs), on_epoch_end=on_epoch_end)
    model_dir, index_dir = workdir / "models" / "demo", workdir / "indexes" / "demo"
    encoder.save(model_dir)
    faq = read_corpus(SAMPLE_FAQ, text_column="question")
    index = SearchIndex.build(faq.texts, encoder, ids=faq.ids, metadata=faq.metadata, progress=progress)
    index.save(index_dir)
    queries = [q for q in SAMPLE_QUERIES.read_text(encoding="utf-8").splitlines() if q.strip()]
    return DemoResult(encoder, index, model_dir, index_dir, list(zip(queries, index.search_batch(queries, k))))
