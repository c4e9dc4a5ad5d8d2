"""bench.accuracy.metrics against scikit-learn, the independent reference."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from bench.accuracy.metrics import classification_metrics, compare_predictions, confusion_matrix, topk_accuracy


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    k = 6
    y_true = rng.integers(0, k - 1, 200)            # class 5 never occurs
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, k, 200))
    y_pred[y_pred == 4] = 3                        # class 4 never predicted
    labels = list(range(k))
    m = classification_metrics(y_true, y_pred, k)
    np.testing.assert_array_equal(np.array(m["confusion_matrix"]), sk.confusion_matrix(y_true, y_pred, labels=labels))
    assert m["top1"] == pytest.approx(sk.accuracy_score(y_true, y_pred))
    p, r, f, s = sk.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    np.testing.assert_allclose([c["precision"] for c in m["per_class"]], p)
    np.testing.assert_allclose([c["recall"] for c in m["per_class"]], r)
    np.testing.assert_allclose([c["f1"] for c in m["per_class"]], f)
    assert [c["support"] for c in m["per_class"]] == s.tolist()
    for ours, average in (("precision_macro", sk.precision_score), ("recall_macro", sk.recall_score),
                          ("f1_macro", sk.f1_score)):
        assert m[ours] == pytest.approx(average(y_true, y_pred, labels=labels, average="macro", zero_division=0))


def test_topk_matches_scikit_learn():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(300, 10))
    y = rng.integers(0, 10, 300)
    assert topk_accuracy(logits, y, 5) == pytest.approx(sk.top_k_accuracy_score(y, logits, k=5, labels=range(10)))
    assert classification_metrics(y, logits.argmax(1), 10, logits=logits)["top5"] == pytest.approx(
        topk_accuracy(logits, y, 5))


def test_confusion_rejects_out_of_range_labels():
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 1], 3)


def test_compare_predictions():
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = np.array([[1.0, 0.5], [0.0, -1.0]])
    d = compare_predictions(a, b)
    assert d == {"agreement": 0.5, "max_abs_logit_diff": 2.0, "mean_abs_logit_diff": pytest.approx(0.625)}
