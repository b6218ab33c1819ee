"""The family-generic core: a family, backbone and tokenizer defined here (one class and one
registry line each) train, resume and sample through the ordinary loop, CLI and Pipeline."""

import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

import genzoo
from genzoo.backbones import BACKBONES
from genzoo.cli import main
from genzoo.config import RunConfig, apply_overrides
from genzoo.errors import GenzooError
from genzoo.families import FAMILIES
from genzoo.families.base import Family
from genzoo.tokenizers import TOKENIZERS
from genzoo.tokenizers.base import Tokenizer
from genzoo.train.loop import train


@dataclass
class MeanColourConfig:
    kind: ClassVar[str] = "mean-colour"
    num_classes: int = 10
    class_dropout_prob: float = 0.0
    res: int = 16


class MeanColour(nn.Module):
    """A per-class colour table: the image of class c is the flat colour table[c]."""

    Config = MeanColourConfig

    @staticmethod
    def resolve(cfg, *, res, tokenizer, num_classes, family):
        cfg.num_classes, cfg.res = num_classes, res

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.table = nn.Parameter(torch.zeros(cfg.num_classes + 1, 3))

    def forward(self, y):
        return self.table[y]


@dataclass
class RegressConfig:
    kind: ClassVar[str] = "regress"
    noise: float = 0.0  # sampling adds noise·N(0, 1) to each colour


class Regress(Family):
    """Least squares onto each image's mean colour; sampling returns that colour + noise."""

    kind = "regress"
    Config = RegressConfig
    sample_options = {"brightness": 1.0, "jitter": False}

    def loss(self, net, z, y, *, generator=None, step=0, total_steps=1):
        target = z.mean(dim=(2, 3))
        return {"loss": ((net(y) - target) ** 2).mean(), "step_seen": torch.tensor(float(step))}

    def sample(self, net, y, *, generators, null_label, progress=False, brightness=1.0,
               jitter=False):  # fmt: skip
        colour = net(y) * brightness
        if jitter:
            draws = [torch.randn(3, generator=g) for g in generators]
            colour = colour + self.cfg.noise * torch.stack(draws)
        side = net.cfg.res
        return colour[:, :, None, None].expand(-1, -1, side, side)


@dataclass
class HalfConfig:
    kind: ClassVar[str] = "half"


class HalfTokenizer(Tokenizer):
    """Pixels at half amplitude (invertible), to show a tokenizer is one class + one line."""

    Config = HalfConfig

    @classmethod
    def from_config(cls, cfg):
        return cls()

    def __init__(self):
        super().__init__()
        self.spec, self.stride, self.channels, self.scale = "half", 1, 3, 0.5
        self.freeze()

    def encode(self, x, generator=None):
        return x * 0.5

    def decode(self, z):
        return z * 2.0


@pytest.fixture
def toy_parts():
    BACKBONES.register("mean-colour", MeanColour)
    FAMILIES.register("regress", Regress)
    TOKENIZERS.register("half", HalfTokenizer)
    yield
    BACKBONES.unregister("mean-colour")
    FAMILIES.unregister("regress")
    TOKENIZERS.unregister("half")


def toy_config(steps):
    cfg = RunConfig(preset="toy")
    apply_overrides(
        cfg,
        [
            "model.kind=mean-colour",
            "family.kind=regress",
            "tokenizer=half",
            "data.spec=shapes:centred",
            "data.res=16",
            f"train.steps={steps}",
            "train.batch_size=8",
            "train.lr=0.05",
            "train.ema_decay=0.5",
            "train.ckpt_every=2",
            "train.log_every=1",
            "train.quiet=true",
        ],
    )
    return cfg


