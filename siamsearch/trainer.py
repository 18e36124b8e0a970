"""The Keras side of training: the Siamese trainer model, its objectives' losses, the
training loop and the callbacks that validate, average and report each epoch.

Imported by ``training.train`` after ``keras_runtime.load()``; see ``training.py`` for the
objectives and the settings, and ``batching.py`` for the batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from .architectures import Architecture
from .batching import DistillBatch, PairIds
from .checkpoint import Checkpoints, Resumed
from .data import POSITIVE_AT, is_positive
from .metrics import pair_metrics
from .model import ManhattanSimilarity
from .text import length_sorted_batches, pad


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
    positive = ops.cast(labels >= POSITIVE_AT, both_sides.dtype)
    return ops.sum(both_sides * positive) / ops.maximum(ops.sum(positive), 1.0)


def distillation_loss(student, targets, log_scale):
    """Mean over rows i of KL(targets_i ‖ softmax_j(-L1(s_i, s_j) · exp(log_scale))), j ≠ i.

    ``student``: the batch's encodings; ``targets``: the teacher's distribution over the
    batch for each sentence (``batching.teacher_targets``, zero on the diagonal). The student
    learns the teacher's neighbourhoods in its own metric, L1, so that exp(-L1), the score
    users see, ranks as the teacher ranks. ``log_scale`` is learned: only the shape of the
    teacher's distribution is asked for, not an absolute L1 (the pair objective sets that).
    """
    l1 = ops.sum(ops.abs(ops.expand_dims(student, 1) - ops.expand_dims(student, 0)), axis=-1)
    n = ops.shape(l1)[0]
    logits = ops.where(ops.eye(n, dtype="bool"), -1e9, -l1 * ops.exp(log_scale))
    log_p = ops.log_softmax(logits, axis=-1)
    entropy_terms = ops.where(targets > 0, targets * ops.log(ops.maximum(targets, 1e-30)), 0.0)
    return ops.mean(ops.sum(entropy_terms - targets * ops.where(targets > 0, log_p, 0.0), axis=-1))


class Trainer(keras.Model):
    """The Siamese network seen from training: the shared encoder on both sides, and the
    objective's loss computed from the two encodings (the in-batch loss needs them, not
    just the pair score). Reports the loss and, where the objective fits scores to the 0/1
    labels (``bce``, ``both``), the pair accuracy of exp(-L1) > 0.5 (Keras's BinaryAccuracy).
    The in-batch loss only ranks: its scores sit far below 0.5, so that accuracy would
    say nothing there."""

    def __init__(self, encoder: keras.Model, architecture: Architecture, objective: str, temperature: float,
                 distill_weight: float = 0.0):
        super().__init__(name="siamese_trainer")
        self.encoder, self.objective, self.temperature = encoder, objective, temperature
        self.architecture = architecture
        self.distill_weight = distill_weight
        self.similarity = ManhattanSimilarity(name="similarity")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy = keras.metrics.BinaryAccuracy(name="accuracy") if self.fits_labels else None
        if objective == "margin":  # the pair loss's logit is (margin - L1) * exp(-log_scale)
            self.margin = self.add_weight(shape=(), initializer=keras.initializers.Constant(5.0), name="margin")
            self.log_scale = self.add_weight(shape=(), initializer="zeros", name="log_scale")
        if distill_weight:  # the student's softmax over -L1 · exp(distill_log_scale)
            self.distill_log_scale = self.add_weight(shape=(), initializer="zeros", name="distill_log_scale")
            self.distill_tracker = keras.metrics.Mean(name="distill_loss")
        self.built = True  # nothing left to build: the encoder is built, the similarity has no weights

    def encode(self, ids, training: bool = False):
        """The encoder's vectors as training computes them (``Architecture.forward``)."""
        return self.architecture.forward(self.encoder, ids, training=training)

    @property
    def fits_labels(self) -> bool:
        """Whether the loss fits scores to the labels, so that a score above 0.5 means "same"."""
        return self.objective in ("bce", "both")

    @property
    def metrics(self) -> list:
        return ([self.loss_tracker] + ([self.accuracy] if self.accuracy is not None else [])
                + ([self.distill_tracker] if self.distill_weight else []))

    def call(self, inputs, training=False):
        """Encode each distinct sentence of the batch once, then pick out the rows of each
        of ``inputs``' row lists (both sides' rows, and any hard negatives' rows)."""
        sentences, *rows = inputs
        encoded = self.encode(sentences, training=training)
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
        self.apply_gradients(tape, loss)
        self.loss_tracker.update_state(loss)
        if self.accuracy is not None:
            self.accuracy.update_state(labels, score)
        return {m.name: m.result() for m in self.metrics}

    def apply_gradients(self, tape: tf.GradientTape, loss) -> None:
        """One optimizer step on the variables ``loss`` depends on: each step's loss leaves out
        the other objective's own weights (the margin, the distillation scale)."""
        variables = self.trainable_variables
        found = [(g, v) for g, v in zip(tape.gradient(loss, variables), variables) if g is not None]
        self.optimizer.apply([g for g, _ in found], [v for _, v in found])

    def distill_step(self, ids, targets):
        """One step of the distillation loss (``distillation_loss``) on a ``DistillBatch``."""
        with tf.GradientTape() as tape:
            encoded = self.encode(ids, training=True)
            loss = distillation_loss(encoded, targets, self.distill_log_scale)
            weighted = self.distill_weight * loss
        self.apply_gradients(tape, weighted)
        self.distill_tracker.update_state(loss)
        return {m.name: m.result() for m in self.metrics}


_IDS = tf.TensorSpec([None, None], tf.int32)
_ROWS, _GROUPS = tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int64)
BATCH_SPEC = ((_IDS, _ROWS, _ROWS, _GROUPS, _GROUPS, _ROWS, _GROUPS), tf.TensorSpec([None], tf.float32))
DISTILL_SPEC = (_IDS, tf.TensorSpec([None, None], tf.float32))


