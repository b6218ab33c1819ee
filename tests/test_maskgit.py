"""Official 1d-tokenizer MaskGIT generators (ImageBert, UViTBert) and the MaskGIT VQGAN: layouts,
strict loading, forwards against slow float64 re-computations of the spec, the official seeded
`generate` re-enacted from the spec, and the RAR / MaskGIT pipelines through the CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from maskgit_layout import (
    PUBLISHED_GENERATORS,
    PUBLISHED_VQGAN,
    TINY_UVIT,
    TINY_VIT,
    TINY_VQGAN,
    K,
    L,
    V,
    generator_shapes,
    imagebert_shapes,
    random_state,
    reference_decode,
    reference_encode,
    reference_logits,
    uvitbert_shapes,
    vqgan_shapes,
)
from safetensors.torch import save_file

import genzoo
from genzoo.backbones.maskgit import MaskGIT, MaskGITConfig
from genzoo.cli import main
from genzoo.errors import GenzooError
from genzoo.pipeline import Pipeline
from genzoo.tokenizers import build_tokenizer
from genzoo.tokenizers.maskgit_vqgan import MaskGITVQGAN, MaskGITVQGANConfig

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIGS = {"ViT": TINY_VIT, "UViT": TINY_UVIT}
TINY_VQ_KW = dict(TINY_VQGAN, num_resolutions=3)


@pytest.fixture(scope="module")
def states():
    return {name: random_state(generator_shapes(cfg), seed=i) for i, (name, cfg) in
            enumerate(CONFIGS.items())}  # fmt: skip


@pytest.fixture(scope="module")
def pipes(states):
    return {name: genzoo.load_official("maskgit", states[name], device="cpu", model_type=name,
                                       num_attention_heads=4) for name in CONFIGS}  # fmt: skip


@pytest.fixture(scope="module")
def vq_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vqgan") / "maskgit-vqgan-tiny.bin"
    torch.save(random_state(vqgan_shapes(TINY_VQGAN), seed=7), path)
    return path


def _tokens(batch, seed=1):
    return torch.randint(0, V + 1, (batch, L), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", PUBLISHED_GENERATORS)
def test_released_generators_have_the_spec_layout_and_parameter_count(name):
    model_type, sizes, count = PUBLISHED_GENERATORS[name]
    table = (imagebert_shapes if model_type == "ViT" else uvitbert_shapes)(V=4096, K=1000, **sizes)
    assert sum(math.prod(s) for _, s in table) == count
    cfg = MaskGITConfig(model_type=model_type, codebook_size=4096, image_seq_len=sizes["L"],
                        hidden_size=sizes["D"], num_hidden_layers=sizes["depth"],
                        intermediate_size=sizes["inner"])  # fmt: skip
    with torch.device("meta"):
        model = MaskGIT(cfg)
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == table


def test_the_released_vqgan_has_168_keys_and_the_spec_count():
    table = vqgan_shapes(PUBLISHED_VQGAN)
    assert len(table) == 168 and sum(math.prod(s) for _, s in table) == 54_515_587
    with torch.device("meta"):
        model = MaskGITVQGAN(MaskGITVQGANConfig())
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == table


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_match_the_spec_forward_with_mask_token_and_null_class(pipes, states, name):
    pipe, cfg = pipes[name], CONFIGS[name]
    tokens, y = _tokens(4), torch.tensor([0, 2, 4, K])  # K: the null class
    tokens[:, ::2] = V  # masked positions hold id V
    out = pipe.model(tokens, y)
    assert out.shape == (4, L, V) and out.dtype == torch.float32
    ref = reference_logits(states[name], cfg, tokens, y)
    assert torch.allclose(out.double(), ref, atol=2e-5, rtol=1e-5)
    # mask= marks positions as masked whatever they hold
    mask = tokens == V
    garbage = torch.where(mask, torch.randint(0, V, tokens.shape), tokens)
    assert torch.equal(pipe.model(garbage, y, mask=mask), out)
    # cond_drop_prob=1 is the null pass and draws B uniforms from the global RNG
    torch.manual_seed(0)
    dropped = pipe.model(tokens, y, cond_drop_prob=1.0)
    after = torch.rand(1)
    torch.manual_seed(0)
    torch.rand(4)
    assert torch.equal(after, torch.rand(1))
    assert torch.equal(dropped, pipe.model(tokens, torch.full_like(y, K)))


def test_files_load_strictly_and_sizes_are_read_from_the_shapes(states, tmp_path):
    state = dict(states["ViT"])
    state["model.embeddings.position_ids"] = torch.arange(L + 1)[None]  # an old transformers file
    torch.save(state, tmp_path / "generator.bin")
    pipe = genzoo.load_official("maskgit", tmp_path / "generator.bin", num_attention_heads=4)
    assert {k: getattr(pipe.config, k) for k in TINY_VIT} == TINY_VIT
    assert not pipe.model.training and pipe.device == torch.device("cpu")
    save_file(states["UViT"], str(tmp_path / "uvit.safetensors"))
    pipe = genzoo.load_official("maskgit", tmp_path / "uvit.safetensors", model_type="UViT",
                                num_attention_heads=4)  # fmt: skip
    assert {k: getattr(pipe.config, k) for k in TINY_UVIT} == TINY_UVIT
    loaded = pipe.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in states["UViT"].items())


def test_wrong_files_and_arguments_are_refused_by_name(states):
    from rar_layout import random_rar_state_dict

    with pytest.raises(GenzooError, match="looks like a RAR generator"):
        genzoo.load_official("maskgit", random_rar_state_dict(seed=0))
    broken = {k: v for k, v in states["ViT"].items() if "layer.1.output.dense" not in k}
    with pytest.raises(GenzooError, match=r"missing keys \(2\).*layer\.1\.output\.dense"):
        genzoo.load_official("maskgit", broken, num_attention_heads=4)
    with pytest.raises(GenzooError, match="do not fit"):
        genzoo.load_official("maskgit", states["ViT"], model_type="UViT", num_attention_heads=4)
    with pytest.raises(GenzooError, match="unknown MaskGIT argument.*guidance"):
        genzoo.load_official("maskgit", states["ViT"], guidance=3)
    with pytest.raises(GenzooError, match="hidden_size=32 is not divisible"):
        genzoo.load_official("maskgit", states["ViT"], num_attention_heads=5)


def official_generate(model, y, steps, cfg, cfg_schedule, cfg_pow, temperature, annealing):
    """The official `generate` re-enacted from spec §3 'Sampling' and the §4 draw order."""
    n = len(y)
    ids = torch.full((n, L), V)
    scale = cfg if cfg_schedule == "constant" else 0.0

    def forward(labels):
        torch.rand(n)  # the forward's label-dropout draw
        return model(ids, labels)

    def gumbel(shape):
        u = torch.rand(shape)
        return -torch.log((-torch.log(u.clamp(min=1e-20))).clamp(min=1e-20))

    for s in range(steps):
        ratio = (s + 1) / steps
        tau = temperature * (1 - ratio)
        is_mask = ids == V
        if cfg_schedule == "power-cosine":  # float32, with the power as a tensor
            ramp = (1 - torch.cos(((s / steps) ** (torch.ones(1) * cfg_pow)) * torch.pi)) / 2
            scale = float((cfg - 1) * ramp + 1)
        with torch.no_grad():
            if scale != 0:
                c, u = forward(y), forward(torch.full_like(y, K))
                logits = (
                    u + (c - u) * scale if cfg_schedule == "power-cosine" else c + (c - u) * scale
                )
            else:
                logits = forward(y)
        if annealing:
            logits = logits / (0.5 + 0.8 * (1 - ratio))
        candidates = (logits + tau * gumbel((n, L, V))).argmax(-1)
        confidence = logits.gather(-1, candidates[..., None])[..., 0]
        candidates = torch.where(is_mask, candidates, ids)
        confidence = torch.where(is_mask, confidence, torch.inf)
        keep = math.floor(L * np.arccos(ratio) / (math.pi * 0.5))
        keep = max(1, min(int(is_mask[0].sum()) - 1, keep))  # the first row's count
        noisy = confidence + tau * gumbel((n, L))
        cut = noisy.sort(dim=-1).values[:, keep - 1 : keep]
        ids = candidates if s == steps - 1 else torch.where(noisy <= cut, V, candidates)
        if cfg_schedule == "linear":
            scale = ratio * cfg
    return ids


SETTINGS = {
    "constant": dict(steps=4, cfg=2.0, cfg_schedule="constant", cfg_pow=3.0, temperature=1.0,
                     temperature_annealing=False),
    "linear": dict(steps=5, cfg=4.5, cfg_schedule="linear", cfg_pow=3.0, temperature=9.5,
                   temperature_annealing=True),
    "power-cosine": dict(steps=6, cfg=3.0, cfg_schedule="power-cosine", cfg_pow=2.5,
                         temperature=2.8, temperature_annealing=True),
    "unguided": dict(steps=3, cfg=0.0, cfg_schedule="constant", cfg_pow=3.0, temperature=4.5,
                     temperature_annealing=False),
}  # fmt: skip


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("name", CONFIGS)
def test_seeded_sample_tokens_equal_the_official_generate(pipes, name, setting):
    pipe, options, y = pipes[name], SETTINGS[setting], torch.tensor([1, 3, 0])
    torch.manual_seed(11)
    expected = official_generate(pipe.model, y, *options.values())
    torch.manual_seed(11)
    ids = pipe.sample_tokens(y, **options)
    assert ids.shape == (3, L) and ids.dtype == torch.long
    assert torch.equal(ids, expected)
    assert int(ids.min()) >= 0 and int(ids.max()) < V  # nothing left masked
    assert torch.equal(torch.rand(1), official_rng_after(11, pipe.model, y, options))


def official_rng_after(seed, model, y, options):
    torch.manual_seed(seed)
    official_generate(model, y, *options.values())
    return torch.rand(1)


def test_defaults_are_the_official_generate_defaults_and_temperature_zero_is_rng_free(pipes):
    pipe, y = pipes["ViT"], torch.tensor([2, K])  # K: unconditional samples
    torch.manual_seed(3)
    expected = official_generate(pipe.model, y, 8, 3.0, "constant", 3.0, 4.5, False)
    torch.manual_seed(3)
    assert torch.equal(pipe.sample_tokens(y), expected)
    torch.manual_seed(0)
    a = pipe.sample_tokens(y, temperature=0.0, cfg_schedule="power-cosine")
    torch.manual_seed(1)
    assert torch.equal(a, pipe.sample_tokens(y, temperature=0.0, cfg_schedule="power-cosine"))


def test_per_sample_generators_make_a_row_independent_of_its_batch(pipes):
    pipe, options = pipes["UViT"], SETTINGS["linear"]
    gens = [torch.Generator().manual_seed(s) for s in (5, 6, 7)]
    ids = pipe.sample_tokens(torch.tensor([0, 1, 2]), generator=gens, **options)
    alone = pipe.sample_tokens([1], generator=[torch.Generator().manual_seed(6)], **options)
    assert torch.equal(ids[1:2], alone)
    with pytest.raises(GenzooError, match="2 generators for 3 labels"):
        pipe.sample_tokens([0, 1, 2], generator=gens[:2])
    with pytest.raises(GenzooError, match=r"labels must lie in \[0, 5\]"):
        pipe.sample_tokens([6])
    with pytest.raises(GenzooError, match="cfg_schedule='cosine'"):
        pipe.sample_tokens([1], cfg_schedule="cosine")


# -- the MaskGIT VQGAN --------------------------------------------------------------------------


def test_vqgan_encodes_and_decodes_as_the_spec(vq_file):
    state = torch.load(vq_file)
    tok = genzoo.load_official_tokenizer("maskgit-vqgan", vq_file, device="cpu", **TINY_VQ_KW)
    assert tok.discrete and tok.stride == 4 and tok.vocab_size == 16
    x = torch.rand(2, 3, 16, 12, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ids = tok.encode(x)
    assert ids.shape == (2, 4, 3) and ids.dtype == torch.long
    _, dist = reference_encode(state, TINY_VQGAN, (x + 1) / 2)  # the official [0, 1] input
    chosen = dist.gather(-1, ids.reshape(2, -1, 1))[..., 0]
    assert torch.all(chosen <= dist.min(-1).values + 1e-4)  # the nearest code (float32 ties)
    assert ids.unique().numel() > 3
    images = tok.decode(ids)
    expected = 2 * reference_decode(state, TINY_VQGAN, ids).clamp(0, 1) - 1
    assert images.shape == (2, 3, 16, 12)
    assert torch.allclose(images.double(), expected, atol=1e-5)
    square = tok.encode(x[..., :12, :])
    assert torch.equal(tok.decode(square.reshape(2, 9)), tok.decode(square))


def test_vqgan_spec_string_reads_sizes_from_the_file_and_refuses_bad_input(vq_file, tmp_path):
    tok = build_tokenizer(f"maskgit-vqgan:{vq_file}")
    assert tok.spec == f"maskgit-vqgan:{vq_file}" and tok.latent_shape(32) == (8, 8)
    assert tok.model.cfg.channel_mult == (1, 2, 2) and tok.model.cfg.num_res_blocks == 1
    with pytest.raises(GenzooError, match=r"ids 0\.\.16 are outside the codebook \[0, 16\)"):
        tok.decode(torch.tensor([[[0, 16]]]))
    with pytest.raises(GenzooError, match="5 ids per image is not a square"):
        tok.decode(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(GenzooError, match="multiples of 4"):
        tok.encode(torch.zeros(1, 3, 10, 8))
    with pytest.raises(GenzooError, match="do not fit the MaskGIT VQGAN"):
        genzoo.load_official_tokenizer("maskgit-vqgan", vq_file)  # published sizes
    with pytest.raises(GenzooError, match="unknown MaskGIT VQGAN argument"):
        genzoo.load_official_tokenizer("maskgit-vqgan", vq_file, codebook_size=16)
    from rar_layout import random_rar_state_dict

    torch.save(random_rar_state_dict(seed=0), tmp_path / "rar.bin")
    with pytest.raises(GenzooError, match="looks like a RAR generator"):
        build_tokenizer(f"maskgit-vqgan:{tmp_path / 'rar.bin'}")


# -- pipelines ------------------------------------------------------------------------------------


def test_rar_is_a_pipeline_that_decodes_with_the_vqgan(vq_file, tmp_path):
    from rar_layout import random_rar_state_dict

    weights = tmp_path / "rar.bin"
    torch.save(random_rar_state_dict(seed=0), weights)
    pipe = genzoo.load_official("rar", weights, device="cpu", vq=str(vq_file))
    assert isinstance(pipe, Pipeline) and pipe.image_size == 12 and pipe.num_classes == 5
    images = pipe.sample([0, 3, 4], seed=2, cfg=2.0, cfg_pow=1.0)
    assert images.shape == (3, 12, 12, 3) and images.dtype == np.uint8
    again = pipe.sample([3], seed=2, indices=[1], cfg=2.0, cfg_pow=1.0)
    assert (again == images[1:2]).all()  # sample i depends on (seed, i) alone
    out = tmp_path / "rar.npz"
    argv = ["sample", "--official", "rar", "--weights", str(weights), "--vq", str(vq_file)]
    assert main([*argv, "--num", "4", "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    assert np.load(out)["arr_0"].shape == (4, 12, 12, 3)
    assert main([*argv[:-2], "--num", "2", "--out", str(out), "--device", "cpu"]) == 2  # no --vq


def test_maskgit_samples_images_through_the_cli(states, vq_file, tmp_path):
    weights = tmp_path / "generator.bin"
    torch.save(states["ViT"], weights)
    out = tmp_path / "maskgit.npz"
    argv = ["sample", "--official", "maskgit", "--weights", str(weights), "--vq", str(vq_file)]
    argv += ["--num", "3", "--out", str(out), "--quiet", "--device", "cpu", "--steps", "3"]
    argv += ["--cfg", "1.5", "--cfg-schedule", "power-cosine", "--temperature-annealing", "true"]
    assert main(argv) == 0  # sizes from the shapes (heads: the released 16)
    assert np.load(out)["arr_0"].shape == (3, 12, 12, 3)
    pipe = genzoo.load_official("maskgit", weights, vq=str(vq_file), num_attention_heads=4)
    images = pipe.sample([1, 2], steps=3, cfg=1.5, cfg_schedule="power-cosine")
    assert images.shape == (2, 12, 12, 3) and images.dtype == np.uint8
    again = pipe.sample([2], indices=[1], steps=3, cfg=1.5, cfg_schedule="power-cosine")
    assert (again == images[1:]).all()
    assert main([*argv[:2], "rar", *argv[3:]]) == 2  # a MaskGIT file is not RAR weights
