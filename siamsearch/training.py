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

Speed: batches are bucketed by length (pairs sorted by their longer side, ties re-drawn
every epoch, batch order shuffled), so a batch is padded only to its own longest sentence
instead of the corpus maximum, and a sentence that occurs several times in a batch is
encoded once (see ``_epoch_batches``); validation encodes each distinct validation sentence
once per epoch (``_Validation``). Both compute the encoder with ``model.encoder_forward``
(the same weights and outputs as the Keras model, 1.25-1.3x faster per step on a CPU;
Keras's own layers with a GPU). The training step is traced once for variable shapes and
not XLA-compiled (XLA recompiles for every shape: measured over 10× slower); ``_fit`` runs
it over the epochs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .data import Pairs, paraphrase_groups
from .encoder import Encoder, EncoderConfig
from .errors import InputError
from .evaluation import PairEvaluator, best_threshold, pair_metrics
from .model import EMBEDDING_LAYER, ManhattanSimilarity, build_encoder, encoder_forward, keras, ops, tf
from .text import OOV_ID, Vocabulary, length_sorted_batches, pad
from .vectors import WORD2VEC_SETTINGS, embedding_matrix, load_vectors, train_char_vectors

log = logging.getLogger(__name__)

OBJECTIVES = ("bce", "contrastive", "both", "margin")
MONITORS = {"val_loss": "min", "val_auc": "max"}
"""What early stopping may watch, and which way is better."""

EpochCallback = Callable[[int, int, dict], None]
"""Called after each epoch with (epoch number from 1, total epochs, metrics incl. ``seconds``)."""


@dataclass(frozen=True)
class TrainConfig:
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

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_length", "embedding_dim"):
            if getattr(self, name) < 1:
                raise InputError(f"{name.replace('_', '-')} must be at least 1")
        if self.patience < 0:
            raise InputError("patience must be 0 (off) or more")
        if self.hard_negatives < 0:
            raise InputError("hard-negatives must be 0 (off) or more")
        if self.hard_negatives and self.objective == "bce":
            raise InputError("hard-negatives needs an in-batch objective (contrastive, both or margin), not bce")
        for name in ("learning_rate", "temperature"):
            if getattr(self, name) <= 0:
                raise InputError(f"{name.replace('_', '-')} must be positive")
        for name in ("dropout", "char_mask", "average"):
            if not 0 <= getattr(self, name) < 1:
                raise InputError(f"{name.replace('_', '-')} must be at least 0 and below 1")
        if self.objective not in OBJECTIVES:
            raise InputError(f"objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")
        if self.monitor not in MONITORS:
            raise InputError(f"monitor must be one of {', '.join(MONITORS)}, not {self.monitor!r}")


PRESETS: dict[str, TrainConfig] = {
    "recipe": TrainConfig(),
    "search": TrainConfig(objective="margin", temperature=0.5, dropout=0.2, char_mask=0.3, patience=3,
                          monitor="val_auc", average=0.998),
    "classify": TrainConfig(dropout=0.2, fine_tune_vectors=True, patience=3, epochs=40),
}
"""Named configurations (docs/benchmarks.md has their numbers). ``recipe``: the MaLSTM recipe
as published (also ``TrainConfig()``). ``search``: the shipped model's settings, chosen on
BQ dev (the margin objective with masked characters, early stopping on dev ROC-AUC, averaged
weights); the best pair classifier for sentences unlike the training ones, and within 0.003
MRR@10 of the best variant on dev for retrieval.
``classify``: the recipe's pair loss with more capacity (fine-tuned vectors, dropout 0.2),
the best pair classifier when the sentences to judge resemble the training sentences (BQ's
seed split). Early stopping needs validation pairs; without them every epoch runs."""


def in_batch_loss(a, b, labels, left_groups, right_groups, temperature: float, hard=None, hard_groups=None):
    """Mean over positive pairs i of the cross-entropy of softmax_j(-L1(a_i, c_j)/temperature)
    at c_j = b_i, and the same from b_i's side, where a_i's candidates c_j are the b_j followed
    by the ``hard`` negatives (encoded, with their groups; there may be none), and b_i's are
    the a_j and the hard negatives. A candidate in the pair's own group other than its
    partner is left out of the softmax (it means the same, so it is not a negative)."""
    if hard is None:
        hard, hard_groups = ops.zeros((0, ops.shape(a)[1]), a.dtype), ops.zeros((0,), left_groups.dtype)

    def neg_l1(x, y):
        return -ops.sum(ops.abs(ops.expand_dims(x, 1) - ops.expand_dims(y, 0)), axis=-1) / temperature

    def same_group(x, y):
        return ops.equal(ops.expand_dims(x, 1), ops.expand_dims(y, 0))

    logits = neg_l1(a, b)
    n = ops.shape(logits)[0]
    paraphrase = ops.logical_and(same_group(left_groups, right_groups), ops.logical_not(ops.eye(n, dtype="bool")))
    logits = ops.where(paraphrase, -1e9, logits)
    targets = ops.arange(n)

    def cross_entropy(pair_logits, anchor, anchor_groups):
        with_hard = ops.concatenate([pair_logits, ops.where(same_group(anchor_groups, hard_groups), -1e9,
                                                             neg_l1(anchor, hard))], axis=1)
        return keras.losses.sparse_categorical_crossentropy(targets, with_hard, from_logits=True)

    both_sides = (cross_entropy(logits, a, left_groups) + cross_entropy(ops.transpose(logits), b, right_groups)) / 2
    positive = ops.cast(labels >= 0.5, both_sides.dtype)
    return ops.sum(both_sides * positive) / ops.maximum(ops.sum(positive), 1.0)


class _Trainer(keras.Model):
    """The Siamese network seen from training: the shared encoder on both sides, and the
    objective's loss computed from the two encodings (the in-batch loss needs them, not
    just the pair score). Reports the loss and, where the objective fits scores to the 0/1
    labels (``bce``, ``both``), the pair accuracy of exp(-L1) > 0.5 (Keras's BinaryAccuracy).
    The in-batch loss only ranks: its scores sit far below 0.5, so that accuracy would
    say nothing there."""

    def __init__(self, encoder: keras.Model, objective: str, temperature: float):
        super().__init__(name="siamese_trainer")
        self.encoder, self.objective, self.temperature = encoder, objective, temperature
        self.similarity = ManhattanSimilarity(name="similarity")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy = keras.metrics.BinaryAccuracy(name="accuracy") if self.fits_labels else None
        if objective == "margin":  # the pair loss's logit is (margin - L1) * exp(-log_scale)
            self.margin = self.add_weight(shape=(), initializer=keras.initializers.Constant(5.0), name="margin")
            self.log_scale = self.add_weight(shape=(), initializer="zeros", name="log_scale")
        self.built = True  # nothing left to build: the encoder is built, the similarity has no weights

    @property
    def fits_labels(self) -> bool:
        """Whether the loss fits scores to the labels, so that a score above 0.5 means "same"."""
        return self.objective in ("bce", "both")

    @property
    def metrics(self) -> list:
        return [self.loss_tracker] + ([self.accuracy] if self.accuracy is not None else [])

    def call(self, inputs, training=False):
        """Encode each distinct sentence of the batch once, then pick out the rows of each
        of ``inputs``' row lists (both sides' rows, and any hard negatives' rows)."""
        sentences, *rows = inputs
        encoded = encoder_forward(self.encoder, sentences, training=training)
        return tuple(ops.take(encoded, r, axis=0) for r in rows)

    def objective_loss(self, a, b, labels, left_groups, right_groups, hard=None, hard_groups=None):
        """The objective's loss for a batch of encoded pairs (and hard negatives), and the pairs' scores."""
        score = self.similarity(a, b)
        loss = 0.0
        if self.fits_labels:
            loss += ops.mean(keras.losses.binary_crossentropy(ops.expand_dims(labels, 1), ops.expand_dims(score, 1)))
        if self.objective == "margin":
            logit = (self.margin - ops.sum(ops.abs(a - b), axis=-1)) * ops.exp(-self.log_scale)
            loss += ops.mean(keras.losses.binary_crossentropy(ops.expand_dims(labels, 1), ops.expand_dims(logit, 1),
                                                              from_logits=True))
        if self.objective != "bce":
            loss += in_batch_loss(a, b, labels, left_groups, right_groups, self.temperature, hard, hard_groups)
        return loss, score

    def train_step(self, data):
        (sentences, left, right, left_groups, right_groups, hard_rows, hard_groups), labels = data
        with tf.GradientTape() as tape:
            a, b, hard = self((sentences, left, right, hard_rows), training=True)
            loss, score = self.objective_loss(a, b, labels, left_groups, right_groups, hard, hard_groups)
        self.optimizer.apply(tape.gradient(loss, self.trainable_variables), self.trainable_variables)
        self.loss_tracker.update_state(loss)
        if self.accuracy is not None:
            self.accuracy.update_state(labels, score)
        return {m.name: m.result() for m in self.metrics}


@dataclass(frozen=True)
class _PairIds:
    """Pairs as rows into their distinct sentences' ids, with what batching sorts by, and
    each paraphrase group's hard negatives (empty unless asked for)."""

    ids: list[list[int]]
    left: np.ndarray
    right: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    """Each distinct sentence's paraphrase group (``data.paraphrase_groups``)."""
    lengths: np.ndarray
    """Each pair's longer side's length: what a batch of it is padded to."""
    longer_side: np.ndarray
    hard_keys: np.ndarray
    """Each paraphrase group's hard negatives (empty unless asked for), sorted by the key
    group << 32 | length, so that a group's negatives up to a length are one range of it ..."""
    hard_sentences: np.ndarray
    """... and the sentences themselves, in the same order."""

    @classmethod
    def of(cls, pairs: Pairs, vocab: Vocabulary, max_length: int, negatives: Pairs | None = None) -> _PairIds:
        """``negatives``: labelled pairs whose negative pairs give each group its hard negatives:
        the sentences labelled "not the same" as any member of the group. Their sentences come
        after ``pairs``' own, so that ``pairs``' rows and batches are the same as without them."""
        texts, left, right = pairs.distinct()
        groups = paraphrase_groups(texts, pairs)
        negative = [] if negatives is None else [
            (x, y) for x, y, label in zip(negatives.left, negatives.right, negatives.labels) if label < 0.5]
        where = {t: i for i, t in enumerate(texts)}
        for t in dict.fromkeys(t for pair in negative for t in pair):
            if t not in where:
                where[t] = len(texts)
                texts.append(t)
        groups = np.concatenate([groups, groups.max(initial=-1) + 1 + np.arange(len(texts) - len(groups))])
        ids = [vocab.ids(t, max_length) for t in texts]
        sizes = np.array([len(r) for r in ids])
        ends = np.array([[where[x], where[y]] for x, y in negative], np.int64).reshape(-1, 2)
        member, other = np.concatenate([ends, ends[:, ::-1]]).T
        keep = groups[member] != groups[other]  # a negative inside a group contradicts its positives: skip it
        keys, sentences = np.unique(np.stack([groups[member[keep]] << 32 | sizes[other[keep]], other[keep]]), axis=1)
        return cls(ids, left, right, pairs.labels, groups, np.maximum(sizes[left], sizes[right]),
                   np.where(sizes[left] >= sizes[right], left, right), keys, sentences)

    def draw_hard_negatives(self, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """For each pair of ``b``, one hard negative of its group no longer than the batch's longest
        sentence (so the batch is padded no further), drawn at random; none where none is."""
        group = self.groups[self.left[b]].astype(np.int64) << 32
        start = np.searchsorted(self.hard_keys, group)
        count = np.searchsorted(self.hard_keys, group | self.lengths[b].max(), side="right") - start
        has = count > 0
        return self.hard_sentences[start[has] + (rng.random(int(has.sum())) * count[has]).astype(np.int64)]

    def batch(self, b: np.ndarray, hard: np.ndarray | None = None) -> tuple:
        """Pairs ``b`` (and ``hard`` negative sentences) as ((distinct sentences' ids, left rows,
        right rows, left groups, right groups, hard rows, hard groups), labels)."""
        hard = np.zeros(0, np.int64) if hard is None else hard
        distinct, rows = np.unique(np.concatenate([self.left[b], self.right[b], hard]), return_inverse=True)
        rows = rows.astype(np.int32)
        n = len(b)
        return ((pad([self.ids[i] for i in distinct]), rows[:n], rows[n : 2 * n],
                 self.groups[self.left[b]], self.groups[self.right[b]], rows[2 * n :], self.groups[hard]),
                self.labels[b])


def _epoch_batches(pairs: _PairIds, batch_size: int, rng: np.random.Generator,
                   group_shared: bool = False, hard_negatives: int = 0, char_mask: float = 0.0) -> Iterator[tuple]:
    """One epoch of length-bucketed batches (``_PairIds.batch``), in a new random order each call.

    A sentence occurring several times in a batch is encoded once. With ``group_shared``,
    pairs of the same length that share their longer sentence are put in the same batch, so
    more sentences repeat. On BQ's seed split, a random same-length order encodes 1.88M
    padded steps per epoch, 1.43M with ``group_shared``, 2.42M without removing repeats
    (and 16M padding every sentence to the longest, 100).
    Only for the pair loss: the in-batch loss would lose those pairs as negatives.
    With ``hard_negatives`` = k, each pair brings k hard negatives of its group
    (``_PairIds.draw_hard_negatives``), drawn anew each epoch.
    (Splitting a batch's sentences into a shorter and a longer half, each padded to its own
    length, saves another 1.2× of padded steps but measured slower: twice the LSTM calls.)
    """
    lengths = pairs.lengths
    if group_shared:  # within a length, pairs sharing their longer sentence, in a new random order
        order = np.lexsort((rng.random(len(lengths)), rng.permutation(len(pairs.ids))[pairs.longer_side], lengths))
    else:
        order = np.lexsort((rng.random(len(lengths)), lengths))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(chunks)
    for b in chunks:
        batch = pairs.batch(b, np.concatenate([pairs.draw_hard_negatives(b, rng) for _ in range(hard_negatives)])
                            if hard_negatives else None)
        if char_mask:
            ids = batch[0][0]
            ids[(ids > 0) & (rng.random(ids.shape) < char_mask)] = OOV_ID
        yield batch


_IDS = tf.TensorSpec([None, None], tf.int32)
_ROWS, _GROUPS = tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int64)
_BATCH_SPEC = ((_IDS, _ROWS, _ROWS, _GROUPS, _GROUPS, _ROWS, _GROUPS), tf.TensorSpec([None], tf.float32))


def _fit(trainer: _Trainer, batches: Callable[[], Iterable[tuple]], epochs: int,
         callbacks: list[keras.callbacks.Callback]) -> None:
    """Keras's ``fit`` loop for batches made in Python: one traced step for every batch shape.

    Why not ``fit`` on a ``tf.data`` generator: a new iterator each epoch left some epochs
    waiting 2.4-3 s for their first batch, and one iterator for the whole run sometimes
    stalled 20-55 s as ``fit`` returned. A batch takes about 0.3 ms to make here.
    """
    step = tf.function(trainer.train_step, input_signature=[_BATCH_SPEC])
    trainer.optimizer.build(trainer.trainable_variables)
    hooks = keras.callbacks.CallbackList(callbacks, model=trainer, epochs=epochs)
    trainer.stop_training = False
    hooks.on_train_begin()
    for epoch in range(epochs):
        trainer.reset_metrics()
        hooks.on_epoch_begin(epoch)
        for batch in batches():
            logs = step(batch)
        epoch_logs = {name: float(value) for name, value in logs.items()}
        hooks.on_epoch_end(epoch, epoch_logs)
        if trainer.stop_training:
            break
    hooks.on_train_end()


class _Validation(keras.callbacks.Callback):
    """Puts ``val_loss``, ``val_auc`` (ROC-AUC of the scores: needs no threshold, so it means
    the same for every objective) and, where the objective fits the labels, ``val_accuracy``
    (score > 0.5) into each epoch's logs, ahead of the callbacks that read them.

    Every distinct validation sentence is encoded once, in length-sorted batches, and the loss
    is then averaged over fixed batches of pairs, as ``evaluate`` would do batch by batch. The
    batches keep the order evaluation used before (by length, pairs sharing their longer
    sentence together): the in-batch loss depends on which pairs share a batch. Encoding each
    batch's sentences separately padded BQ's seed_test to 475k steps (its distinct sentences
    have 211k characters) and took 2.3 s; this made the recipe's epochs on seed_train about
    1.7 s shorter.
    """

    def __init__(self, trainer: _Trainer, pairs: _PairIds, batch_size: int, encode_batch: int = 1024):
        super().__init__()
        self.trainer, self.pairs = trainer, pairs
        self.sentence_batches = [(rows, pad([pairs.ids[i] for i in rows]))
                                 for rows in length_sorted_batches(pairs.ids, encode_batch)]
        pair_order = np.lexsort((pairs.longer_side, pairs.lengths))
        self.pair_batches = [pair_order[i : i + batch_size] for i in range(0, len(pair_order), batch_size)]
        encoder = trainer.encoder
        self.encode = tf.function(lambda ids: encoder_forward(encoder, ids), input_signature=[_IDS])

    def on_epoch_end(self, epoch, logs=None):
        p = self.pairs
        encoded = np.empty((len(p.ids), self.trainer.encoder.output_shape[-1]), np.float32)
        for rows, ids in self.sentence_batches:
            encoded[rows] = self.encode(ids)
        losses, scores = [], np.empty(len(p.labels), np.float32)
        for b in self.pair_batches:
            left, right = p.left[b], p.right[b]
            loss, scores[b] = self.trainer.objective_loss(encoded[left], encoded[right], p.labels[b],
                                                          p.groups[left], p.groups[right])
            losses.append(float(loss))
        if logs is not None:
            logs["val_loss"] = float(np.mean(losses))
            auc = pair_metrics(scores, p.labels)["roc_auc"]
            if auc is not None:
                logs["val_auc"] = auc
            if self.trainer.fits_labels:
                logs["val_accuracy"] = float(np.mean((scores > 0.5) == (p.labels >= 0.5)))


class _AveragedWeights(keras.callbacks.Callback):
    """Between epochs the network holds the optimizer's moving average of its weights (Keras's
    ``use_ema``), so that validation, early stopping and the saved model see the average;
    each epoch's training resumes from the weights the steps themselves reached. Why: the
    average of the last few hundred steps generalises better than any one step's weights,
    at no cost in training time."""

    def __init__(self, trainer: _Trainer):
        super().__init__()
        self.trainer, self.stepped = trainer, None

    def on_epoch_begin(self, epoch, logs=None):
        if self.stepped is not None:
            for variable, value in zip(self.trainer.trainable_variables, self.stepped):
                variable.assign(value)

    def on_epoch_end(self, epoch, logs=None):
        variables = self.trainer.trainable_variables
        self.stepped = [v.numpy() for v in variables]
        self.trainer.optimizer.finalize_variable_values(variables)


class _EpochReporter(keras.callbacks.Callback):
    def __init__(self, epochs: int, history: list[dict], on_epoch_end: EpochCallback | None):
        super().__init__()
        self.epochs, self.history, self.on_epoch_end_fn = epochs, history, on_epoch_end
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
                  "seconds": round(time.perf_counter() - self.started, 2)}
        self.history.append(record)
        if self.on_epoch_end_fn:
            self.on_epoch_end_fn(epoch + 1, self.epochs, record)


