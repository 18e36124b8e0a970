"""Pair accuracy on BQ / CCKS 2018 and training speed: the recipe and the project's best settings.

    python bench/accuracy.py                  # every run below (about 35 min on 2 cores); writes docs/benchmarks.md
    python bench/accuracy.py --runs recipe-seed,naive-seed
    python bench/accuracy.py --render         # rewrite docs/ from bench/results/accuracy.json

Each run trains in its own process, so the peak memory reported is that run's own:

``recipe-seed``
    ``--preset recipe`` on bq/seed_train.tsv (80,000 pairs), with seed_test.tsv (20,000) as the
    per-epoch validation the recipe reported; accuracy at score 0.5, as the recipe measures it.
    Nothing is chosen on seed_test: every epoch runs and the last is kept.
``naive-seed``
    The same network, vectors and settings, trained the way the recipe's code trains it: every
    sentence padded to the longest training sentence, shuffled batches, ``fit`` on the
    two-input Siamese model, TensorFlow's default thread pools. ``--naive-epochs`` epochs
    (default 2; a full run takes most of an hour), so its 20-epoch time is projected.
``best-seed``
    ``--preset classify``, the project's best settings for the seed split: the recipe's pair
    loss with dropout 0.2 and fine-tuned character vectors, up to 40 epochs with early
    stopping (patience 3). The
    epoch and the threshold are chosen on the last 5,000 pairs of seed_train (held out, so
    it trains on 75,000), never on seed_test, which is scored once.
``recipe-standard``, ``best-standard``
    ``--preset recipe`` and ``--preset search`` on bq/train.tsv, with bq/dev.tsv as
    validation (the threshold for both, the epoch kept for ``search``); bq/test.tsv is scored
    once at that threshold. best-standard's model directory is what ships as the default.

Every model directory is left in bench/.work/accuracy/NAME.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
from report import RESULTS, add_output_options, machine, publish, render  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "bq"
MODELS = HERE / ".work" / "accuracy"  # each fast run's model directory, e.g. to ship best-standard
SEED_HOLDOUT = 75_000  # best-seed: the last 5,000 pairs of seed_train choose its epoch and threshold
RUNS = {  # name: (preset, train file, validation file, test file); "file[a:b]" = those rows
    "recipe-seed": ("recipe", "seed_train.tsv", "seed_test.tsv", "seed_test.tsv"),
    "naive-seed": ("recipe", "seed_train.tsv", "seed_test.tsv", "seed_test.tsv"),
    "best-seed": ("classify", f"seed_train.tsv[:{SEED_HOLDOUT}]", f"seed_train.tsv[{SEED_HOLDOUT}:]", "seed_test.tsv"),
    "recipe-standard": ("recipe", "train.tsv", "dev.tsv", "test.tsv"),
    "best-standard": ("search", "train.tsv", "dev.tsv", "test.tsv"),
}
PUBLISHED = {  # what the recipe's authors and the literature report
    "seed": "recipe: 0.7956 test accuracy (0.8125 train) after 20 epochs, about 90 s per epoch",
    "standard": "char BiLSTM 70.0, ESIM 81.2, Siamese BERT 83.5, BERT 84.2 (YJiangcm/Chinese-sentence-pair-modeling)",
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read(spec: str):
    """``file`` or ``file[a:b]`` (those rows) under the BQ folder."""
    from siamsearch import read_pairs

    name, _, rows = spec.partition("[")
    pairs = read_pairs(DATA / name)
    if not rows:
        return pairs
    start, stop = (int(x) if x else None for x in rows.rstrip("]").split(":"))
    return pairs.subset(slice(start, stop))


def fast(name: str) -> dict:
    """A run through ``siamsearch.train``: the product's own training path."""
    from siamsearch import PRESETS, train
    from siamsearch.evaluation import PairEvaluator

    preset, train_file, valid_file, test_file = RUNS[name]
    started = time.perf_counter()
    encoder = train(read(train_file), read(valid_file), PRESETS[preset],
                    on_epoch_end=lambda e, n, logs: log(f"  {name} epoch {e}/{n} {json.dumps(logs)}"))
    seconds = time.perf_counter() - started
    encoder.save(MODELS / name)
    # the recipe's seed-split validation file is its test file: nothing may be chosen on it
    threshold = 0.5 if valid_file == test_file else encoder.threshold
    return {"train_seconds": seconds, "epochs": encoder.history, "epoch_kept": encoder.training["epoch_kept"],
            "valid": encoder.metrics.get("valid"),
            "test": {"file": test_file, **PairEvaluator(read(test_file))(encoder, threshold)}}