def fit(trainer: Trainer, batches: Callable[[np.random.Generator], Iterable[tuple | DistillBatch]], epochs: int,
        callbacks: list[keras.callbacks.Callback], rng: np.random.Generator,
        on_batch: Callable[[int], None] | None = None, checkpoints: Checkpoints | None = None,
        resumed: Resumed | None = None) -> None:
    """Keras's ``fit`` loop for batches made in Python: one traced step for every batch shape.
    ``batches(rng)`` draws one epoch's batches from ``rng``; a ``DistillBatch`` runs the
    distillation step, any other batch the pair objective's. ``on_batch(epoch)`` is called
    after each batch (for progress), epochs counted from 0. With ``checkpoints``: the state is
    saved after each epoch, and after the batch in progress when a stop is asked for (then
    ``TrainingInterrupted``); ``resumed``: a saved state to continue from (``checkpoint.py``).

    Why not ``fit`` on a ``tf.data`` generator: a new iterator each epoch left some epochs
    waiting 2.4-3 s for their first batch, and one iterator for the whole run sometimes
    stalled 20-55 s as ``fit`` returned. A batch takes about 0.3 ms to make here.
    """
    step = tf.function(trainer.train_step, input_signature=[BATCH_SPEC])
    distill_step = tf.function(trainer.distill_step, input_signature=DISTILL_SPEC) if trainer.distill_weight else None
    trainer.optimizer.build(trainer.trainable_variables)
    hooks = keras.callbacks.CallbackList(callbacks, model=trainer, epochs=epochs)
    trainer.stop_training = False
    hooks.on_train_begin()
    first, skip = 0, 0
    if resumed is not None:
        checkpoints.restore(trainer, callbacks, resumed)  # after on_train_begin, which resets early stopping
        first, skip = resumed.epoch, resumed.batch
        rng.bit_generator.state = resumed.meta["position"]["rng"]
    with checkpoints.stop_on_signals() if checkpoints else nullcontext():
        for epoch in range(first, epochs):
            if not (epoch == first and skip):  # resuming mid-epoch: the running metrics were restored
                trainer.reset_metrics()
            epoch_rng = rng.bit_generator.state
            hooks.on_epoch_begin(epoch)
            for done, batch in enumerate(batches(rng), 1):
                if epoch == first and done <= skip:  # drawn again, as the first sitting drew it, and skipped
                    continue
                distill_step(*batch) if isinstance(batch, DistillBatch) else step(batch)
                if on_batch is not None:
                    on_batch(epoch)
                if checkpoints is not None and checkpoints.stop_requested.is_set():
                    checkpoints.save(trainer, callbacks, epoch, done, epoch_rng)
                    raise checkpoints.interrupted(epoch, epochs, done)
            hooks.on_epoch_end(epoch, {m.name: float(m.result()) for m in trainer.metrics})
            if checkpoints is not None:
                checkpoints.save(trainer, callbacks, epoch + 1, 0, rng.bit_generator.state)
            if trainer.stop_training:
                break
    hooks.on_train_end()