AVERAGE_MIN_SPAN = 5
"""Weight averaging needs at least this many times its span, 1 / (1 - momentum), of planned
training steps: Keras's average starts at the first step's weights, which still weigh
momentum**steps at the end (0.998 over BQ's 3,920 steps: 0.04 %, but over 1,000 pairs
× 20 epochs, 40 steps: 92 %)."""


def _applied_average(config: TrainConfig, steps: int) -> float:
    """``config.average``, or 0 (off, and logged) where training has too few steps for it."""
    needed = math.ceil(AVERAGE_MIN_SPAN / (1 - config.average) - 1e-9)  # 1e-9: 5 / (1 - 0.9) is 50.000...01
    if config.average and steps < needed:
        log.info("not averaging the weights: %s training steps, fewer than the %s that momentum %g needs; "
                 "use a smaller --average", f"{steps:,}", f"{needed:,}", config.average)
        return 0.0
    return config.average


def train(pairs: Pairs, valid: Pairs | None = None, config: TrainConfig = TrainConfig(),
          vectors: str | Path | None = None, on_epoch_end: EpochCallback | None = None) -> Encoder:
    """Train the Siamese network and return its shared encoder (save it with ``Encoder.save``)."""
    started = time.perf_counter()
    used = pairs if config.objective != "contrastive" else pairs.subset(pairs.labels >= 0.5)
    if not len(used):
        raise InputError(f"{pairs.source or 'training pairs'}: no positive pairs, which the contrastive objective needs")
    if valid is not None and config.patience and config.monitor == "val_auc" and len(set(valid.labels >= 0.5)) < 2:
        raise InputError(f"{valid.source or 'validation pairs'}: early stopping on val_auc needs both positive and "
                         "negative pairs; use --monitor val_loss")
    keras.utils.set_random_seed(config.seed)
    vocab = Vocabulary.fit(pairs.left + pairs.right)
    if vectors is None:
        log.info("training %s-d character vectors with gensim on %s sentences",
                 config.embedding_dim, f"{2 * len(pairs):,}")
        kv = train_char_vectors(pairs.left + pairs.right, config.embedding_dim, config.seed)
        vectors_source = {"trained": "gensim Word2Vec", "dim": config.embedding_dim, **WORD2VEC_SETTINGS}
    else:
        kv = load_vectors(vectors)
        vectors_source = {"file": Path(vectors).name, "dim": kv.vector_size, "rows": len(kv)}

    enc_config = EncoderConfig(vocab_size=len(vocab), embedding_dim=kv.vector_size, max_length=config.max_length,
                               dropout=config.dropout)
    model = build_encoder(enc_config)
    model.get_layer(EMBEDDING_LAYER).set_weights([embedding_matrix(vocab, kv, config.seed)])
    model.get_layer(EMBEDDING_LAYER).trainable = config.fine_tune_vectors
    trainer = _Trainer(model, config.objective, config.temperature)
    table = _PairIds.of(used, vocab, config.max_length, negatives=pairs if config.hard_negatives else None)
    average = _applied_average(config, steps=config.epochs * -(-len(table.labels) // config.batch_size))
    averaging = {"use_ema": True, "ema_momentum": average} if average else {}
    trainer.compile(optimizer=keras.optimizers.Nadam(config.learning_rate, **averaging))

    rng = np.random.default_rng(config.seed)
    history: list[dict] = []
    callbacks: list[keras.callbacks.Callback] = [_AveragedWeights(trainer)] if average else []
    if valid is not None:
        callbacks.append(_Validation(trainer, _PairIds.of(valid, vocab, config.max_length), config.batch_size))
    callbacks.append(_EpochReporter(config.epochs, history, on_epoch_end))
    stopper = None
    if valid is not None and config.patience:
        stopper = keras.callbacks.EarlyStopping(config.monitor, patience=config.patience,
                                                mode=MONITORS[config.monitor], restore_best_weights=True)
        callbacks.append(stopper)
    _fit(trainer, lambda: _epoch_batches(table, config.batch_size, rng, group_shared=config.objective == "bce",
                                         hard_negatives=config.hard_negatives, char_mask=config.char_mask),
         config.epochs, callbacks)

    encoder = Encoder.from_keras(model, vocab, enc_config, history=history)
    kept = len(history) if stopper is None else stopper.best_epoch + 1  # the epoch whose weights it restored
    if valid is not None:
        scores = PairEvaluator(valid).scores(encoder)
        encoder.threshold = best_threshold(scores, valid.labels)
        encoder.metrics["valid"] = {"file": Path(valid.source).name,
                                    **pair_metrics(scores, valid.labels, encoder.threshold)}
    elif config.objective == "margin":
        encoder.threshold = float(np.exp(-float(trainer.margin.numpy())))
    encoder.training = {
        "settings": asdict(config),
        "pairs": {"file": Path(pairs.source).name, "n": len(pairs), "used": len(used)},
        "valid": None if valid is None else {"file": Path(valid.source).name, "n": len(valid)},
        "epoch_kept": kept,
        "vectors": vectors_source,
        "optimizer": "Nadam",
        "weights_averaged": bool(average),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if config.objective == "margin":
        encoder.training["learned"] = {"margin": float(trainer.margin.numpy()),
                                       "scale": float(np.exp(trainer.log_scale.numpy()))}
    return encoder
