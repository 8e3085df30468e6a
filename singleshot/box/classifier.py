"""The classifier kind of a detection head: what its class channels mean and how they become probabilities.

Two kinds, one object each:

* :data:`SOFTMAX` (SSD300: the MLPerf reference, NVIDIA v1.1): ``num_classes`` channels, channel 0 the background,
  label ``c`` in channel ``c``; the probabilities are the softmax over all channels, the background's left out.
* :data:`SIGMOID` (SSD320 v1.2, focal loss): ``num_classes - 1`` channels, no background, label ``c`` in channel
  ``c - 1``; each channel's probability is its own sigmoid.

Whatever depends on the kind is a method here; decoding, export and weight loading call them and never compare
kinds. Decoding ranks *keys*, values ordered like the probabilities that cost less to compute: the
log-probability (softmax) or the logit (sigmoid); :meth:`Classifier.key_probs` turns keys into probabilities. Each
method does the arithmetic its caller needs, so that every decoding path keeps its exact results.

Shapes: ``logits [..., C]`` has C channels, of which K are foreground classes; class ``cls`` is 0-based over
the foreground (label ``cls + 1``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

from torch import Tensor


class Classifier(ABC):
    """A classifier kind (:data:`SOFTMAX` or :data:`SIGMOID`; one instance each, compared by identity).

    Attributes:
        name: "softmax" or "sigmoid", for printing and metadata (:func:`classifier_named` reads it back).
        has_background: channel 0 is the background class (label 0); otherwise channel ``c`` is label ``c + 1``.
    """

    name: str
    has_background: bool

    def __repr__(self) -> str:
        return self.name.upper()

    def __reduce__(self) -> str:
        return self.name.upper()  # pickle and copy give back the module's instance

    def num_outputs(self, num_classes: int) -> int:
        """Class channels C of a head for ``num_classes`` labels (background included)."""
        return num_classes - 1 + int(self.has_background)

    def num_foreground(self, channels: int) -> int:
        """Foreground classes K of a head with ``channels`` class channels."""
        return channels - int(self.has_background)

    def foreground_channel(self, cls: Tensor | int) -> Tensor | int:
        """The channel of 0-based foreground class ``cls`` (an int or an integer tensor)."""
        return cls + 1 if self.has_background else cls

    def foreground_probs(self, logits: Tensor) -> Tensor:
        """``[..., C]`` logits -> ``[..., K]`` class probabilities (float logits give float probabilities)."""
        return self.key_probs(self.score_keys(logits))

    @abstractmethod
    def score_keys(self, logits: Tensor) -> Tensor:
        """``[..., C]`` logits -> ``[..., K]`` keys: ordered like the class probabilities."""

    @abstractmethod
    def key_probs(self, keys: Tensor) -> Tensor:
        """Keys (any shape) -> their probabilities."""

    @abstractmethod
    def key_threshold(self, threshold: float) -> float:
        """The key of probability ``threshold``: key > it exactly when probability > ``threshold``."""

    @abstractmethod
    def channel_keys(self, logits: Tensor, img: Tensor, cls: Tensor) -> Tensor:
        """``logits [B, A, C]``, ``img [U]``, ``cls [U]`` -> ``[U, A]``: the keys of class ``cls[u]`` over the
        anchors of image ``img[u]``."""

    @abstractmethod
    def rows_may_pass(self, logits: Tensor, threshold: float) -> Tensor:
        """``[..., C]`` -> ``[...]`` bool: False only where no class probability of the row exceeds ``threshold``
        (a bound from one pass that misses nothing; the exact test is the caller's)."""

    @abstractmethod
    def log_normalizer(self, logits: Tensor) -> Tensor | None:
        """``[..., C]`` -> ``[...]``: what each row's foreground logits lose to become keys (the softmax's
        logsumexp), or None where a key is the logit itself (sigmoid). Passed back to :meth:`keys_above` and
        :meth:`entry_keys`, so that both use one computation."""

    @abstractmethod
    def keys_above(self, logits: Tensor, normalizer: Tensor | None, bound: float) -> Tensor:
        """``[..., C]`` -> ``[..., K]`` bool: foreground logit > ``bound`` + the row's normalizer, i.e. key > bound
        up to rounding (give ``bound`` a margin where a superset is wanted)."""

    @abstractmethod
    def entry_keys(self, logits: Tensor, normalizer: Tensor | None, row: Tensor, cls: Tensor) -> Tensor:
        """``logits [R, C]`` (any leading shape, R rows flattened), ``row [N]``, ``cls [N]`` -> ``[N]``: the key of
        class ``cls[n]`` in row ``row[n]``."""

    @abstractmethod
    def top_anchors(self, logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """``logits [B, A, C]`` -> ``(probs, anchor)``, each ``[B, k, K]``: the ``k`` most probable anchors of every
        (image, class), by descending probability, and their probabilities."""


class _Softmax(Classifier):
    name = "softmax"
    has_background = True

    def score_keys(self, logits: Tensor) -> Tensor:
        return logits[..., 1:] - logits.logsumexp(dim=-1, keepdim=True)  # log-probabilities

    def key_probs(self, keys: Tensor) -> Tensor:
        return keys.exp()

    def key_threshold(self, threshold: float) -> float:
        return math.log(threshold)

    def channel_keys(self, logits: Tensor, img: Tensor, cls: Tensor) -> Tensor:
        return logits[img, :, self.foreground_channel(cls)] - logits.index_select(0, img).logsumexp(dim=-1)

    def rows_may_pass(self, logits: Tensor, threshold: float) -> Tensor:
        # p_c = exp(l_c - logsumexp(l)) > thr needs l_c > l_0 + log(thr), as logsumexp(l) >= l_0.
        return logits[..., 1:].amax(dim=-1) > logits[..., 0] + self.key_threshold(threshold)

    def log_normalizer(self, logits: Tensor) -> Tensor:
        return logits.logsumexp(dim=-1)

    def keys_above(self, logits: Tensor, normalizer: Tensor | None, bound: float) -> Tensor:
        assert normalizer is not None
        return logits[..., 1:] > (normalizer + bound)[..., None]

    def entry_keys(self, logits: Tensor, normalizer: Tensor | None, row: Tensor, cls: Tensor) -> Tensor:
        assert normalizer is not None
        values = logits.reshape(-1).index_select(0, row * logits.shape[-1] + self.foreground_channel(cls))
        return values - normalizer.view(-1).index_select(0, row)

    def top_anchors(self, logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
        probs, anchor = self.foreground_probs(logits).topk(k, dim=1)
        return probs, anchor


class _Sigmoid(Classifier):
    name = "sigmoid"
    has_background = False

    def score_keys(self, logits: Tensor) -> Tensor:
        return logits

    def key_probs(self, keys: Tensor) -> Tensor:
        return keys.sigmoid()

    def key_threshold(self, threshold: float) -> float:
        return math.log(threshold / (1 - threshold))  # logit(thr)

    def channel_keys(self, logits: Tensor, img: Tensor, cls: Tensor) -> Tensor:
        return logits[img, :, cls]

    def rows_may_pass(self, logits: Tensor, threshold: float) -> Tensor:
        return logits.amax(dim=-1) > self.key_threshold(threshold)  # exact: sigmoid is monotonic

    def log_normalizer(self, logits: Tensor) -> None:
        return None

    def keys_above(self, logits: Tensor, normalizer: Tensor | None, bound: float) -> Tensor:
        return logits > bound

    def entry_keys(self, logits: Tensor, normalizer: Tensor | None, row: Tensor, cls: Tensor) -> Tensor:
        return logits.reshape(-1).index_select(0, row * logits.shape[-1] + cls)

    def top_anchors(self, logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
        top, anchor = logits.topk(k, dim=1)  # sigmoid is monotonic: the logits rank the same
        return top.sigmoid(), anchor


SOFTMAX: Classifier = _Softmax()
SIGMOID: Classifier = _Sigmoid()


def classifier_named(kind: Classifier | str) -> Classifier:
    """``SOFTMAX`` or ``SIGMOID`` from its name ("softmax", "sigmoid"); a :class:`Classifier` is returned as is."""
    if isinstance(kind, Classifier):
        return kind
    found = {c.name: c for c in (SOFTMAX, SIGMOID)}.get(kind)
    if found is None:
        raise ValueError(f"classifier must be 'softmax' or 'sigmoid', got {kind!r}")
    return found