class Validation(keras.callbacks.Callback):
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

    def __init__(self, trainer: Trainer, pairs: PairIds, batch_size: int, encode_batch: int = 1024):
        super().__init__()
        self.trainer, self.pairs = trainer, pairs
        self.sentence_batches = [(rows, pad([pairs.ids[i] for i in rows]))
                                 for rows in length_sorted_batches(pairs.ids, encode_batch)]
        pair_order = np.lexsort((pairs.longer_side, pairs.lengths))
        self.pair_batches = [pair_order[i : i + batch_size] for i in range(0, len(pair_order), batch_size)]
        self.encode = tf.function(lambda ids: trainer.encode(ids), input_signature=[_IDS])

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
                logs["val_accuracy"] = float(np.mean((scores > 0.5) == is_positive(p.labels)))


class AveragedWeights(keras.callbacks.Callback):
    """Between epochs the network holds the optimizer's moving average of its weights (Keras's
    ``use_ema``), so that validation, early stopping and the saved model see the average;
    each epoch's training resumes from the weights the steps themselves reached. Why: the
    average of the last few hundred steps generalises better than any one step's weights,
    at no cost in training time."""

    def __init__(self, trainer: Trainer):
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

    def checkpoint_state(self) -> tuple[dict, list[np.ndarray]]:
        return {"stepped": self.stepped is not None}, list(self.stepped or [])

    def restore_checkpoint_state(self, small: dict, arrays: list[np.ndarray]) -> None:
        self.stepped = arrays if small["stepped"] else None


class EpochReporter(keras.callbacks.Callback):
    """Appends each epoch's metrics and seconds to ``history`` and tells ``on_epoch_end``.
    An epoch split by a checkpoint counts the seconds of both sittings."""

    def __init__(self, epochs: int, history: list[dict], on_epoch_end: Callable[[int, int, dict], None] | None):
        super().__init__()
        self.epochs, self.history, self.on_epoch_end_fn = epochs, history, on_epoch_end
        self.started: float | None = None
        self.carried = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started, self.carried = time.perf_counter() - self.carried, 0.0

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
                  "seconds": round(time.perf_counter() - self.started, 2)}
        self.started = None
        self.history.append(record)
        if self.on_epoch_end_fn:
            self.on_epoch_end_fn(epoch + 1, self.epochs, record)

    def checkpoint_state(self) -> tuple[dict, list[np.ndarray]]:
        elapsed = 0.0 if self.started is None else time.perf_counter() - self.started
        return {"history": self.history, "elapsed": elapsed}, []

    def restore_checkpoint_state(self, small: dict, arrays: list[np.ndarray]) -> None:
        self.history[:] = small["history"]
        self.carried = small["elapsed"]


class EarlyStopping(keras.callbacks.EarlyStopping):
    """Keras's, with its state in checkpoints (the best epoch, its weights, the epochs waited)."""

    def checkpoint_state(self) -> tuple[dict, list[np.ndarray]]:
        weights, best = self.best_weights, None if self.best is None else float(self.best)
        return ({"wait": self.wait, "stopped_epoch": self.stopped_epoch, "best": best, "best_epoch": self.best_epoch,
                 "has_weights": weights is not None}, list(weights or []))

    def restore_checkpoint_state(self, small: dict, arrays: list[np.ndarray]) -> None:
        self.wait, self.stopped_epoch, self.best = small["wait"], small["stopped_epoch"], small["best"]
        self.best_epoch = small["best_epoch"]
        self.best_weights = arrays if small["has_weights"] else None
