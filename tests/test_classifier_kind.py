"""The classifier kind is an object (singleshot.box.classifier) that the model spec carries: its channel layout and
probabilities, and an AST check that no module outside ``models/`` and ``box/`` compares the kind itself."""

from __future__ import annotations

import ast
import copy
import pickle
from pathlib import Path

import pytest
import torch

import singleshot
from singleshot.box import SSD300_ANCHORS, PostProcessor
from singleshot.box.classifier import SIGMOID, SOFTMAX, Classifier, classifier_named

PACKAGE = Path(singleshot.__file__).parent
OWNERS = ("models", "box")  # the packages that define the kind and may look at it
KIND_NAMES = {"softmax", "sigmoid"}


# ------------------------------------------------------------------------------------------------- the object
def test_channel_layout() -> None:
    assert (SOFTMAX.name, SOFTMAX.has_background, SIGMOID.name, SIGMOID.has_background) == (
        "softmax", True, "sigmoid", False)  # fmt: skip
    assert SOFTMAX.num_outputs(81) == 81 and SIGMOID.num_outputs(81) == 80
    assert SOFTMAX.num_foreground(81) == 80 and SIGMOID.num_foreground(80) == 80
    assert SOFTMAX.foreground_channel(0) == 1 and SIGMOID.foreground_channel(0) == 0
    cls = torch.tensor([0, 3])
    assert torch.equal(SOFTMAX.foreground_channel(cls), cls + 1) and torch.equal(SIGMOID.foreground_channel(cls), cls)


def test_names_and_identity() -> None:
    assert classifier_named("softmax") is SOFTMAX and classifier_named("sigmoid") is SIGMOID
    assert classifier_named(SIGMOID) is SIGMOID
    with pytest.raises(ValueError, match="softmax"):
        classifier_named("relu")
    for kind in (SOFTMAX, SIGMOID):  # one instance per kind, also through pickle and copy
        assert pickle.loads(pickle.dumps(kind)) is kind and copy.deepcopy(kind) is kind
    assert repr(SOFTMAX) == "SOFTMAX" and isinstance(SIGMOID, Classifier)


def test_foreground_probs_are_softmax_and_sigmoid() -> None:
    logits = torch.randn(2, 50, 6) * 4
    assert torch.allclose(SOFTMAX.foreground_probs(logits), logits.softmax(-1)[..., 1:], rtol=1e-5, atol=1e-7)
    assert torch.equal(SIGMOID.foreground_probs(logits), logits.sigmoid())
    big = torch.tensor([[500.0, -500.0, 499.0]])  # logsumexp keeps large logits finite
    assert torch.allclose(SOFTMAX.foreground_probs(big), big.softmax(-1)[..., 1:])


@pytest.mark.parametrize("kind", [SOFTMAX, SIGMOID], ids=str)
def test_keys_rank_like_probabilities(kind: Classifier) -> None:
    logits = torch.randn(2, 40, 5) * 3
    probs, keys = kind.foreground_probs(logits), kind.score_keys(logits)
    assert torch.equal(kind.key_probs(keys), probs)
    assert torch.equal(keys.argsort(dim=1), probs.argsort(dim=1))
    img, cls = torch.tensor([1, 0]), torch.tensor([2, 0])
    assert torch.equal(kind.channel_keys(logits, img, cls), keys[img, :, cls])
    row, c = torch.tensor([5, 41, 79]), torch.tensor([0, 1, kind.num_foreground(5) - 1])
    normalizer = kind.log_normalizer(logits)
    assert torch.allclose(kind.entry_keys(logits, normalizer, row, c), keys.reshape(-1, keys.shape[-1])[row, c])
    probs_top, anchor = kind.top_anchors(logits, 4)
    assert torch.equal(probs_top, probs.topk(4, dim=1).values) and anchor.shape == (2, 4, probs.shape[-1])


@pytest.mark.parametrize("kind", [SOFTMAX, SIGMOID], ids=str)
@pytest.mark.parametrize("threshold", [1e-8, 0.05, 0.6])
def test_threshold_bounds_miss_nothing(kind: Classifier, threshold: float) -> None:
    logits = torch.randn(4, 300, 7) * 4
    passing = kind.foreground_probs(logits) > threshold
    assert not (passing.any(-1) & ~kind.rows_may_pass(logits, threshold)).any()
    superset = kind.keys_above(logits, kind.log_normalizer(logits), kind.key_threshold(threshold) - 1e-3)
    assert not (passing & ~superset).any()


def test_spec_and_postprocessor_carry_the_object() -> None:
    specs = {name: singleshot.get_spec(name) for name in singleshot.list_models()}
    assert specs["ssd320_resnet50_fpn"].classifier is SIGMOID and specs["ssd300_resnet34"].classifier is SOFTMAX
    for spec in specs.values():
        assert spec.num_outputs(7) == spec.classifier.num_outputs(7)
        assert singleshot.build_postprocessor(spec).classifier is spec.classifier
    assert PostProcessor(SSD300_ANCHORS, "sigmoid").classifier is SIGMOID  # a name is converted once
    with pytest.raises(ValueError, match="classifier"):
        PostProcessor(SSD300_ANCHORS, "softmax2")


# ------------------------------------------------------------------------------------------------- AST check
def _mentions_kind(node: ast.expr) -> bool:
    """A kind name ("softmax", also inside a literal tuple/list/set) or an attribute chain through ``classifier``
    (``spec.classifier``, ``self.post.classifier.name``); a call's result is a value, not the kind."""
    if isinstance(node, ast.Constant):
        return node.value in KIND_NAMES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_mentions_kind(e) for e in node.elts)
    while isinstance(node, ast.Attribute):
        if node.attr == "classifier":
            return True
        node = node.value
    return False


def kind_comparisons(source: str) -> list[int]:
    """Line numbers of the comparisons (``==``, ``in``, ``is`` ..., ``match``) of the classifier kind in ``source``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            hit = any(_mentions_kind(e) for e in (node.left, *node.comparators))
        elif isinstance(node, ast.Match):
            hit = _mentions_kind(node.subject) or any(
                isinstance(p, ast.MatchValue) and _mentions_kind(p.value)
                for case in node.cases
                for p in ast.walk(case.pattern)
            )
        else:
            continue
        if hit:
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize(
    ("source", "hit"),
    [
        ('x = a if spec.classifier == "softmax" else b', True),
        ('if kind in ("softmax", "sigmoid"): pass', True),
        ("ok = self.post.classifier is SOFTMAX", True),
        ('ok = spec.classifier.name != "sigmoid"', True),
        ("match spec.classifier:\n    case _: pass", True),
        ('match kind:\n    case "sigmoid": pass', True),
        ("p = self.post.classifier.foreground_probs(x)", False),
        ("ok = self.post.classifier.foreground_probs(x) > 0.5", False),
        ('ok = act == "relu"', False),
    ],
)
def test_kind_comparisons_finds_them(source: str, hit: bool) -> None:
    assert bool(kind_comparisons(source)) == hit


def test_no_module_outside_models_and_box_compares_the_kind() -> None:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.split("/")[0] in OWNERS:
            continue
        lines = kind_comparisons(path.read_text(encoding="utf-8"))
        if lines:
            found[rel] = lines
    assert not found, f"compare the classifier kind (ask spec.classifier / post.classifier instead): {found}"
