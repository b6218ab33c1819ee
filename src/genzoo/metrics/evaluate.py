"""`evaluate`: samples against a reference under the ImageNet protocol, every number recorded
next to the protocol that produced it (counts, label balance, reference id, extractor weights,
resize, precision).

Flow: open both sides, decide per side what must be computed from images (statistics already
stored in a file are used as they are, as ADM's evaluator does), check that resolutions agree
unless a resize policy says otherwise, make one feature pass per side, then compute the metrics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genzoo.errors import GenzooError
from genzoo.metrics.feature_cache import cache_key, default_cache_dir, load_features, save_features
from genzoo.metrics.features import Extracted, Needs, extract
from genzoo.metrics.fid import FD_METHODS, frechet_distance_stats
from genzoo.metrics.inception_score import IS_MODES, inception_score, split_bounds
from genzoo.metrics.inputs import ImageSource, label_policy, open_source
from genzoo.metrics.kid import KID_SUBSET_SIZE, KID_SUBSETS, kernel_inception_distance
from genzoo.metrics.precision_recall import DISTANCE_DTYPES, NEIGHBOURHOOD, precision_recall
from genzoo.metrics.reference import reference_id
from genzoo.metrics.resize import resize_pil_bicubic

METRICS = ("fid", "sfid", "is", "pr", "kid", "fd-dinov2", "fd-classifier", "cas")
ALIASES = {"isc": "is", "prc": "pr", "fd_dinov2": "fd-dinov2", "fd_classifier": "fd-classifier"}
RESIZE_POLICIES = {
    "none": "none (sample and reference resolutions must match)",
    "tf-bilinear": "none outside the network; Inception's TF1 bilinear resize to 299 (as ADM)",
    "pil-bicubic": "samples resized to the reference resolution with PIL bicubic",
}
FEATURE_NAMES = {
    "pool3": "Inception pool_3 (2048-d)",
    "spatial": "Inception mixed_6/conv[..., :7] = Mixed_6d.branch1x1, (h, w, c) order (2023-d)",
    "dinov2": "DINOv2 CLS token",
}
FD_KIND = {"fid": "pool3", "sfid": "spatial", "fd-dinov2": "dinov2"}


def parse_metrics(metrics) -> list[str]:
    names = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    out = []
    for name in names:
        key = ALIASES.get(name.strip().lower(), name.strip().lower())
        if key not in METRICS:
            raise GenzooError(f"unknown metric {name!r}; known metrics: {', '.join(METRICS)}")
        if key not in out:
            out.append(key)
    if not out:
        raise GenzooError(f"no metrics requested; choose from {', '.join(METRICS)}")
    return out


def _plan(metrics: list[str], samples: ImageSource, ref: ImageSource | None) -> tuple[Needs, Needs]:
    gen, real = Needs(), Needs()
    for m in metrics:
        if m in FD_KIND:
            kind = FD_KIND[m]
            if kind not in samples.stats:
                gen.stats.add(kind)
            if kind not in ref.stats:
                real.stats.add(kind)
        elif m in ("pr", "kid"):
            gen.pool3 = real.pool3 = True
        elif m == "is":
            gen.logits = True
        else:  # classifier metrics read the sample images themselves
            gen.images = True
    for side, needs, what in ((samples, gen, "samples"), (ref, real, "reference")):
        if needs.any and (side is None or not side.has_images):
            wanted = [m for m in metrics if _needs_images(m, needs)]
            raise GenzooError(
                f"{what} {side.name}: holds statistics only, but {', '.join(wanted)} need(s) its "
                f"images (arr_0); pass a file with images"
            )
    return gen, real


def _needs_images(metric: str, needs: Needs) -> bool:
    if metric in FD_KIND:
        return FD_KIND[metric] in needs.stats
    return {"pr": needs.pool3, "kid": needs.pool3, "is": needs.logits}.get(metric, needs.images)


def _resize_step(policy: str, samples: ImageSource, ref: ImageSource | None, compares: bool):
    """Per-batch check (and optional resize) of sample resolution against the reference."""
    if policy not in RESIZE_POLICIES:
        raise GenzooError(
            f"unknown resize policy {policy!r}; choose one of {', '.join(RESIZE_POLICIES)}"
        )
    target = ref.size if (ref is not None and compares) else None

    def prepare(batch: np.ndarray) -> np.ndarray:
        size = batch.shape[1:3]
        if target is None or tuple(size) == tuple(target) or policy == "tf-bilinear":
            return batch
        if policy == "pil-bicubic":
            return resize_pil_bicubic(batch, tuple(target))
        raise GenzooError(
            f"samples are {size[1]}x{size[0]} but the reference {ref.name} is "
            f"{target[1]}x{target[0]}: comparing different resolutions is a protocol error. "
            "Sample at the reference resolution, or say how to compare with --resize-policy "
            "tf-bilinear (ADM: let Inception resize both to 299) or pil-bicubic"
        )

    return prepare


def _is_order_warning(labels: np.ndarray | None, num: int, split_size: int) -> str | None:
    """Warn when full contiguous ADM splits see far fewer classes than the file holds.

    Uniformly random labels fill a split of 5000 with nearly all of 1000 classes; a class-sorted
    file with 50 per class puts only 100 in each.
    """
    if labels is None or len(labels) != num or num < split_size:
        return None
    overall = len(np.unique(labels))
    full = [(lo, hi) for lo, hi in split_bounds(num, "adm", 0, split_size) if hi - lo == split_size]
    fewest = min(len(np.unique(labels[lo:hi])) for lo, hi in full)
    if fewest < 0.75 * min(overall, split_size):
        return (
            f"a contiguous split holds only {fewest} of {overall} classes: the file looks "
            "class-sorted, which lowers ADM-mode IS; shuffle the file or use is_mode="
            "'torch-fidelity'"
        )
    return None


def _reference_features(
    source: ImageSource, needs: Needs, common: dict, use_cache: bool, cache_dir, *extractors
) -> tuple[Extracted, str | None]:
    """The reference set's features: from the disk cache when an entry fits, else extracted
    (and stored). Returns them with a note of where they came from."""
    described = {n: e.describe() for n, e in zip(("inception", "dinov2"), extractors) if e}
    key = cache_key(source, needs, described) if use_cache and needs.any else None
    if key is None:
        return extract(source, needs, desc="reference", **common), None
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    cached = load_features(folder, key)
    if cached is not None:
        return cached, f"read from the cache {folder / key}"
    features = extract(source, needs, desc="reference", **common)
    try:
        path = save_features(folder, key, features)
    except OSError as e:  # a read-only home must not fail the evaluation
        return features, f"extracted (not cached: {e})"
    return features, f"extracted and cached in {path}"


def evaluate(
    samples,
    ref=None,
    metrics=("fid",),
    *,
    batch_size: int = 50,
    device: str = "cpu",
    inception_weights: str | None = None,
    dinov2_weights: str | None = None,
    dinov2_resize: str = "pil",
    resize_policy: str = "none",
    is_mode: str = "adm",
    is_splits: int = 10,
    pr_precision: str = "float32",
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
    fd_method: str = "eigh",
    labels: np.ndarray | None = None,
    data: str | None = None,
    classifier: str | None = None,
    cas_steps: int = 3000,
    seed: int = 0,
    allow_download: bool = True,
    progress: bool = False,
    ref_cache: bool = True,
    cache_dir: str | Path | None = None,
) -> dict:
    """Evaluate `samples` against `ref`; returns flat numbers plus their protocol.

    samples: an ADM npz, a folder of PNG/JPEG images, a statistics npz, a uint8 NHWC array or an
    iterable of uint8 NHWC batches. ref: the same kinds (typically ADM's reference npz).
    Classifier metrics ("fd-classifier", "cas") compare against the held-out split of `data`
    (default: the dataset the classifier was trained on) instead of `ref`.
    Features of a reference file are cached on disk (`ref_cache`, in `cache_dir`, default
    $GENZOO_CACHE or ~/.cache/genzoo) and reused while the file and extractors are unchanged.
    """
    metrics = parse_metrics(metrics)
    if is_mode not in IS_MODES:
        raise GenzooError(f"unknown IS mode {is_mode!r}; choose one of {', '.join(IS_MODES)}")
    if fd_method not in FD_METHODS:
        raise GenzooError(f"unknown FD method {fd_method!r}; choose one of {FD_METHODS}")
    if pr_precision not in DISTANCE_DTYPES:
        raise GenzooError(f"unknown P/R precision {pr_precision!r}; choose {list(DISTANCE_DTYPES)}")
    if batch_size < 1:
        raise GenzooError(f"batch size must be >= 1, got {batch_size}")
    if "fd-classifier" in metrics and classifier is None:
        raise GenzooError("fd-classifier needs classifier=PATH (--classifier)")
    if "cas" in metrics and not data:
        raise GenzooError("cas needs the real dataset: data=SPEC (--data), e.g. 'shapes'")
    sample_src = open_source(samples, what="samples")
    if labels is not None:
        sample_src.labels = np.asarray(labels, dtype=np.int64)
    compares = [m for m in metrics if m in ("fid", "sfid", "pr", "kid", "fd-dinov2")]
    ref_src = open_source(ref, what="reference") if ref is not None else None
    if compares and ref_src is None:
        raise GenzooError(f"{', '.join(compares)} need a reference: pass ref=PATH (--ref)")
    gen_needs, real_needs = _plan(metrics, sample_src, ref_src)
    if gen_needs.images and sample_src.num and sample_src.size:
        from genzoo.metrics.classifier import check_memory

        check_memory(sample_src.num, sample_src.size[0], f"samples {sample_src.name}")
    prepare = _resize_step(resize_policy, sample_src, ref_src, bool(compares))

    inception = dinov2 = None
    if gen_needs.inception or real_needs.inception:
        from genzoo.metrics.inception import InceptionFeatures

        inception = InceptionFeatures(inception_weights, allow_download=allow_download)
        inception.to(device)
    if gen_needs.dinov2 or real_needs.dinov2:
        from genzoo.metrics.dinov2 import DinoFeatures

        dinov2 = DinoFeatures(dinov2_weights, resize=dinov2_resize, allow_download=allow_download)
        dinov2.to(device)
    common = dict(inception=inception, dinov2=dinov2, batch_size=batch_size, progress=progress)
    gen = extract(sample_src, gen_needs, prepare=prepare, desc="samples", **common)
    real, real_from = Extracted(), None
    if ref_src is not None:
        real, real_from = _reference_features(
            ref_src, real_needs, common, ref_cache, cache_dir, inception, dinov2
        )
    num = gen.num or sample_src.num

    result: dict = {"metrics": {}}
    record = result["metrics"]
    for m in metrics:
        if m in FD_KIND:
            kind = FD_KIND[m]
            a = gen.stats.get(kind) or sample_src.stats[kind]
            b = real.stats.get(kind) or ref_src.stats[kind]
            key = m.replace("-", "_")
            result[key] = frechet_distance_stats(a, b, fd_method)
            record[m] = {
                "value": result[key],
                "features": FEATURE_NAMES[kind],
                "samples": "precomputed statistics" if kind in sample_src.stats else a.num,
                "reference": "precomputed statistics" if kind in ref_src.stats else b.num,
                "trace_method": fd_method,
                "statistics": "float64 mean and unbiased covariance",
            }
        elif m == "is":
            score = inception_score(gen.logits, is_mode, splits=is_splits, seed=2020)
            result["is"], result["is_std"] = score.mean, score.std
            record["is"] = {
                "value": score.mean,
                "std": score.std,
                "splits": score.splits,
                "split_rule": (
                    "contiguous splits of 5000 in file order (ADM)"
                    if is_mode == "adm"
                    else f"RandomState(2020) shuffle, {is_splits} equal splits (torch-fidelity)"
                ),
                "logits": "pool_3 . W (no bias), float64 log-softmax",
                "samples": gen.num,
            }
            warning = (
                _is_order_warning(sample_src.labels, gen.num, 5000) if is_mode == "adm" else None
            )
            if warning:
                record["is"]["warning"] = warning
        elif m == "pr":
            pr = precision_recall(gen.pool3, real.pool3, distance_dtype=pr_precision, device=device)
            result["precision"], result["recall"] = pr.precision, pr.recall
            record["pr"] = {
                "precision": pr.precision,
                "recall": pr.recall,
                "k": NEIGHBOURHOOD,
                "distances": f"squared L2 in {pr_precision}, <= radius, blocks of 10000",
                "samples": gen.num,
                "reference_images": real.num,
            }
        elif m == "kid":
            kid = kernel_inception_distance(
                gen.pool3, real.pool3, subsets=kid_subsets, subset_size=kid_subset_size
            )
            result["kid"], result["kid_std"] = kid.mean, kid.std
            record["kid"] = {
                "value": kid.mean,
                "std": kid.std,
                "kernel": "(x.y / d + 1)^3, unbiased MMD^2",
                "subsets": kid.subsets,
                "subset_size": kid.subset_size,
                "seed": 2020,
                "samples": gen.num,
                "reference_images": real.num,
            }
        elif m == "fd-classifier":
            from genzoo.metrics.classifier import classifier_report

            report = classifier_report(
                classifier, gen.images, sample_src.labels, data, device=device
            )
            result["fd_classifier"] = report["fd"]
            if report["accuracy"] is not None:
                result["classifier_accuracy"] = report["accuracy"]
            record["fd-classifier"] = {"value": report.pop("fd"), **report}
        elif m == "cas":
            from genzoo.metrics.cas import classification_accuracy_score

            cas = classification_accuracy_score(
                gen.images, sample_src.labels, data, steps=cas_steps, seed=seed, device=device,
                quiet=not progress,
            )  # fmt: skip
            result["cas_top1"], result["cas_top5"] = cas["top1"], cas["top5"]
            record["cas"] = {"value": cas.pop("top1"), **cas}

    result["samples"] = {
        "source": sample_src.name,
        "num": num,
        "resolution": list(sample_src.size) if sample_src.size else None,
        "labels": label_policy(sample_src.labels, num),
    }
    if ref_src is not None:
        result["reference"] = {
            "id": reference_id(ref_src),
            "num_images": real.num or ref_src.num,
            "resolution": list(ref_src.size) if ref_src.size else "unknown",
            "precomputed_statistics": sorted(ref_src.stats),
        }
        if real_from:
            result["reference"]["features"] = real_from
    result["feature_extractors"] = {
        name: net.describe() for name, net in (("inception", inception), ("dinov2", dinov2)) if net
    }
    result["resize_policy"] = RESIZE_POLICIES[resize_policy]
    result["device"] = str(device)
    result["numerics"] = "float32 features (TF32 off), float64 statistics and metrics"
    return result