def naive(name: str, epochs: int) -> dict:
    """The recipe's own way of training: fixed-length padding, ``fit`` on the Siamese model."""
    os.environ["TF_NUM_INTEROP_THREADS"] = os.environ["TF_NUM_INTRAOP_THREADS"] = "0"  # TensorFlow's defaults
    from siamsearch import PRESETS
    from siamsearch.architectures import EMBEDDING_LAYER, EncoderConfig
    from siamsearch.keras_runtime import load

    keras = load()
    from siamsearch.model import build_encoder, build_siamese
    from siamsearch.text import Vocabulary
    from siamsearch.vectors import embedding_matrix, train_char_vectors

    preset, train_file, valid_file, _ = RUNS[name]
    settings = PRESETS[preset]
    started = time.perf_counter()
    pairs, valid = read(train_file), read(valid_file)
    keras.utils.set_random_seed(settings.seed)
    vocab = Vocabulary.fit(pairs.left + pairs.right)
    kv = train_char_vectors(pairs.left + pairs.right, settings.embedding_dim, settings.seed)
    length = min(settings.max_length, max(len(t) for t in pairs.left + pairs.right))

    def padded(texts: list[str]):
        return keras.utils.pad_sequences([vocab.ids(t, length) for t in texts], maxlen=length, padding="post")

    encoder = build_encoder(EncoderConfig(vocab_size=len(vocab), embedding_dim=kv.vector_size,
                                          max_length=settings.max_length, dropout=settings.dropout))
    encoder.get_layer(EMBEDDING_LAYER).set_weights([embedding_matrix(vocab, kv, settings.seed)])
    siamese = build_siamese(encoder)
    siamese.compile(optimizer=keras.optimizers.Nadam(settings.learning_rate), loss="binary_crossentropy",
                    metrics=[keras.metrics.BinaryAccuracy(name="accuracy")])  # "accuracy" picks the wrong one
    history: list[dict] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            history.append({"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()},
                            "seconds": round(time.perf_counter() - self.started, 2)})
            log(f"  {name} epoch {epoch + 1}/{epochs} {json.dumps(history[-1])}")

    siamese.fit([padded(pairs.left), padded(pairs.right)], pairs.labels, batch_size=settings.batch_size,
                epochs=epochs, validation_data=([padded(valid.left), padded(valid.right)], valid.labels),
                shuffle=True, verbose=0, callbacks=[Timer()])
    return {"train_seconds": time.perf_counter() - started, "epochs": history, "padded_length": length}


def _child(name: str, naive_epochs: int, queue) -> None:
    result = naive(name, naive_epochs) if name.startswith("naive") else fast(name)
    queue.put({**result, "peak_rss_mb": _peak_mb()})


