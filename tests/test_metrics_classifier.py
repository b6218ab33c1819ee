"""The dataset classifier: training, saving, FD in its feature space, and CAS."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genzoo.errors import GenzooError
from genzoo.metrics.classifier import (
    ClassifierConfig,
    classifier_report,
    fit_classifier,
    load_classifier,
    predict,
    save_classifier,
    topk_accuracy,
    train_classifier,
)
from genzoo.metrics.fid import frechet_distance


def toy_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes told apart by which colour channel is bright, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.randint(0, 90, (n, 3, 16, 16), generator=g)
    images[torch.arange(n), labels] += 140
    return images.to(torch.uint8), labels


@pytest.fixture(scope="module")
def toy_model():
    images, labels = toy_data(300, 0)
    cfg = ClassifierConfig(num_classes=3, res=16, width=8)
    return fit_classifier(images, labels, cfg, steps=60, batch_size=32, seed=0)


def test_fit_learns_a_separable_toy_problem(toy_model):
    test_images, test_labels = toy_data(90, 1)
    _, logits = predict(toy_model, test_images)
    assert topk_accuracy(logits, test_labels, 1) > 0.9
    assert topk_accuracy(logits, test_labels, 3) == 1.0


def test_topk_accuracy_counts_hits():
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.7, 0.2]])
    labels = torch.tensor([0, 1, 0])
    assert topk_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, labels, 2) == pytest.approx(2 / 3)


def test_save_and_load_round_trip(tmp_path, toy_model):
    path = save_classifier(toy_model, tmp_path / "clf.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf.json", "clf.safetensors"]
    config = json.loads((tmp_path / "clf.json").read_text())
    assert config["num_classes"] == 3 and config["res"] == 16 and config["width"] == 8
    loaded = load_classifier(path)
    images, _ = toy_data(8, 2)
    torch.testing.assert_close(predict(loaded, images)[1], predict(toy_model, images)[1])
    (tmp_path / "clf.json").unlink()
    with pytest.raises(GenzooError, match="config .* is missing"):
        load_classifier(path)
    with pytest.raises(GenzooError, match="no such classifier"):
        load_classifier(tmp_path / "absent.safetensors")


def test_fit_rejects_labels_outside_the_classes():
    images, labels = toy_data(10, 3)
    with pytest.raises(GenzooError, match=r"labels must lie in \[0, 2\)"):
        fit_classifier(images, labels, ClassifierConfig(num_classes=2, res=16), steps=1)


# -- with the embedded `shapes` data ------------------------------------------------------------


def shapes_available() -> bool:
    try:
        from genzoo.data import build_dataset  # noqa: F401
    except ImportError:
        return False
    return True


needs_shapes = pytest.mark.skipif(
    not shapes_available(), reason="genzoo.data.build_dataset missing"
)


@pytest.fixture(scope="module")
def shapes_classifier(tmp_path_factory):
    path = tmp_path_factory.mktemp("clf") / "shapes.safetensors"
    report = train_classifier("shapes", 32, path, steps=300, batch_size=32, quiet=True)
    return path, report


@needs_shapes
@pytest.mark.slow
def test_train_classifier_on_shapes(shapes_classifier):
    path, report = shapes_classifier
    assert report["held_out_images"] == 2000 and report["train_images"] == 10000
    # 10 classes; 300 steps reach ~0.5, the default 3000-step recipe ~0.99.
    assert report["held_out_top1"] > 0.35
    assert json.loads(path.with_suffix(".json").read_text())["data"] == "shapes"


@needs_shapes
@pytest.mark.slow
def test_classifier_report_on_real_and_mislabelled_images(shapes_classifier):
    from genzoo.data import build_dataset

    path, _ = shapes_classifier
    ds = build_dataset("shapes", 32, train=True)
    idx = np.arange(0, 400)
    images = np.stack([ds[int(i)][0].permute(1, 2, 0).numpy() for i in idx])
    labels = np.array([ds[int(i)][1] for i in idx])
    good = classifier_report(path, images, labels)  # dataset and resolution from the classifier
    wrong = classifier_report(path, images, (labels + 1) % 10, "shapes", 32)
    assert good["accuracy"] > 0.35 and wrong["accuracy"] < 0.2
    assert good["fd"] == pytest.approx(wrong["fd"])  # FD ignores labels
    # An independent FD oracle: the same features through numpy.
    model = load_classifier(path)
    real = build_dataset("shapes", 32, train=False)
    real_images = torch.stack([real[i][0] for i in range(len(real))])
    f_gen = predict(model, torch.from_numpy(images).permute(0, 3, 1, 2))[0].double().numpy()
    f_real = predict(model, real_images)[0].double().numpy()
    expected = frechet_distance(
        f_gen.mean(0), np.cov(f_gen, rowvar=False), f_real.mean(0), np.cov(f_real, rowvar=False)
    )
    assert good["fd"] == pytest.approx(expected, rel=1e-6)
    assert good["num_real"] == 2000
    with pytest.raises(GenzooError, match="trained at 32px"):
        classifier_report(path, images, labels, "shapes", 16)


@needs_shapes
@pytest.mark.slow
def test_cas_rewards_correct_labels():
    from genzoo.data import build_dataset
    from genzoo.metrics.cas import classification_accuracy_score

    ds = build_dataset("digits", 16, train=True)  # "generated" = real training digits
    images = np.stack([ds[i][0].permute(1, 2, 0).numpy() for i in range(600)])
    labels = np.array([ds[i][1] for i in range(600)])
    kwargs = dict(steps=150, batch_size=32)
    right = classification_accuracy_score(images, labels, "digits", **kwargs)
    shuffled = np.random.default_rng(0).permutation(labels)
    wrong = classification_accuracy_score(images, shuffled, "digits", **kwargs)
    assert right["top1"] > 0.4 and wrong["top1"] < 0.25 and right["top5"] >= right["top1"]
    assert right["num_real"] == len(build_dataset("digits", 16, train=False))
    with pytest.raises(GenzooError, match="needs the class label"):
        classification_accuracy_score(images, None, "digits")


@needs_shapes
@pytest.mark.slow
def test_evaluate_runs_classifier_metrics(shapes_classifier):
    from genzoo.data import build_dataset
    from genzoo.metrics import evaluate

    path, _ = shapes_classifier
    ds = build_dataset("shapes", 32, train=True, seed=2)
    images = np.stack([ds[i][0].permute(1, 2, 0).numpy() for i in range(60)])
    labels = np.array([ds[i][1] for i in range(60)])
    r = evaluate(images, None, "fd-classifier", classifier=str(path), labels=labels)
    direct = classifier_report(path, images, labels)
    assert r["fd_classifier"] == pytest.approx(direct["fd"], rel=1e-9)
    assert r["metrics"]["fd-classifier"]["reference"] == "shapes held-out split at 32px"
    assert r["samples"]["labels"] == "6 per class (10 classes)"

    digits = build_dataset("digits", 16, train=True)
    x = np.stack([digits[i][0].permute(1, 2, 0).numpy() for i in range(200)])
    y = np.array([digits[i][1] for i in range(200)])
    r = evaluate(x, None, "cas", data="digits", labels=y, cas_steps=50)
    assert 0.0 <= r["cas_top1"] <= r["cas_top5"] <= 1.0
    assert r["metrics"]["cas"]["classifier"].endswith("50 steps, batch 64, seed 0")
