"""A small CNN classifier of a dataset's classes: a feature space for FD where Inception means
little (the embedded `shapes` and `digits`), and the network behind CAS.

`classifier_report` gives FD between generated and real held-out images in the classifier's
penultimate feature space, and how often generated sample i is classified as its label.

Architecture: stride-2 3x3 stages (conv, batch norm, ReLU) doubling the width until the map is
4x4 or smaller, then global average pooling (the features) and a linear head. At 32x32 with
width 32 that is 32-64-128 channels and about 2.6 M multiply-adds per image, so a few thousand
steps train in a minute or two on two CPU cores. (A full-resolution stem triples the cost for
little gain on these small domains.)

Saved as `NAME.safetensors` (weights) plus `NAME.json` (architecture and provenance), each written
to a temporary file and renamed.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from genzoo.errors import GenzooError
from genzoo.files import atomic_write
from genzoo.metrics.fid import frechet_distance
from genzoo.metrics.statistics import stats_of

ARCH = "genzoo-small-cnn"


@dataclass
class ClassifierConfig:
    num_classes: int
    res: int
    width: int = 32
    arch: str = ARCH
    data: str = ""  # dataset spec it was trained on ("" for generated samples)
    data_seed: int = 0  # stream of procedural datasets
    class_names: list[str] = field(default_factory=list)
    train: dict = field(default_factory=dict)  # steps, batch size, lr, seed, held-out accuracy

    @property
    def stages(self) -> int:
        return max(1, math.ceil(math.log2(max(self.res, 8) / 4)))

    @property
    def feature_dim(self) -> int:
        return self.width * 2 ** (self.stages - 1)


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.config = cfg
        widths = [3] + [cfg.width * 2**i for i in range(cfg.stages)]
        layers = [_conv_bn_relu(a, b, stride=2) for a, b in zip(widths[:-1], widths[1:])]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(cfg.feature_dim, cfg.num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW images -> penultimate features [N, feature_dim]."""
        x = images.to(self.head.weight.device, torch.float32) / 127.5 - 1.0
        return self.body(x).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


# -- data ---------------------------------------------------------------------------------------


def dataset_tensors(
    spec: str, res: int, *, train: bool, data_seed: int = 0, quiet: bool = True
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """All images (uint8 NCHW) and labels of a dataset split, held in memory.

    `data_seed` picks the stream of procedural datasets (`shapes`); keep it equal to the one the
    generator was trained on.
    """
    from genzoo.data import build_dataset

    ds = build_dataset(spec, res, train=train, seed=data_seed)
    if getattr(ds, "is_latent", False):
        raise GenzooError(f"data {spec!r} is a latent cache; the classifier needs images")
    check_memory(len(ds), res, f"data {spec!r}")
    images = torch.empty(len(ds), 3, res, res, dtype=torch.uint8)
    labels = torch.empty(len(ds), dtype=torch.long)
    split = "train" if train else "held-out"
    for i in tqdm(range(len(ds)), desc=f"load {spec} {split}", disable=quiet, file=sys.stderr):
        image, label = ds[i]
        images[i], labels[i] = image, int(label)
    return images, labels, list(ds.class_names)


def check_memory(num: int, res: int, what: str, limit_gb: float = 8.0) -> None:
    size_gb = num * 3 * res * res / 1e9
    if size_gb > limit_gb:
        raise GenzooError(
            f"{what}: {num} images at {res}x{res} take {size_gb:.1f} GB in memory; the dataset "
            f"classifier is meant for small domains (limit {limit_gb:.0f} GB). Use a lower "
            "resolution or fewer images"
        )


def nchw_uint8(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Validated uint8 NHWC array or tensor -> uint8 NCHW tensor."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise GenzooError(
            f"images must be uint8 [N, H, W, 3] (NHWC), got {x.dtype} {tuple(x.shape)}"
        )
    return x.permute(0, 3, 1, 2).contiguous()


# -- training -----------------------------------------------------------------------------------


def fit_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: ClassifierConfig,
    *,
    steps: int = 3000,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    device: str = "cpu",
    quiet: bool = True,
) -> SmallCNN:
    """Train on uint8 NCHW `images` with labels in [0, num_classes): AdamW, warm-up, cosine."""
    if len(images) != len(labels) or len(images) < 2:
        raise GenzooError(f"need at least 2 labelled images, got {len(images)} / {len(labels)}")
    if int(labels.min()) < 0 or int(labels.max()) >= cfg.num_classes:
        raise GenzooError(
            f"labels must lie in [0, {cfg.num_classes}), got [{int(labels.min())}, "
            f"{int(labels.max())}]"
        )
    torch.manual_seed(seed)
    model = SmallCNN(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    warmup = min(100, steps // 10)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=gen)
    cursor = 0
    bar = tqdm(range(steps), desc="train classifier", disable=quiet, file=sys.stderr)
    for _ in bar:
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(images), generator=gen), 0
        idx = order[cursor : cursor + batch_size]
        cursor += batch_size
        x, y = images[idx], labels[idx].to(device)
        # A random circular shift of up to 1/8 of the side per batch: cheap regularisation.
        x = _augment(x, gen)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return model.eval()


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    shift = max(1, x.shape[-1] // 8)
    dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=gen))
    x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    return x


