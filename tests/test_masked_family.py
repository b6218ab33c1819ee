"""The `masked` family with family.tokens=discrete: the training mask and loss re-enacted, the
sampler's options, guidance window and re-mask counts, the genzoo backbone (token or adaLN
class), and a tiny MaskGIT trained on a token cache, resumed bit-exactly and sampled by the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from maskgit_layout import TINY_VQGAN, random_state, vqgan_shapes
from torch import nn

import genzoo
from genzoo.backbones.maskgit import MaskGIT, MaskGITConfig
from genzoo.cli import main
from genzoo.config import RunConfig, apply_override
from genzoo.errors import GenzooError
from genzoo.families import FAMILIES, build_family
from genzoo.families.masked import Masked, MaskedConfig
from genzoo.zoo.presets import preset

pytestmark = pytest.mark.usefixtures("one_thread")
V, L, K = 12, 6, 3
TINY = dict(codebook_size=V, image_seq_len=L, condition_num_classes=K, hidden_size=32,
            num_hidden_layers=2, num_attention_heads=4, intermediate_size=48)  # fmt: skip


class Recorder(nn.Module):
    """A stand-in backbone: fixed logits; records what it is fed."""

    block_size = L

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(torch.randn(K + 1, L, V, generator=g))
        self.calls = []

    def forward(self, tokens, y, mask=None):
        self.calls.append((tokens.clone(), y.clone(), None if mask is None else mask.clone()))
        return self.table[y] + 0.1 * (tokens % 3)[..., None]


def test_training_masks_and_loss_are_the_official_recipe():
    family = Masked(MaskedConfig(label_smoothing=0.1, unmasked_weight=0.1))
    net, z = Recorder(), torch.randint(0, V, (4, 2, 3), generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, K])
    out = family.loss(net, z, y, generator=torch.Generator().manual_seed(4))
    tokens, seen_y, mask = net.calls[0]
    # re-enacted: t ~ U(0, 1) per sample, arccos(t)/(π/2) clamped to [1e-6, 1], round(L·r) ≥ 1
    g = torch.Generator().manual_seed(4)
    ratio = (torch.acos(torch.rand(4, generator=g)) / (math.pi / 2)).clamp(1e-6, 1)
    count = (L * ratio).round().clamp(min=1)
    expected_mask = torch.rand(4, L, generator=g).argsort(-1) < count[:, None]
    assert torch.equal(mask, expected_mask) and torch.equal(seen_y, y)
    assert torch.equal(tokens, z.reshape(4, L))  # the backbone masks; the targets are intact
    logits = net.table[y] + 0.1 * (tokens % 3)[..., None]
    logp = logits.log_softmax(-1)
    nll = -logp.gather(-1, tokens[..., None])[..., 0]
    smooth = 0.9 * nll - 0.1 * logp.mean(-1)  # label smoothing 0.1
    w = expected_mask.float() + 0.1 * (~expected_mask).float()
    assert torch.allclose(out["loss"], (smooth * w).sum() / w.sum(), atol=1e-6)
    hits = (logits.argmax(-1) == tokens) & expected_mask
    assert torch.allclose(out["acc"], hits.sum() / expected_mask.sum())
    out["loss"].backward()
    assert net.table.grad is not None


def test_default_loss_counts_only_masked_positions():
    family, net = Masked(MaskedConfig()), Recorder()
    z = torch.randint(0, V, (3, L), generator=torch.Generator().manual_seed(2))
    out = family.loss(net, z, torch.tensor([0, 1, 2]), generator=torch.Generator().manual_seed(0))
    tokens, y, mask = net.calls[0]
    ce = F.cross_entropy((net.table[y] + 0.1 * (tokens % 3)[..., None]).transpose(1, 2), tokens,
                         reduction="none")  # fmt: skip
    assert torch.allclose(out["loss"], ce[mask].mean(), atol=1e-6)
    with pytest.raises(GenzooError, match="token ids"):
        family.loss(net, torch.randn(3, 4, 2, 2), torch.tensor([0, 1, 2]))


@pytest.mark.parametrize("law", ["truncnorm", "batch"])
def test_batch_laws_mask_the_same_count_in_every_row(law):
    family, net = Masked(MaskedConfig(mask_ratio_law=law, mask_schedule="exp")), Recorder()
    z = torch.randint(0, V, (5, L))
    family.loss(net, z, torch.zeros(5, dtype=torch.long), generator=torch.Generator())
    counts = net.calls[0][2].sum(1)
    assert torch.all(counts == counts[0])


def test_sampling_reveals_by_the_schedule_and_guides_inside_the_window():
    family, net = Masked(MaskedConfig()), Recorder()
    steps = 5
    ids = family.sample(net, torch.tensor([0, 2]), generators=None, null_label=K,
                        steps=steps, cfg=2.0, temperature=1.0)  # fmt: skip
    assert ids.shape == (2, L) and int(ids.max()) < V  # L = 6 is not a square: (N, L)
    masked = [int(c[2][0].sum()) for c in net.calls[::2]]  # conditional passes only
    expected, m = [L], L
    for s in range(1, steps):
        m = max(1, min(m - 1, math.floor(L * np.arccos(s / steps) / (math.pi / 2))))
        expected.append(m)
    assert masked == expected
    assert [c[1].tolist() for c in net.calls[:2]] == [[0, 2], [K, K]]  # [cond, null] per step
    net.calls.clear()  # linear: no guidance at step 0; a window (0.2, 0.6] on 1 − (s+1)/N
    family.sample(net, torch.tensor([1]), generators=None, null_label=K, steps=steps,
                  cfg=2.0, cfg_schedule="linear", cfg_interval=(0.2, 0.6))  # fmt: skip
    guided = [s for s in range(steps) if 0.2 < 1 - (s + 1) / steps <= 0.6]
    assert len(net.calls) == steps + len(guided) == 7


def test_options_are_typed_from_strings_and_checked_by_name():
    family, net = Masked(MaskedConfig()), Recorder()
    settings = family.sample_settings({"steps": "3", "temperature_annealing": "true",
                                       "cfg_interval": "0.1,0.5", "cfg": "2"})  # fmt: skip
    assert settings["steps"] == 3 and settings["temperature_annealing"] is True
    assert settings["cfg_interval"] == (0.1, 0.5) and settings["cfg"] == 2.0
    assert settings["temperature"] == 4.5 and settings["cfg_schedule"] == "constant"
    bad = [({"steps": 0}, "steps=0"), ({"temperature": -1.0}, "temperature=-1.0"),
           ({"cfg_interval": (0.5, 0.1)}, "cfg_interval"), ({"top_k": 3}, "not a sampling"),
           ({"cfg_schedule": "cos"}, "cfg_schedule='cos'")]  # fmt: skip
    for options, message in bad:
        with pytest.raises(GenzooError, match=message):
            family.sample(net, torch.tensor([0]), generators=None, null_label=K, **options)
    with pytest.raises(GenzooError, match="family.mask_schedule='sqrt'"):
        Masked(MaskedConfig(mask_schedule="sqrt"))


def test_the_family_and_backbone_are_registered_and_configurable():
    assert FAMILIES.get("masked") is Masked
    cfg = preset("maskgit-tiny")
    apply_override(cfg, "family.mask_schedule=cosine")
    apply_override(cfg, "model.model_type=UViT")
    again = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.to_dict()["family"]["kind"] == "masked"
    assert (
        again.to_dict()["model"]["kind"] == "maskgit"
        and build_family(again).cfg.tokens == "discrete"
    )
    published = preset("maskgit-titok-s128").model
    assert (published.model_type, published.hidden_size, published.num_hidden_layers) == (
        "UViT",
        1024,
        20,
    )


class Codebook:  # a discrete tokenizer: stride 4, V codes
    spec, vocab_size, discrete = "vq", V, True

    def latent_shape(self, res):
        return (res // 4, res // 4)


def test_resolve_fills_sizes_from_a_discrete_tokenizer():
    cfg = MaskGITConfig()
    MaskGIT.resolve(cfg, res=12, tokenizer=Codebook(), num_classes=K, family=None)
    assert (cfg.vocab_size, cfg.block_size, cfg.num_classes) == (V, 9, K)
    with pytest.raises(GenzooError, match="discrete tokenizer"):
        MaskGIT.resolve(cfg, res=8, tokenizer=object(), num_classes=K, family=None)
    with pytest.raises(GenzooError, match="needs model.model_type='UViT'"):
        MaskGIT(MaskGITConfig(**TINY, class_condition="adaln"))


def test_adaln_class_condition_starts_as_identity_and_then_uses_the_class():
    torch.manual_seed(0)
    net = MaskGIT(MaskGITConfig(**TINY, model_type="UViT", class_condition="adaln")).eval()
    assert "pos_embed" in dict(net.named_parameters()) and net.pos_embed.shape == (1, L, 32)
    tokens = torch.randint(0, V + 1, (2, L))
    a, b = net(tokens, torch.tensor([0, 1])), net(tokens, torch.tensor([2, K]))
    assert torch.equal(a, b)  # adaLN-Zero: the class has no effect at initialisation
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "adaLN_modulation" in name:
                p.normal_(0, 0.1)
    a, b = net(tokens, torch.tensor([0, 1])), net(tokens, torch.tensor([2, K]))
    assert not torch.allclose(a, b)
    net.train()  # in training the net drops labels itself, B uniforms from the global RNG …
    torch.manual_seed(1)
    net(tokens, torch.tensor([0, 1]))
    after = torch.rand(1)
    torch.manual_seed(1)
    torch.rand(2)
    assert torch.equal(after, torch.rand(1))
    net.drop_labels_in_forward = False  # … unless the trainer does it (genzoo runs)
    torch.manual_seed(1)
    net(tokens, torch.tensor([0, 1]))
    after = torch.rand(1)
    torch.manual_seed(1)
    assert torch.equal(after, torch.rand(1))


@pytest.mark.slow
def test_train_tiny_maskgit_on_token_cache_resume_and_sample(tmp_path):
    vq = tmp_path / "vqgan.bin"
    torch.save(random_state(vqgan_shapes(TINY_VQGAN), seed=3), vq)
    cache = tmp_path / "tokens"
    argv = ["encode", "--data", "digits", "--tokenizer", f"maskgit-vqgan:{vq}", "--res", "16"]
    assert main([*argv, "--out", str(cache), "--quiet", "--device", "cpu"]) == 0

    def train(out, steps):
        argv = ["train", "--preset", "maskgit-tiny", "--data", f"tokens:{cache}", "--res", "16"]
        argv += ["--out", str(out), "--steps", str(steps), "--batch-size", "8", "--quiet"]
        argv += ["--device", "cpu", "--set", "train.ckpt_every=2", "--set", "train.grid_steps=2"]
        assert main(argv) == 0

    train(tmp_path / "whole", 4)
    train(tmp_path / "split", 2)
    train(tmp_path / "split", 4)
    a, b = genzoo.load(tmp_path / "whole"), genzoo.load(tmp_path / "split")
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k  # resume is bit-exact
    cfg = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert cfg["tokenizer"] == {"kind": "maskgit-vqgan", "source": str(vq)}
    assert (cfg["model"]["image_seq_len"], cfg["model"]["codebook_size"]) == (16, 16)
    assert cfg["family"]["kind"] == "masked" and (tmp_path / "whole" / "grid.png").is_file()
    out = tmp_path / "s.npz"
    argv = ["sample", "--run", str(tmp_path / "whole"), "--num", "5", "--out", str(out)]
    argv += ["--steps", "3", "--cfg", "2.0", "--cfg-schedule", "linear", "--temperature", "2"]
    assert main([*argv, "--quiet", "--device", "cpu"]) == 0
    images, labels = np.load(out)["arr_0"], np.load(out)["arr_1"]
    assert images.shape == (5, 16, 16, 3) and images.dtype == np.uint8
    again = a.sample(labels[2:4], indices=[2, 3], steps=3, cfg=2.0, cfg_schedule="linear",
                     temperature=2.0)  # fmt: skip
    assert (again == images[2:4]).all()  # sample i depends on (seed, i) alone
    assert main([*argv, "--top-k", "3", "--quiet", "--device", "cpu"]) == 2  # not an option