def run(name: str, naive_epochs: int) -> dict:
    """``name`` in a fresh process (spawned: TensorFlow's threads start unconfigured)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(name, naive_epochs, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def _accuracy(h: dict) -> str:
    """Train / validation accuracy at 0.5: only where the objective fits scores to the labels."""
    if "accuracy" not in h:
        return "—"
    return f"{h['accuracy']:.4f}" + (f" / {h['val_accuracy']:.4f}" if "val_accuracy" in h else "")


def _value(h: dict, key: str) -> str:
    return f"{h[key]:.4f}" if key in h else "—"


def markdown(results: dict) -> str:
    runs, epochs = results["runs"], 20
    lines = [
        "<!-- accuracy-benchmarks:start (written by bench/accuracy.py; do not edit by hand) -->",
        "## Pair accuracy on BQ / CCKS 2018, and training speed",
        "",
        f"Command: {' then '.join(f'`{c}`' for c in results['commands'])} on {results['machine']}; "
        f"{results['seconds'] / 60:.1f} min in all. What each run is: the docstring of bench/accuracy.py.",
        "",
        "| run | train → test | settings | test accuracy | threshold | ROC-AUC | epochs run / kept | train s "
        "| peak RSS MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in runs.items():
        if "test" not in r:
            continue
        preset, train_file, valid_file, _ = RUNS[name]
        t = r["test"]
        lines.append(f"| {name} | {train_file} → {t['file']} (valid: {valid_file}) | `--preset {preset}` "
                     f"| **{t['accuracy']:.4f}** | {t['threshold']:.4g} "
                     f"| {t['roc_auc']:.4f} | {len(r['epochs'])} / {r['epoch_kept']} | {r['train_seconds']:.0f} "
                     f"| {r['peak_rss_mb']:.0f} |")
    lines += ["", f"Published: seed split, {PUBLISHED['seed']}; standard split, {PUBLISHED['standard']}."]
    if "recipe-seed" in runs and "naive-seed" in runs:
        fast_run, slow = runs["recipe-seed"], runs["naive-seed"]
        fast_epoch = sum(h["seconds"] for h in fast_run["epochs"]) / len(fast_run["epochs"])
        slow_epoch = sum(h["seconds"] for h in slow["epochs"]) / len(slow["epochs"])
        lines += [
            "", "**Training speed, the recipe on seed_train** (80,000 pairs, batch 512, each epoch including the "
            "validation pass over seed_test's 20,000 pairs):", "",
            "| way | epochs measured | s per epoch | 20 epochs, s | whole run, s | peak RSS MB |",
            "|---|---:|---:|---:|---:|---:|",
            "| siamsearch (length-bucketed, each distinct sentence of a batch encoded once, `encoder_forward`, "
            f"inter-op 2 / intra-op 1) "
            f"| {len(fast_run['epochs'])} | {fast_epoch:.1f} | {fast_epoch * epochs:.0f} "
            f"| {fast_run['train_seconds']:.0f} "
            f"| {fast_run['peak_rss_mb']:.0f} |",
            f"| naive (every sentence padded to {slow['padded_length']}, `fit` on the Siamese model, default threads) "
            f"| {len(slow['epochs'])} | {slow_epoch:.1f} | {slow_epoch * epochs:.0f} (projected) "
            f"| {slow['train_seconds']:.0f} ({len(slow['epochs'])} epochs) | {slow['peak_rss_mb']:.0f} |",
            "", f"Per epoch, siamsearch is **{slow_epoch / fast_epoch:.1f}×** faster than the naive run; the whole "
            f"20-epoch recipe run (vectors, training, validation, the final scoring) took "
            f"{fast_run['train_seconds'] / 60:.1f} min (target ≤ 6).",
        ]
    for name, r in runs.items():
        lines += ["", f"**Per epoch, {name}** (train accuracy / validation accuracy at 0.5, where the objective "
                  "fits scores to the labels; validation ROC-AUC and loss):", "",
                  "| epoch | accuracy | val ROC-AUC | val loss | s |", "|---:|---:|---:|---:|---:|"]
        lines += [f"| {h['epoch']} | {_accuracy(h)} | {_value(h, 'val_auc')} | {_value(h, 'val_loss')} "
                  f"| {h['seconds']:.1f} |" for h in r["epochs"]]
    lines += ["", "<!-- accuracy-benchmarks:end -->"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of: " + ", ".join(RUNS))
    parser.add_argument("--naive-epochs", type=int, default=2)
    parser.add_argument("--keep", action="store_true",
                        help="keep the saved results of the runs not named in --runs (to redo some)")
    add_output_options(parser, "accuracy")
    args = parser.parse_args()
    if args.render:
        render("accuracy", markdown)
        return
    names = [n for n in args.runs.split(",") if n]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        parser.error(f"unknown run {unknown[0]!r}; choose from {', '.join(RUNS)}")
    if not DATA.is_dir():
        parser.error(f"{DATA} not found: this benchmark needs the BQ corpus beside the project (../shared/data/bq)")
    started = time.perf_counter()
    runs = {}
    for name in names:
        log(f"{name}: training")
        runs[name] = run(name, args.naive_epochs)
        log(f"{name}: done in {runs[name]['train_seconds']:.0f} s"
            + (f", test accuracy {runs[name]['test']['accuracy']:.4f}" if "test" in runs[name] else ""))
    results = {"runs": runs, "commands": ["python " + shlex.join(sys.argv)], "seconds": time.perf_counter() - started,
               "machine": machine()}
    if args.keep and (RESULTS / "accuracy.json").exists():  # earlier runs of other names stay, and their time
        earlier = json.loads((RESULTS / "accuracy.json").read_text(encoding="utf-8"))
        results = {**results, "runs": {**earlier["runs"], **runs},
                   "commands": earlier["commands"] + results["commands"],
                   "seconds": earlier["seconds"] + results["seconds"]}
    publish("accuracy", results, markdown, write=not args.no_write)


if __name__ == "__main__":
    main()