@torch.inference_mode()
def predict(
    model: SmallCNN, images: torch.Tensor, batch_size: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, d], logits [N, C]) of uint8 NCHW images, in batches."""
    model.eval()
    feats, logits = [], []
    for start in range(0, len(images), batch_size):
        f = model.features(images[start : start + batch_size])
        feats.append(f.float().cpu())
        logits.append(model.head(f).float().cpu())
    return torch.cat(feats), torch.cat(logits)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return float((top == labels.view(-1, 1)).any(dim=1).double().mean())


def train_classifier(
    data: str,
    res: int,
    out: str | Path,
    *,
    steps: int = 3000,
    batch_size: int = 64,
    lr: float = 3e-3,
    width: int = 32,
    seed: int = 0,
    data_seed: int = 0,
    device: str = "cpu",
    quiet: bool = False,
) -> dict:
    """`genzoo train-classifier`: train on `data` at `res`, report held-out accuracy, save."""
    images, labels, names = dataset_tensors(data, res, train=True, data_seed=data_seed, quiet=quiet)
    cfg = ClassifierConfig(num_classes=len(names), res=res, width=width, data=data)
    cfg.data_seed = data_seed
    cfg.class_names = names
    model = fit_classifier(
        images, labels, cfg, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
        device=device, quiet=quiet,
    )  # fmt: skip
    test_images, test_labels, _ = dataset_tensors(
        data, res, train=False, data_seed=data_seed, quiet=quiet
    )
    _, logits = predict(model, test_images)
    report = {
        "held_out_top1": topk_accuracy(logits, test_labels, 1),
        "held_out_top5": topk_accuracy(logits, test_labels, 5),
        "held_out_images": len(test_labels),
        "train_images": len(labels),
    }
    cfg.train = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, **report}
    save_classifier(model, out)
    return {"path": str(out), **report}


# -- report -------------------------------------------------------------------------------------


def images_and_labels(
    images: str | Path | np.ndarray | torch.Tensor, labels: np.ndarray | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 NCHW images and long labels from an ADM npz (arr_1) or an NHWC array."""
    if isinstance(images, str | Path):
        from genzoo.data.npz import iter_npz_images, npz_info, read_npz_labels

        info = npz_info(images)
        check_memory(info.num, info.height, f"samples {images}")
        if labels is None:
            labels = read_npz_labels(images)
        images = np.concatenate(list(iter_npz_images(images, 1024)))
    x = nchw_uint8(images)
    if labels is not None:
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if labels.shape != (len(x),):
            raise GenzooError(f"labels must have shape [{len(x)}], got {tuple(labels.shape)}")
    return x, labels


def _check_resolution(x: torch.Tensor, res: int, what: str) -> None:
    if x.shape[2] != res or x.shape[3] != res:
        raise GenzooError(
            f"{what}: images are {x.shape[3]}x{x.shape[2]} but the classifier works at "
            f"{res}x{res}; sample at that resolution (the classifier does not resize)"
        )


def classifier_report(
    classifier: str | Path | SmallCNN,
    images: str | Path | np.ndarray | torch.Tensor,
    labels: np.ndarray | None = None,
    ref_spec: str | None = None,
    res: int | None = None,
    *,
    device: str = "cpu",
) -> dict:
    """FD to real held-out images in the classifier's feature space, and class fidelity.

    `images` are uint8 NHWC (or an ADM npz whose arr_1 supplies the labels); `ref_spec` and
    `res` default to the dataset and resolution the classifier was trained on.
    """
    model = load_classifier(classifier, device)
    cfg: ClassifierConfig = model.config
    ref_spec = ref_spec or cfg.data
    res = res or cfg.res
    if not ref_spec:
        raise GenzooError("classifier_report: give ref_spec (the real dataset, e.g. 'shapes')")
    if res != cfg.res:
        raise GenzooError(f"the classifier was trained at {cfg.res}px, not {res}px")
    x, y = images_and_labels(images, labels)
    _check_resolution(x, res, "classifier_report")
    real, real_labels, _ = dataset_tensors(ref_spec, res, train=False, data_seed=cfg.data_seed)
    gen_feats, gen_logits = predict(model, x)
    real_feats, real_logits = predict(model, real)
    a, b = stats_of(gen_feats), stats_of(real_feats)
    report = {
        "fd": frechet_distance(a.mu, a.sigma, b.mu, b.sigma),
        "accuracy": topk_accuracy(gen_logits, y, 1) if y is not None else None,
        "real_accuracy": topk_accuracy(real_logits, real_labels, 1),
        "num_samples": len(x),
        "num_real": len(real),
        "reference": f"{ref_spec} held-out split at {res}px",
        "features": f"{cfg.arch} penultimate ({cfg.feature_dim}-d)",
    }
    if isinstance(classifier, str | Path):
        report["classifier"] = str(classifier)
    return report


# -- files --------------------------------------------------------------------------------------


def config_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def save_classifier(model: SmallCNN, out: str | Path) -> Path:
    out = Path(out)
    if out.suffix != ".safetensors":
        raise GenzooError(f"--out {out}: the classifier is saved as NAME.safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(asdict(model.config), indent=2) + "\n"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(config_path(out), lambda tmp: Path(tmp).write_text(text))
    atomic_write(out, lambda tmp: save_file(state, tmp, metadata={"config": text}))
    return out


def load_classifier(path: str | Path | SmallCNN, device: str = "cpu") -> SmallCNN:
    if isinstance(path, SmallCNN):
        return path.to(device).eval()
    path = Path(path)
    if not path.is_file():
        raise GenzooError(
            f"{path}: no such classifier file; train one with genzoo train-classifier"
        )
    cfg_file = config_path(path)
    if not cfg_file.is_file():
        raise GenzooError(f"{path}: its config {cfg_file} is missing; keep the two files together")
    try:
        cfg = ClassifierConfig(**json.loads(cfg_file.read_text()))
        model = SmallCNN(cfg)
        model.load_state_dict(load_file(str(path)))
    except (TypeError, ValueError, RuntimeError) as e:
        raise GenzooError(f"{path}: not a genzoo dataset classifier ({e})") from e
    return model.to(device).eval()
