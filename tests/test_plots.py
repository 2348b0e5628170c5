import base64

import numpy as np
import pytest

from ftlab_pipelines.core.evaluation import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path, min_bytes=5_000):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > min_bytes


@pytest.fixture
def binary_scores():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    return y, np.clip(0.4 * y + rng.uniform(0, 0.6, 200), 0, 1)


def test_confusion_matrix_png(tmp_path):
    path = plots.confusion_matrix_png([[50, 3], [4, 43]], ["ham", "spam"], tmp_path / "sub" / "cm.png")
    assert path == tmp_path / "sub" / "cm.png"
    _assert_png(path)


def test_pr_curve_png_with_threshold_and_baseline(tmp_path, binary_scores):
    y, s = binary_scores
    path = plots.pr_curve_png(y, s, tmp_path / "pr.png", threshold=0.5, baseline={"tfidf": (y, s**2)})
    _assert_png(path)


def test_pr_and_roc_single_class_do_not_crash(tmp_path):
    y, s = np.ones(5, int), np.linspace(0, 1, 5)
    _assert_png(plots.pr_curve_png(y, s, tmp_path / "pr.png", threshold=0.5), min_bytes=2_000)
    _assert_png(plots.roc_curve_png(y, s, tmp_path / "roc.png"), min_bytes=2_000)


def test_roc_curve_png(tmp_path, binary_scores):
    y, s = binary_scores
    _assert_png(plots.roc_curve_png(y, s, tmp_path / "roc.png", baseline={"tfidf": (y, 1 - s)}))


def test_loss_curves_png(tmp_path):
    history = [{"step": i, "loss": 2.0 / (i + 1)} for i in range(1, 30)]
    history += [{"step": i, "eval_loss": 1.5 / i} for i in (10, 20, 30)]
    history.append({"step": 30, "train_runtime": 12.3})  # summary entry without losses
    _assert_png(plots.loss_curves_png(history, tmp_path / "loss.png"))


def test_loss_curves_png_empty_history(tmp_path):
    _assert_png(plots.loss_curves_png([], tmp_path / "loss.png"), min_bytes=2_000)


def test_class_distribution_png(tmp_path):
    dist = {
        "raw": {"ham": 4827, "spam": 747},
        "train (rebalanced)": {"ham": 2000, "spam": 1000},
        "validation": {"ham": 480, "spam": 75},
        "test": {"spam": 74},
    }
    _assert_png(plots.class_distribution_png(dist, tmp_path / "dist.png"))


def test_token_lengths_png(tmp_path):
    lengths = np.random.default_rng(1).integers(5, 300, 500)
    _assert_png(plots.token_lengths_png(lengths, 128, tmp_path / "len.png"))


def test_markdown_image(tmp_path):
    path = plots.confusion_matrix_png([[1, 0], [0, 1]], ["a", "b"], tmp_path / "cm.png")
    md = plots.markdown_image(path, "confusion")
    assert md.startswith("![confusion](")
    assert "data:image/png;base64," in md
    encoded = md.split("base64,", 1)[1].rstrip(")")
    assert base64.b64decode(encoded) == path.read_bytes()


def test_figures_are_closed(tmp_path, binary_scores):
    y, s = binary_scores
    before = len(plots.plt.get_fignums())
    plots.roc_curve_png(y, s, tmp_path / "roc.png")
    plots.token_lengths_png([1, 2, 3], 2, tmp_path / "len.png")
    assert len(plots.plt.get_fignums()) == before
