"""Training the Siamese network on labelled pairs (the MaLSTM recipe, and objectives for search).

Recipe: character vocabulary from the training pairs; frozen 300-d character vectors
(gensim CBOW trained on the training sentences unless a file is given); shared BiLSTM
encoder; exp(-L1) head; binary cross-entropy; Nadam (learning rate 0.002, the Keras 2
default the recipe ran with); 20 epochs; batch 512.

Objectives (``TrainConfig.objective``); the model and its score exp(-L1) are the same for all:

``bce``
    The recipe: binary cross-entropy of exp(-L1) against each pair's 0/1 label. It teaches
    a pair classifier; sentences it never saw as a negative pair can land close together.
``contrastive``
    In-batch negatives, for search: only positive pairs are used, and each sentence's
    partner must out-score every other sentence of the batch. The loss is the cross-entropy
    of a softmax over the batch of -L1/temperature (both directions, averaged), i.e. with
    temperature 1 the softmax of the product's own scores exp(-L1). Sentences that the
    positive pairs link to the same meaning (``data.paraphrase_groups``) are not counted as
    negatives of each other.
``both``
    All labelled pairs: the recipe's binary cross-entropy on every pair plus the in-batch
    loss on the positive pairs, whose candidates then include the partners of negative
    pairs (hard negatives: the labelled "looks alike, means something else").
``margin``
    All labelled pairs: the in-batch loss on the positive pairs plus, on every pair, the
    logistic loss of (margin - L1) / scale, with the margin and scale learned. Unlike the
    recipe's cross-entropy it does not pull a positive pair towards distance 0, only below
    the margin, and a negative above it: one threshold then separates the pairs, which
    the in-batch loss alone does not ask for. Without validation pairs, the decision
    threshold is exp(-margin).

``hard_negatives`` (in-batch objectives): each pair also brings sentences labelled as
negatives of its paraphrase group into the batch as candidates; in BQ these are the
near-misses (same words, another meaning) that random in-batch sentences rarely are.
``char_mask``: training characters are replaced by the unknown-character id at random, a
new draw each batch, so that the encoder cannot lean on any one character of a sentence it
has seen many times (BQ's 100,000 training pairs hold about 23,000 distinct sentences).
``average``: validation, early stopping and the saved model use a moving average of the
weights over the training steps, which generalises better than the last step's weights.

Teacher (``train(teacher=...)``, ``teacher.py``): the student, our shared encoder, also learns
the similarity structure of a pretrained sentence encoder on every distinct sentence of the
pairs and of ``unlabelled`` text. Each sentence is an anchor once an epoch, batched beside one
of its ``neighbours`` nearest sentences by the teacher (mined once, ``teacher.nearest_neighbours``)
and unrelated ones; the loss (``trainer.distillation_loss``, weighted by ``distill_weight``) is
the KL divergence from the teacher's softmax over cosine / ``teacher_temperature`` to the
student's over -L1 times a learned scale. Its batches are interleaved at random with the pair
objective's. The teacher's vectors are computed once per sentence (``teacher.TeacherCache``);
nothing of the teacher is stored in the model or needed to encode.

Architecture (``TrainConfig.architecture``, ``architectures.ARCHITECTURES``): the shared
encoder's network and its sizes (``encoder_settings``); the recipe's BiLSTM by default.

Fine-tuning (``train(init=encoder)``): training starts from a model's vocabulary, character
vectors and network weights instead of from scratch (its architecture and sizes are the model's).
Characters the model has never seen join the vocabulary when they occur at least
``vectors.NEW_CHAR_MIN_COUNT`` times in the training text, with vectors mapped into the model's
space (``vectors.extend_embedding``); rarer ones are read as the unknown character. Both
counts are logged and recorded in the model's training record.

Speed: batches are bucketed by length, so a batch is padded only to its own longest
sentence, and a sentence that occurs several times in a batch is encoded once
(``batching.epoch_batches``); validation encodes each distinct validation sentence once per
epoch (``trainer.Validation``). Both compute the encoder with ``Architecture.forward`` (for the
BiLSTM: the same weights and outputs as the Keras model, 1.25-1.3x faster per step on a CPU;
Keras's own layers with a GPU). The training step is traced once for variable shapes and not
XLA-compiled (XLA recompiles for every shape: measured over 10× slower); ``trainer.fit``
runs it over the epochs.

Where things are: this module holds the settings and ``train``, a short sequence of named
steps; ``batching.py`` the batches (NumPy); ``trainer.py`` the Keras side (the objectives'
losses, the loop, the callbacks), imported only once ``train`` runs, after
``keras_runtime.load()``, so that importing this module loads no TensorFlow.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .architectures import DEFAULT_ARCHITECTURE, EMBEDDING_LAYER, Architecture, EncoderConfig, architecture_named
from .calibration import FIT_SAMPLE, report
from .checkpoint import Checkpoints, Resumed, inputs_digest
from .data import Pairs
from .encoder import Encoder
from .errors import InputError
from .export import from_keras
from .fusion_fit import fit_fusion
from .keras_runtime import load, require_training
from .metrics import best_threshold, pair_metrics
from .progress import Progress
from .storage import sha256_file
from .teacher import Teacher, TeacherCache, load_teacher, nearest_neighbours
from .text import Vocabulary, char_counts, is_blank, normalize
from .vectors import (
    NEW_CHAR_MIN_COUNT,
    WORD2VEC_SETTINGS,
    embedding_matrix,
    extend_embedding,
    load_vectors,
    train_char_vectors,
)

if TYPE_CHECKING:
    from .batching import DistillIds

log = logging.getLogger(__name__)

OBJECTIVES = ("bce", "contrastive", "both", "margin")
MONITORS = {"val_loss": "min", "val_auc": "max"}
"""What early stopping may watch, and which way is better."""

EpochCallback = Callable[[int, int, dict], None]
"""Called after each epoch with (epoch number from 1, total epochs, metrics incl. ``seconds``)."""


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting, the recipe's by default; ``PRESETS`` holds the recommended ones.
    Example: ``TrainConfig(epochs=5, objective="margin")``, ``replace(PRESETS["search"], epochs=3)``."""

    epochs: int = 20
    batch_size: int = 512
    max_length: int = 100
    seed: int = 0
    learning_rate: float = 0.002
    embedding_dim: int = 300
    objective: str = "bce"
    temperature: float = 1.0
    dropout: float = 0.5
    """After each BiLSTM (the recipe: 0.5); only active while training."""
    fine_tune_vectors: bool = False
    """Let training update the character vectors (the recipe keeps them frozen)."""
    hard_negatives: int = 0
    """contrastive, both, margin: each pair brings this many sentences labelled as negatives of
    its paraphrase group into the batch, as more candidates that every pair must out-score."""
    char_mask: float = 0.0
    """Share of training characters replaced by the out-of-vocabulary id, drawn anew each batch
    (0: off, as the recipe)."""
    patience: int = 0
    """With validation pairs: stop after this many epochs without a better ``monitor`` value and
    keep the best epoch's weights (0: run every epoch and keep the last, as the recipe does)."""
    monitor: str = "val_loss"
    """What early stopping watches: ``val_loss`` (lower is better) or ``val_auc`` (higher)."""
    average: float = 0.0
    """Momentum of a moving average of the weights over training steps, which validation and
    the saved model then use instead of the last step's weights (0: off, as the recipe). Off
    where training has too few steps for it (``AVERAGE_MIN_SPAN``)."""
    distill_weight: float = 1.0
    """With a teacher: the weight of the distillation loss against the pair objective's."""
    teacher_temperature: float = 0.05
    """With a teacher: the temperature of its softmax over cosine similarities."""
    neighbours: int = 8
    """With a teacher: each anchor's partner is drawn from its this many nearest sentences."""
    architecture: str | None = None
    """The shared encoder's network (``architectures.ARCHITECTURES``): None for the recipe's
    BiLSTM, or, with ``init``, the model's own."""
    encoder_settings: dict = field(default_factory=dict)
    """The architecture's sizes that differ from its defaults, e.g. ``{"lstm_units": [256, 64]}``."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_length", "embedding_dim"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1", argument=name)
        if self.patience < 0:
            raise InputError("patience must be 0 (off) or more", argument="patience")
        if self.hard_negatives < 0:
            raise InputError("hard_negatives must be 0 (off) or more", argument="hard_negatives")
        if self.hard_negatives and self.objective == "bce":
            in_batch = ", ".join(o for o in OBJECTIVES if o != "bce")
            raise InputError(f"hard_negatives needs an in-batch objective ({in_batch}), not bce",
                             argument="hard_negatives")
        if self.neighbours < 1:
            raise InputError("neighbours must be at least 1", argument="neighbours")
        for name in ("learning_rate", "temperature", "teacher_temperature", "distill_weight"):
            if getattr(self, name) <= 0:
                raise InputError(f"{name} must be positive", argument=name)
        for name in ("dropout", "char_mask", "average"):
            if not 0 <= getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 0 and below 1", argument=name)
        if self.objective not in OBJECTIVES:
            raise InputError(f"objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}",
                             argument="objective")
        if self.monitor not in MONITORS:
            raise InputError(f"monitor must be one of {', '.join(MONITORS)}, not {self.monitor!r}", argument="monitor")
        if self.encoder_settings or self.architecture is not None:
            self.network()  # an unknown architecture or setting fails here, before any work

    def network(self) -> Architecture:
        """The architecture these settings ask for (the recipe's BiLSTM when none is named).
        Example: ``TrainConfig(architecture="cnn", encoder_settings={"filters": 128}).network()``."""
        try:
            return architecture_named(self.architecture or DEFAULT_ARCHITECTURE, self.encoder_settings)
        except ValueError as e:
            raise InputError(str(e), argument="architecture") from None


PRESETS: dict[str, TrainConfig] = {
    "recipe": TrainConfig(),
    "search": TrainConfig(objective="margin", temperature=0.5, dropout=0.2, char_mask=0.3, patience=3,
                          monitor="val_auc", average=0.998),
    "classify": TrainConfig(dropout=0.2, fine_tune_vectors=True, patience=3, epochs=40),
    "general": TrainConfig(objective="margin", temperature=0.5, dropout=0.2, char_mask=0.3, monitor="val_auc",
                           average=0.998, epochs=8),
}
"""Named configurations (docs/benchmarks.md has their numbers). ``recipe``: the MaLSTM recipe
as published (also ``TrainConfig()``). ``search``: the BQ model's settings (shipped until 2026-12-01), chosen on
BQ dev (the margin objective with masked characters, early stopping on dev ROC-AUC, averaged
weights); the best pair classifier for sentences unlike the training ones, and within 0.003
MRR@10 of the best variant on dev for retrieval.
``classify``: the recipe's pair loss with more capacity (fine-tuned vectors, dropout 0.2),
the best pair classifier when the sentences to judge resemble the training sentences (BQ's
seed split). ``general``: the shipped model's settings: ``search`` for 8 epochs, every one
kept (early stopping on one domain's validation pairs would choose for that domain), trained
with ``teacher="use-m3"`` on general text (``bench/general_data.py``). Early stopping needs
validation pairs; without them every epoch runs."""


POOR_CALIBRATION = 0.10
"""Above this expected calibration error on the validation pairs, training warns."""

AVERAGE_MIN_SPAN = 5
"""Weight averaging needs at least this many times its span, 1 / (1 - momentum), of planned
training steps: Keras's average starts at the first step's weights, which still weigh
momentum**steps at the end (0.998 over BQ's 3,920 steps: 0.04 %, but over 1,000 pairs
× 20 epochs, 40 steps: 92 %)."""


def applied_average(config: TrainConfig, steps: int) -> float:
    """``config.average``, or 0 (off, and logged) where training has too few steps for it."""
    needed = math.ceil(AVERAGE_MIN_SPAN / (1 - config.average) - 1e-9)  # 1e-9: 5 / (1 - 0.9) is 50.000...01
    if config.average and steps < needed:
        log.info("not averaging the weights: %s training steps, fewer than the %s that momentum %g needs; "
                 "use a smaller average", f"{steps:,}", f"{needed:,}", config.average)
        return 0.0
    return config.average


def _pairs_used(pairs: Pairs, valid: Pairs | None, config: TrainConfig) -> Pairs:
    """The training pairs the objective uses, or an InputError if they (or ``valid``) cannot serve it."""
    for given in (pairs, valid):
        if given is not None and given.graded:
            raise InputError(f"{given.source or 'pairs'}: graded labels (scores such as 0-5); training needs 0 and 1 "
                             "labels: map the scores to 0 and 1 first", path=given.source or None)
    used = pairs if config.objective != "contrastive" else pairs.subset(pairs.positive)
    if not len(used):
        raise InputError(f"{pairs.source or 'training pairs'}: no positive pairs, which the contrastive "
                         "objective needs", path=pairs.source or None)
    if valid is not None and config.patience and config.monitor == "val_auc" and len(set(valid.positive)) < 2:
        raise InputError(f"{valid.source or 'validation pairs'}: early stopping on val_auc needs both positive and "
                         "negative pairs; set monitor to val_loss", path=valid.source or None, argument="monitor")
    return used


def _character_vectors(texts: list[str], vectors: str | Path | None, config: TrainConfig, dim: int):
    """The character vectors (gensim KeyedVectors), trained on ``texts`` unless a file is given,
    and where they came from."""
    if vectors is None:
        log.info("training %s-d character vectors with gensim on %s sentences", dim, f"{len(texts):,}")
        kv = train_char_vectors(texts, dim, config.seed)
        return kv, {"trained": "gensim Word2Vec", "dim": dim, **WORD2VEC_SETTINGS}
    kv = load_vectors(vectors)
    return kv, {"file": Path(vectors).name, "dim": kv.vector_size, "rows": len(kv)}


def _starting_point(texts: list[str], vectors: str | Path | None, config: TrainConfig, init: Encoder | None):
    """The vocabulary, the embedding matrix, the network, its layers' weights to start from
    by layer name (None: fresh) and what the training record says of them: fitted on
    ``texts``, or ``init``'s extended with the characters it lacks (the rule in the module
    docstring)."""
    if init is None:
        vocab = Vocabulary.fit(texts)
        kv, source = _character_vectors(texts, vectors, config, config.embedding_dim)
        return vocab, embedding_matrix(vocab, kv, config.seed), config.network(), None, {"vectors": source}
    if vectors is not None:
        raise InputError("init starts from the model's own character vectors; a vectors file cannot be given with it",
                         argument="init")
    network = init.config.architecture
    if (config.architecture is not None or config.encoder_settings) and config.network() != network:
        raise InputError(f"init starts from the model's own network ({network.name}, "
                         f"{network.settings()}); leave the architecture and its settings out", argument="init")
    model = init.keras_model()
    matrix = model.get_layer(EMBEDDING_LAYER).get_weights()[0]
    counts = char_counts(texts)
    unseen = [c for c in counts if c not in init.vocab]
    new = sorted((c for c in unseen if counts[c] >= NEW_CHAR_MIN_COUNT), key=lambda c: (-counts[c], c))
    if new:
        kv = train_char_vectors(texts, matrix.shape[1], config.seed)
        matrix = extend_embedding(matrix, init.vocab, new, kv)
    log.info("starting from model %s: %s new characters added to its %s, %s seen fewer than %s times read as "
             "unknown", init.fingerprint[:12], f"{len(new):,}", f"{len(init.vocab.chars):,}",
             f"{len(unseen) - len(new):,}", NEW_CHAR_MIN_COUNT)
    record = {"init": {"fingerprint": init.fingerprint, "characters": len(init.vocab.chars),
                       "new_characters": len(new), "unknown_characters": len(unseen) - len(new),
                       "new_char_min_count": NEW_CHAR_MIN_COUNT}}
    weights = {layer.name: layer.get_weights() for layer in model.layers
               if layer.weights and layer.name != EMBEDDING_LAYER}
    return Vocabulary(init.vocab.chars + new), matrix, network, weights, record


def _distillation(texts: list[str], vocab: Vocabulary, teacher: Teacher, config: TrainConfig):
    """The distinct sentences of ``texts`` as ``DistillIds`` (ids, teacher vectors, neighbours)
    and the training record's ``teacher`` entry."""
    from .batching import DistillIds

    distinct = list(dict.fromkeys(normalize(t) for t in texts))
    started = time.perf_counter()
    cache = TeacherCache(teacher)
    done, step = 0, max(1, len(distinct) // 10)

    def progress(n: int) -> None:  # only sentences the cache lacks reach the teacher
        nonlocal done
        done += n
        if done // step > (done - n) // step:
            log.info("teacher %s: encoded %s new sentences (%.0f/s)", teacher.name, f"{done:,}",
                     done / (time.perf_counter() - started))

    vectors = cache.vectors(distinct, progress)
    neighbours = nearest_neighbours(vectors, config.neighbours, config.seed)
    seconds = time.perf_counter() - started
    log.info("teacher %s: %s sentences (%s encoded, the rest cached in %s) and their %s nearest neighbours in %.1f s",
             teacher.name, f"{len(distinct):,}", f"{cache.computed:,}", cache.path, config.neighbours, seconds)
    record = {"name": teacher.name, "version": teacher.version, "sentences": len(distinct),
              "temperature": config.teacher_temperature, "neighbours": config.neighbours,
              "weight": config.distill_weight, "seconds": round(seconds, 1)}
    return DistillIds([vocab.ids(t, config.max_length) for t in distinct], vectors, neighbours), record


def _train_encoder(used: Pairs, pairs: Pairs, valid: Pairs | None, vocab: Vocabulary, matrix: np.ndarray,
                   network: Architecture, weights: dict | None, distill: DistillIds | None, config: TrainConfig,
                   on_epoch_end: EpochCallback | None, progress: Progress | None, checkpoints: Checkpoints | None,
                   resumed: Resumed | None):
    """Build the encoder (``network`` over ``matrix`` and, when fine-tuning, its layers'
    ``weights``) and its trainer, and run the epochs. Returns the Keras encoder, its config, the trainer, the
    epochs' history, the epoch kept and whether weights were averaged."""
    keras = load()
    from .batching import PairIds, epoch_batches, mixed_epoch
    from .model import build_encoder
    from .trainer import AveragedWeights, EarlyStopping, EpochReporter, Trainer, Validation, fit

    enc_config = EncoderConfig(vocab_size=len(vocab), embedding_dim=matrix.shape[1], architecture=network,
                               max_length=config.max_length, dropout=config.dropout)
    model = build_encoder(enc_config)
    model.get_layer(EMBEDDING_LAYER).set_weights([matrix])
    model.get_layer(EMBEDDING_LAYER).trainable = config.fine_tune_vectors
    for name, layer_weights in (weights or {}).items():
        model.get_layer(name).set_weights(layer_weights)
    trainer = Trainer(model, network, config.objective, config.temperature,
                      config.distill_weight if distill else 0.0)
    table = PairIds.of(used, vocab, config.max_length, negatives=pairs if config.hard_negatives else None)
    pair_steps = -(-len(table.labels) // config.batch_size)
    distill_steps = distill.batch_count(config.batch_size) if distill else 0
    average = applied_average(config, steps=config.epochs * (pair_steps + distill_steps))
    averaging = {"use_ema": True, "ema_momentum": average} if average else {}
    trainer.compile(optimizer=keras.optimizers.Nadam(config.learning_rate, **averaging))

    rng = np.random.default_rng(config.seed)
    history: list[dict] = []
    callbacks: list = [AveragedWeights(trainer)] if average else []
    if valid is not None:
        callbacks.append(Validation(trainer, PairIds.of(valid, vocab, config.max_length), config.batch_size))
    callbacks.append(EpochReporter(config.epochs, history, on_epoch_end))
    stopper = None
    if valid is not None and config.patience:
        stopper = EarlyStopping(config.monitor, patience=config.patience,
                                                mode=MONITORS[config.monitor], restore_best_weights=True)
        callbacks.append(stopper)

    def batches(rng: np.random.Generator):
        pair_batches = epoch_batches(table, config.batch_size, rng, group_shared=config.objective == "bce",
                                     hard_negatives=config.hard_negatives, char_mask=config.char_mask)
        if not distill:
            return pair_batches
        return mixed_epoch(pair_batches, pair_steps, distill.batches(config.batch_size, rng, config.teacher_temperature,
                                                                     config.char_mask), distill_steps, rng)

    steps = pair_steps + distill_steps
    on_batch = None if progress is None else (lambda epoch: progress(f"epoch {epoch + 1}/{config.epochs}", 1, steps))
    fit(trainer, batches, config.epochs, callbacks, rng, on_batch, checkpoints, resumed)
    kept = len(history) if stopper is None else stopper.best_epoch + 1  # the epoch whose weights it restored
    return model, enc_config, trainer, history, kept, bool(average)


def _set_threshold_and_match(encoder: Encoder, trainer, pairs: Pairs, valid: Pairs | None,
                             config: TrainConfig) -> None:
    """The decision threshold: the best accuracy on ``valid``, else the margin objective's
    learned margin, else the default (0.5); with ``valid``, its metrics at that threshold.
    The match probability (``calibration.py``) is fitted on ``valid``, else on a sample of the
    training pairs (recorded as not held out); the hybrid fusion (``fusion_fit.py``) on
    ``valid`` only, since on training pairs the model's side would look better than it is."""
    if valid is not None:
        scores = encoder.pair_scores(valid)
        encoder.threshold = best_threshold(scores, valid.labels)
        encoder.metrics["valid"] = {"file": Path(valid.source).name,
                                    **pair_metrics(scores, valid.labels, encoder.threshold)}
        if len(set(valid.labels.tolist())) == 2:
            calibration = encoder.calibrate(valid, held_out=True, scores=scores)
            error = report(calibration, scores, valid.labels)["ece"]
            encoder.metrics["valid"]["calibration_error"] = error
            if error > POOR_CALIBRATION:
                log.warning("the match probability is poorly calibrated on the validation pairs (expected "
                            "calibration error %.2f, above %.2f): its percentages can be far from how often hits "
                            "match; train longer or on more pairs", error, POOR_CALIBRATION)
        fusion, encoder.metrics["valid"]["fusion"] = fit_fusion(encoder, valid, config.seed)
        encoder.fusion = fusion or encoder.fusion
        return
    if config.objective == "margin":
        encoder.threshold = float(np.exp(-float(trainer.margin.numpy())))
    sample = pairs.subset(np.sort(np.random.default_rng(config.seed).permutation(len(pairs))[:FIT_SAMPLE]))
    if len(set(sample.labels.tolist())) == 2:
        encoder.calibrate(sample, held_out=False)


def _checkpoints(checkpoint_dir: str | Path | None, resume: bool, pairs: Pairs, valid: Pairs | None,
                 unlabelled: Sequence[str], config: TrainConfig, vectors: str | Path | None, init: Encoder | None,
                 teacher: Teacher | None) -> tuple[Checkpoints | None, Resumed | None]:
    """The run's checkpoint folder (None without one) and, with ``resume``, the state saved there."""
    if checkpoint_dir is None:
        if resume:
            raise InputError("resume needs the checkpoint folder of the run to continue", argument="checkpoint_dir")
        return None, None
    digest = inputs_digest(
        pairs.left, pairs.right, pairs.labels, *((valid.left, valid.right, valid.labels) if valid else ()),
        list(unlabelled), asdict(config), sha256_file(Path(vectors)) if vectors else None,
        init.fingerprint if init else None, [teacher.name, teacher.version] if teacher else None)
    checkpoints = Checkpoints(Path(checkpoint_dir), digest)
    if not resume:
        checkpoints.check_new()
        return checkpoints, None
    return checkpoints, checkpoints.read()


def train(pairs: Pairs, valid: Pairs | None = None, config: TrainConfig = TrainConfig(),
          vectors: str | Path | None = None, on_epoch_end: EpochCallback | None = None,
          teacher: str | Teacher | None = None, unlabelled: Sequence[str] = (),
          init: Encoder | None = None, progress: Progress | None = None,
          checkpoint_dir: str | Path | None = None, resume: bool = False) -> Encoder:
    """Train the Siamese network and return its shared encoder (save it with ``Encoder.save``).

    ``teacher``: a teacher's name (``teacher.TEACHERS``) or object, whose similarity structure
    the encoder also learns on the pairs' sentences and ``unlabelled`` (any text: the corpus
    to index, general text). ``init``: a model to fine-tune instead of starting from scratch.
    ``progress(stage, n, total)`` is told of every batch, stage ``"epoch E/N"`` (as
    ``SearchIndex.build`` tells its stages), ``on_epoch_end`` of every epoch's metrics.
    ``checkpoint_dir``: a folder for a resumable state, written at every epoch and when the
    process is asked to stop (``checkpoint.py``; the stop raises ``TrainingInterrupted``);
    ``resume``: continue the run saved there, given the same inputs.

    Example: ``train(read_pairs("pairs.tsv"), valid=read_pairs("dev.tsv"), config=PRESETS["search"])``;
    ``train(pairs, config=cfg, checkpoint_dir="ckpt")`` and, after a stop,
    ``train(pairs, config=cfg, checkpoint_dir="ckpt", resume=True)``.
    """
    started = time.perf_counter()
    require_training()  # before any work: the train extra may be missing
    used = _pairs_used(pairs, valid, config)
    if unlabelled and teacher is None:
        raise InputError("unlabelled text is learned from a teacher; name one, or leave the text out",
                         argument="unlabelled")
    teacher = load_teacher(teacher) if isinstance(teacher, str) else teacher  # fails fast when its extra is missing
    checkpoints, resumed = _checkpoints(checkpoint_dir, resume, pairs, valid, unlabelled, config, vectors, init,
                                        teacher)
    texts = pairs.left + pairs.right + [t for t in unlabelled if not is_blank(t)]
    load().utils.set_random_seed(config.seed)  # training starts: TensorFlow is loaded here, not on import
    if resumed is None:
        vocab, matrix, network, weights, start_record = _starting_point(texts, vectors, config, init)
        if checkpoints is not None:
            checkpoints.start = {"vocab": vocab.chars, "encoder": EncoderConfig(
                len(vocab), matrix.shape[1], network).to_dict(), "record": start_record}
    else:  # the vectors and weights come from the checkpoint: only their shapes are needed here
        vocab, saved = Vocabulary(checkpoints.start["vocab"]), EncoderConfig.from_dict(checkpoints.start["encoder"])
        matrix, network, weights = np.zeros((len(vocab), saved.embedding_dim), np.float32), saved.architecture, None
        start_record = checkpoints.start["record"]
    distill, teacher_record = _distillation(texts, vocab, teacher, config) if teacher else (None, None)
    model, enc_config, trainer, history, kept, averaged = _train_encoder(
        used, pairs, valid, vocab, matrix, network, weights, distill, config, on_epoch_end, progress, checkpoints,
        resumed)
    encoder = from_keras(model, vocab, enc_config, history=history)
    _set_threshold_and_match(encoder, trainer, pairs, valid, config)
    encoder.training = {
        "settings": asdict(config),
        "pairs": {"file": Path(pairs.source).name, "n": len(pairs), "used": len(used)},
        "valid": None if valid is None else {"file": Path(valid.source).name, "n": len(valid)},
        "epoch_kept": kept,
        **start_record,
        "optimizer": "Nadam",
        "weights_averaged": averaged,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if checkpoints is not None:  # every process that trained it, and the seconds of all of them
        sittings = checkpoints.sittings_now(len(history))
        encoder.training["sittings"] = sittings
        encoder.training["seconds"] = round(encoder.training["seconds"] + sum(s["seconds"] for s in sittings[:-1]), 1)
    if teacher_record:
        encoder.training["teacher"] = {**teacher_record, "unlabelled": len(texts) - 2 * len(pairs)}
    if config.objective == "margin":
        encoder.training["learned"] = {"margin": float(trainer.margin.numpy()),
                                       "scale": float(np.exp(trainer.log_scale.numpy()))}
    return encoder
