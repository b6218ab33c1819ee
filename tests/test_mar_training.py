"""The `masked-continuous` family: the training loss re-enacted draw by draw, eMIGM's switches
(tied mask token, one exp-schedule fraction per batch, the γ(s)/γ(t) reveal, guidance only in
a time window), and mar-tiny / emigm-tiny trained, resumed and sampled through the ordinary
loop, the CLI and `Pipeline.sample`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from mar_layout import TINY, random_official_state_dict, reference_condition, reference_loss
from scipy.stats import truncnorm

import genzoo
from genzoo.backbones.mar import MAR, MARConfig
from genzoo.cli import main
from genzoo.errors import GenzooError
from genzoo.families.masked_continuous import (
    GeneratorDraws,
    MaskedContinuous,
    MaskedContinuousConfig,
    sample_continuous_tokens,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_training_loss_re_enacted_draw_by_draw():
    model = MAR(MARConfig(**TINY, diffusion_batch_mul=2))
    state = random_official_state_dict(1, **TINY)
    model.load_state_dict(state)
    model.eval()  # no dropout; labels are dropped by the trainer, not here
    family = MaskedContinuous(MaskedContinuousConfig())
    latents, y = torch.randn(3, 4, 8, 8) * 0.5, torch.tensor([1, 10, 4])
    out = family.loss(model, latents, y, generator=torch.Generator().manual_seed(9))

    g = torch.Generator().manual_seed(9)
    u = float(torch.rand((1,), generator=g))  # one fraction for the batch, truncated normal
    ratio = truncnorm((0.7 - 1) / 0.25, 0, loc=1, scale=0.25).ppf(u)
    count = math.ceil(16 * np.float32(ratio))  # MAR: ceil(L·r)
    mask = torch.rand(3, 16, generator=g).argsort(dim=-1) < count
    t = torch.randint(0, 1000, (2 * 48,), generator=g)  # then t and noise for the repeated rows
    noise = torch.randn((2 * 48, 16), generator=g)
    tokens = model.patchify(latents)
    z = reference_condition(state, TINY, tokens, mask, y).reshape(48, -1).repeat(2, 1)
    weights = mask.reshape(-1).repeat(2)
    expected = reference_loss(state, tokens.reshape(48, -1).repeat(2, 1), z, t, noise, weights)
    assert float(out["loss"].detach()) == pytest.approx(float(expected), rel=1e-5)
    assert float(out["mask_ratio"]) == pytest.approx(count / 16)


def test_the_emigm_batch_law_masks_as_many_in_every_row():
    family = MaskedContinuous(MaskedContinuousConfig(train_law="batch", rounding="round"))
    model = MAR(MARConfig(**TINY))
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        mask = family.draw_mask(model, 6, g, "cpu")
        counts = mask.sum(dim=1)
        assert (counts == counts[0]).all()
        p = (1 - 1e-3) * float(torch.rand((1,), generator=torch.Generator().manual_seed(seed)))
        p += 1e-3
        assert int(counts[0]) == max(1, round(16 * (1 - math.exp(-5 * p))))
    with pytest.raises(GenzooError, match="same count in every row"):
        MaskedContinuous(MaskedContinuousConfig(train_law="uniform"))
    with pytest.raises(GenzooError, match="family.reveal='maskgit'"):
        MaskedContinuous(MaskedContinuousConfig(reveal="maskgit"))
    with pytest.raises(GenzooError, match="mask schedule 'cosin'"):
        MaskedContinuous(MaskedContinuousConfig(schedule="cosin"))


def test_emigm_ties_the_mask_token_to_the_null_class_embedding():
    model = MAR(MARConfig(**{**TINY, "decoder_embed_dim": 32}, mask_token_is_null=True))
    assert "mask_token" not in model.state_dict()
    assert model.mask_vector().data_ptr() == model.fake_latent.data_ptr()
    tokens, mask = torch.randn(2, 16, 16), torch.zeros(2, 16)
    mask[:, :5] = 1
    model.condition(tokens, mask, torch.tensor([1, 2])).sum().backward()  # only as mask token
    assert model.fake_latent.grad.abs().sum() > 0
    model.zero_grad()
    model.condition(tokens, torch.zeros(2, 16), torch.tensor([10, 10])).sum().backward()
    assert model.fake_latent.grad.abs().sum() > 0  # only as the null class
    with pytest.raises(GenzooError, match="mask_token_is_null needs"):
        MAR(MARConfig(**TINY, mask_token_is_null=True))  # widths 32 and 24


class CountingModel:
    """Stands in for a backbone: counts the rows it conditions and how many stay masked."""

    def __init__(self, length: int):
        self.seq_len, self.num_classes, self.token_dim = length, 10, 1
        self.rows, self.masked = 0, []
        self.head_net = None
        self.objective = self

    def condition(self, tokens, mask, y):
        self.rows += tokens.shape[0]
        self.masked.append(int(mask[0].sum()))
        return torch.zeros(tokens.shape[0], self.seq_len, 1)

    def num_steps(self, steps=None):
        return 1

    def sample(self, head, rows, **kw):
        return torch.zeros(rows.shape[0] // (1 if kw["cfg"] is None else 2), 1)


def test_the_stochastic_reveal_telescopes_to_gamma_ratios():
    length, steps = 10_000, 8
    model = CountingModel(length)
    draws = GeneratorDraws([torch.Generator().manual_seed(0)], torch.Generator().manual_seed(1))
    sample_continuous_tokens(model, torch.tensor([0]), draws, num_iter=steps, schedule="exp",
                             reveal="stochastic")  # fmt: skip
    times = np.linspace(1, 1e-5, steps + 1)

    def gamma(t):
        return 1 - math.exp(-5 * t)

    fractions = [m / length for m in model.masked[1:]]  # masked before steps 1 … N−1
    for k, fraction in enumerate(fractions, start=1):
        assert fraction == pytest.approx(gamma(times[k]) / gamma(1), abs=0.02)


def test_guidance_runs_only_inside_the_time_window():
    model = CountingModel(64)
    draws = GeneratorDraws([torch.Generator().manual_seed(0)], torch.Generator().manual_seed(1))
    steps, window = 16, (0.1, 0.3)
    sample_continuous_tokens(model, torch.tensor([3]), draws, num_iter=steps, cfg=4.0,
                             cfg_schedule="constant", cfg_interval=window, schedule="exp",
                             reveal="stochastic")  # fmt: skip
    ends = np.linspace(1, 1e-5, steps + 1)[1:]
    inside = sum(window[0] < s <= window[1] for s in ends)
    assert (
        0 < inside < steps and model.rows == steps + inside
    )  # NFE: one extra pass per guided step


def train_cli(out, preset, steps, *extra):
    argv = ["train", "--preset", preset, "--data", "shapes", "--res", "16", "--out", str(out)]
    argv += ["--steps", str(steps), "--batch-size", "8", "--quiet", "--device", "cpu"]
    argv += ["--set", "train.ckpt_every=2", "--set", "train.log_every=1", *extra]
    assert main(argv) == 0


def test_mar_tiny_trains_resumes_bit_exactly_and_samples(tmp_path):
    train_cli(tmp_path / "whole", "mar-tiny", 4)
    train_cli(tmp_path / "split", "mar-tiny", 2)
    train_cli(tmp_path / "split", "mar-tiny", 4)
    a, b = genzoo.load(tmp_path / "whole"), genzoo.load(tmp_path / "split")
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k  # resume is bit-exact
    assert a.cfg.model.img_size == 16 and a.cfg.model.vae_stride == 1 and a.model.seq_len == 16
    assert (tmp_path / "whole" / "grid.png").is_file()

    options = dict(num_iter=4, head_steps=3, cfg=2.0, temperature=0.9)
    images = a.sample([0, 1, 2], seed=3, **options)
    assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8
    again = a.sample([1, 2], seed=3, indices=[1, 2], **options)
    assert (again == images[1:]).all()  # sample i depends on (seed, i) alone
    out = tmp_path / "s.npz"
    argv = ["sample", "--run", str(tmp_path / "whole"), "--num", "4", "--out", str(out)]
    argv += ["--num-iter", "4", "--head-steps", "3", "--cfg", "2.0", "--cfg-interval", "0.2,0.9"]
    assert main([*argv, "--quiet", "--device", "cpu"]) == 0
    assert np.load(out)["arr_0"].shape == (4, 16, 16, 3)
    assert main([*argv[:-10], "--num-iter", "17", "--quiet", "--device", "cpu"]) == 2
    assert main([*argv[:-10], "--top-k", "5", "--quiet", "--device", "cpu"]) == 2


def test_emigm_tiny_trains_and_samples_with_the_stochastic_reveal(tmp_path):
    train_cli(tmp_path / "run", "emigm-tiny", 2)
    pipe = genzoo.load(tmp_path / "run")
    assert pipe.family.cfg.reveal == "stochastic" and pipe.cfg.model.mask_token_is_null
    images = pipe.sample([0, 1, 2], seed=1, num_iter=5, head_steps=3, cfg=3.0,
                         cfg_interval=(0.1, 0.6))  # fmt: skip
    again = pipe.sample([2], seed=1, indices=[2], num_iter=5, head_steps=3, cfg=3.0,
                        cfg_interval=(0.1, 0.6))  # fmt: skip
    assert (again[0] == images[2]).all()


def test_a_flow_head_trains_and_samples_through_the_same_family():
    model = MAR(MARConfig(**TINY, head="flow", attn_dropout=0.0, proj_dropout=0.0))
    assert model.head_net.final_layer.linear.out_features == 16  # velocity only
    family = MaskedContinuous(MaskedContinuousConfig())
    out = family.loss(model, torch.randn(2, 4, 8, 8), torch.tensor([0, 1]),
                      generator=torch.Generator().manual_seed(0))  # fmt: skip
    out["loss"].backward()
    assert (
        set(out) == {"loss", "mse", "mask_ratio"}
        and model.head_net.final_layer.linear.weight.grad.any()
    )
    generators = [torch.Generator().manual_seed(i) for i in range(2)]
    latents = family.sample(model, torch.tensor([0, 1]), generators=generators, null_label=10,
                            num_iter=3, head_steps=4, cfg=2.0)  # fmt: skip
    assert latents.shape == (2, 4, 8, 8) and torch.isfinite(latents).all()


def test_presets_round_trip_and_carry_the_published_recipes():
    from genzoo.config import RunConfig
    from genzoo.zoo.presets import preset

    for name in ("mar-b", "mar-l", "mar-h", "mar-tiny", "emigm-xs", "emigm-h", "emigm-tiny"):
        cfg = preset(name)
        assert RunConfig.from_dict(cfg.to_dict()) == cfg, name
    b = preset("mar-b")
    assert (b.model.encoder_embed_dim, b.model.diffloss_d, b.model.diffloss_w) == (768, 6, 1024)
    assert b.tokenizer.kind == "mar-kl16" and b.tokenizer.scale == 0.2325
    assert (b.train.lr, b.train.betas, b.train.weight_decay, b.train.grad_clip) == (
        8e-4, (0.9, 0.95), 0.02, 3.0,
    )  # fmt: skip
    h = preset("emigm-h")
    assert h.model.mask_token_is_null and (h.model.encoder_embed_dim, h.model.diffloss_w) == (
        1280, 1536,
    )  # fmt: skip
    assert (h.family.train_law, h.family.reveal, h.family.schedule, h.family.t_min) == (
        "batch", "stochastic", "exp", 0.2,
    )  # fmt: skip