def test_a_toy_family_trains_resumes_and_samples_through_the_ordinary_loop(toy_parts, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(toy_config(6), whole, device="cpu")
    train(toy_config(3), split, device="cpu")  # stopped, then resumed to the same end
    train(toy_config(6), split, device="cpu")
    a, b = genzoo.load(whole), genzoo.load(split)
    assert torch.equal(a.model.table, b.model.table)  # resume is exact
    assert a.model.table.abs().sum() > 0  # it learned something

    saved = json.loads((whole / "config.json").read_text())
    assert saved["family"] == {"kind": "regress", "noise": 0.0}
    assert saved["model"]["kind"] == "mean-colour" and saved["tokenizer"] == {"kind": "half"}
    logged = [json.loads(line) for line in (whole / "log.jsonl").read_text().splitlines()]
    assert [r["step_seen"] for r in logged if "step_seen" in r][:3] == [0.0, 1.0, 2.0]

    images = a.sample([0, 1, 1], seed=0)
    assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8
    assert (images[1] == images[2]).all()  # one colour per class
    dim = a.sample([1], brightness=0.0)
    assert (dim == 128).all()  # colour 0 → mid grey after decoding
    # per-sample draws depend on (seed, i), not on the batch
    solo = a.sample([3], seed=4, indices=[2], jitter=True)
    batch = a.sample([0, 1, 3], seed=4, jitter=True)
    assert (solo[0] == batch[2]).all()
    assert (whole / "grid.png").is_file()


def test_an_option_the_family_lacks_is_refused_by_name(toy_parts, tmp_path):
    train(toy_config(2), tmp_path / "run", device="cpu")
    pipe = genzoo.load(tmp_path / "run")
    with pytest.raises(GenzooError, match="option 'temperature' is not a sampling option of the "
                       "regress family; its options are: brightness, jitter"):  # fmt: skip
        pipe.sample([0], temperature=1.0)
    # the CLI reads strings with the family's types
    assert pipe.options(brightness="0.5", jitter="true") == {"brightness": 0.5, "jitter": True}
    out = tmp_path / "s.npz"
    argv = ["sample", "--run", str(tmp_path / "run"), "--num", "4", "--out", str(out), "--quiet"]
    assert main([*argv, "--set", "brightness=0.5", "--device", "cpu"]) == 0
    assert np.load(out)["arr_0"].shape == (4, 16, 16, 3)
    assert main([*argv, "--temperature", "0.7", "--device", "cpu"]) == 2


def test_switching_kind_gives_that_kinds_defaults_and_unknown_keys_list_the_kinds_keys():
    from genzoo.zoo.presets import preset

    cfg = preset("dit-s2")
    apply_overrides(cfg, ["family.kind=ar", "family.order=random", "model.kind=gpt"])
    assert cfg.family.kind == "ar" and cfg.family.order == "random"
    assert cfg.model.kind == "gpt" and cfg.model.dim == 4096  # GPT defaults, not DiT's
    apply_overrides(cfg, ["model.n_layer=12", "family.kind=ar"])  # same kind: fields kept
    assert cfg.model.n_layer == 12 and cfg.family.order == "random"
    with pytest.raises(GenzooError, match=r"family kind 'ar'. Its keys: family.kind, family.order"):
        apply_overrides(cfg, ["family.ordr=raster"])
    with pytest.raises(GenzooError, match="unknown family kind 'gann'; choose one of: diffusion"):
        apply_overrides(cfg, ["family=gann"])


def test_a_run_directory_of_the_previous_release_loads(tmp_path):
    # genzoo 0.1 wrote the family as a string beside `diffusion` and `flow` sections, and the
    # tokenizer as a spec string
    old = {
        "preset": "sit-tiny",
        "family": "flow",
        "model": {**RunConfig().to_dict()["model"], "depth": 2},
        "diffusion": {"noise_schedule": "linear", "diffusion_steps": 1000, "predict": "eps",
                      "learn_sigma": True, "sigma_small": False, "rescale_learned_sigmas": False},
        "flow": {"path": "gvp", "predict": "velocity", "time_dist": "uniform"},
        "data": {"spec": "shapes"},
        "tokenizer": {"spec": "kl-vae:/some/vae", "scale": 0.13},
        "train": {"steps": 3},
    }  # fmt: skip
    old["model"].pop("kind")
    cfg = RunConfig.from_dict(old)
    assert cfg.family.kind == "flow" and cfg.family.path == "gvp"
    assert cfg.model.kind == "dit" and cfg.model.depth == 2
    assert (cfg.tokenizer.kind, cfg.tokenizer.source, cfg.tokenizer.scale) == (
        "kl-vae", "/some/vae", 0.13,
    )  # fmt: skip
    old["family"] = "gan"
    with pytest.raises(GenzooError, match="older genzoo with family 'gan'.*start a new run"):
        RunConfig.from_dict(old)
