"""Evaluation under the ImageNet protocol without TensorFlow: FID, sFID, IS, precision/recall,
KID, FD-DINOv2, and dataset-classifier metrics (FD in classifier features, CAS).

    from genzoo.metrics import evaluate
    result = evaluate("samples.npz", "VIRTUAL_imagenet256_labeled.npz", ("fid", "sfid", "is", "pr"))
    result["fid"], result["metrics"]["fid"]  # the number, and the number with its protocol
"""

from genzoo.metrics.classifier import classifier_report, load_classifier, train_classifier
from genzoo.metrics.evaluate import METRICS, evaluate
from genzoo.metrics.fid import frechet_distance
from genzoo.metrics.inception_score import inception_score
from genzoo.metrics.kid import kernel_inception_distance
from genzoo.metrics.precision_recall import precision_recall
from genzoo.metrics.reference import build_reference
from genzoo.metrics.statistics import FeatureStats, StreamingStats

__all__ = [
    "METRICS",
    "FeatureStats",
    "StreamingStats",
    "build_reference",
    "classifier_report",
    "evaluate",
    "frechet_distance",
    "inception_score",
    "kernel_inception_distance",
    "load_classifier",
    "precision_recall",
    "train_classifier",
]
