"""Official DiT/SiT checkpoints: layout, strict loading, config inference, errors, export."""

from __future__ import annotations

import argparse
import fractions
import math

import pytest
import torch
from official_layout import (
    element_count,
    official_args,
    official_shapes,
    random_official_state_dict,
)
from safetensors.torch import save_file

from genzoo.backbones import DiT, DiTConfig
from genzoo.errors import GenzooError
from genzoo.zoo.official import (
    OFFICIAL_KINDS,
    build_official,
    export_official,
    infer_official_config,
    official_config,
    read_state_dict,
)

TINY = dict(input_size=8, patch_size=2, hidden_size=32, depth=2, num_heads=4, num_classes=10)


def _meta_state(args: dict) -> dict[str, torch.Tensor]:
    return {k: torch.empty(s, device="meta") for k, s in official_shapes(**args)}


# -- the layout itself (from the specification's table) -------------------------------------


def test_element_counts_match_the_published_numbers():
    assert element_count(**official_args("S/2")) == 32_963_360
    assert element_count(**official_args("B/2")) == 130_512_416
    assert element_count(**official_args("L/2")) == 458_102_816
    assert element_count(**official_args("XL/2")) == 675_129_632
    assert element_count(**official_args("XL/4")) == 675_074_432
    assert element_count(**official_args("XL/8")) == 675_683_072
    assert element_count(**official_args("XL/2", input_size=64)) == 676_014_368
    xl = official_args("XL/2")
    without_pos = element_count(**xl) - math.prod(official_shapes(**xl)[0][1])
    assert without_pos == 674_834_720


@pytest.mark.parametrize("name, depth", [("S/2", 12), ("L/4", 24), ("XL/2", 28)])
def test_genzoo_dit_has_the_official_keys_shapes_and_order(name, depth):
    args = official_args(name)
    with torch.device("meta"):  # shapes only, nothing allocated
        model = DiT(official_config("dit", **args))
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == official_shapes(**args)
    assert len(got) == 12 + 10 * depth
    assert sum(math.prod(s) for _, s in got) == element_count(**args)


# -- loading ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_strict_load_of_s2_and_round_trip_export():
    args = official_args("S/2")
    state = random_official_state_dict(0, **args)
    model, cfg = build_official("dit", state)
    assert not model.training
    assert [getattr(cfg, k) for k in args] == list(args.values())
    exported = export_official(model, cfg)
    assert list(exported) == list(state)
    assert all(torch.equal(exported[k], state[k]) for k in state)


def test_strict_load_of_a_custom_config_from_every_file_kind(tmp_path):
    args = official_args(**TINY, learn_sigma=False, in_channels=3, mlp_ratio=2.0)
    state = random_official_state_dict(1, **args)
    torch.save(state, tmp_path / "plain.pt")
    save_file(state, str(tmp_path / "w.safetensors"))
    ema = {k: v + 1 for k, v in state.items()}
    checkpoint = {
        "model": state,
        "ema": ema,
        "opt": {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999)}]},
        "args": argparse.Namespace(model="DiT-XL/2", image_size=256, lr=None),
    }
    torch.save(checkpoint, tmp_path / "train.pt")
    for source, expected in [
        (tmp_path / "plain.pt", state),
        (str(tmp_path / "w.safetensors"), state),
        (tmp_path / "train.pt", ema),  # the official loader prefers "ema"
        (state, state),
        ({"model": state}, state),
    ]:
        model, cfg = build_official("dit", source, **args)
        assert cfg == official_config("dit", **args)
        loaded = model.state_dict()
        assert all(torch.equal(loaded[k], expected[k]) for k in expected), source
    # weights passed in memory are copied, not shared with the model
    model, _ = build_official("sit", state, num_heads=4)
    with torch.no_grad():
        model.blocks[0].attn.qkv.weight.add_(1)
    assert not torch.equal(model.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])


def test_loaded_model_keeps_pos_embed_fixed_and_outputs_all_channels():
    args = official_args(**TINY)
    model, cfg = build_official("sit", random_official_state_dict(2, **args), num_heads=4)
    assert not model.pos_embed.requires_grad
    assert model.blocks[0].attn.qkv.weight.requires_grad
    assert model.pos_embed.device.type == "cpu"
    out = model(torch.randn(2, 4, 8, 8), torch.tensor([0.3, 0.7]), torch.tensor([1, 2]))
    assert out.shape == (2, 8, 8, 8)  # both halves; the flow family keeps the first C


def test_infer_official_config_reads_every_argument_from_shapes():
    for args in [
        official_args("XL/2"),
        official_args("XL/2", input_size=64),
        official_args("B/4", learn_sigma=False),
        official_args("S/8", num_classes=10, in_channels=3, mlp_ratio=2.0),
    ]:
        assert infer_official_config(_meta_state(args)) == args
    # a custom width has no published head count: that one argument is left out
    custom = official_args(**TINY)
    inferred = infer_official_config(_meta_state(custom))
    assert inferred == {k: v for k, v in custom.items() if k != "num_heads"}


def test_build_official_infers_missing_arguments_and_checks_given_ones():
    args = official_args(**{**TINY, "hidden_size": 384, "num_heads": 6, "input_size": 16})
    state = random_official_state_dict(3, **args)
    _, cfg = build_official("dit", state)  # nothing given: all inferred
    assert (cfg.input_size, cfg.hidden_size, cfg.num_heads, cfg.depth) == (16, 384, 6, 2)
    _, cfg = build_official("dit", state, input_size=16)
    assert cfg.num_classes == 10 and cfg.learn_sigma
    # a width outside the published sizes needs num_heads
    custom = random_official_state_dict(4, **official_args(**TINY))
    with pytest.raises(GenzooError, match="num_heads"):
        build_official("dit", custom)
    _, cfg = build_official("dit", custom, num_heads=4)
    assert cfg.num_heads == 4


def test_mismatch_error_lists_keys_with_shapes_and_suggests_arguments(tmp_path):
    args = official_args(
        **{**TINY, "hidden_size": 384, "num_heads": 6, "input_size": 16}, learn_sigma=False
    )
    path = tmp_path / "sit.pt"
    torch.save(random_official_state_dict(5, **args), path)
    with pytest.raises(GenzooError) as err:
        build_official("sit", path, learn_sigma=True, input_size=32)
    msg = str(err.value)
    assert str(path) in msg
    assert "final_layer.linear.weight: file [16, 384] vs model [32, 384]" in msg
    assert "pos_embed: file [1, 64, 384] vs model [1, 256, 384]" in msg
    assert "learn_sigma=False" in msg and "input_size=16" in msg and "depth=2" in msg
    # missing and unexpected keys are named
    state = random_official_state_dict(5, **args)
    state.pop("blocks.1.mlp.fc2.bias")
    state["blocks.0.attn.q_norm.weight"] = torch.ones(64)
    with pytest.raises(GenzooError) as err:
        build_official("sit", state)
    msg = str(err.value)
    assert "missing keys (1): blocks.1.mlp.fc2.bias" in msg
    assert "unexpected keys (1): blocks.0.attn.q_norm.weight" in msg
    # a table without the null row, read with the default dropout, suggests the fix
    no_null = random_official_state_dict(6, **official_args(**TINY, class_dropout_prob=0.0))
    with pytest.raises(GenzooError, match="class_dropout_prob=0"):
        build_official("dit", no_null, num_heads=4, num_classes=10)
    _, cfg = build_official("dit", no_null, num_heads=4, class_dropout_prob=0.0)
    assert cfg.num_classes == 10


def test_official_config_presets_and_argument_errors():
    cfg = official_config("dit", preset="DiT-XL/2", input_size=64)
    assert (cfg.depth, cfg.hidden_size, cfg.num_heads, cfg.patch_size, cfg.input_size) == (
        28,
        1152,
        16,
        2,
        64,
    )
    cfg = official_config("sit", preset="SiT-B/4")
    assert (cfg.depth, cfg.hidden_size, cfg.num_heads, cfg.patch_size) == (12, 768, 12, 4)
    assert cfg.learn_sigma and cfg.num_classes == 1000 and cfg.class_dropout_prob == 0.1
    assert official_config("dit", preset="S/8").patch_size == 8
    with pytest.raises(GenzooError, match=r"unknown official DiT argument\(s\) dim.*input_size"):
        official_config("dit", dim=3)
    with pytest.raises(GenzooError, match="SiT model but kind is 'dit'"):
        official_config("dit", preset="SiT-XL/2")
    with pytest.raises(GenzooError, match="depth=3"):
        official_config("dit", preset="DiT-XL/2", depth=3)
    with pytest.raises(GenzooError, match="unknown official preset"):
        official_config("dit", preset="DiT-XXL/2")
    with pytest.raises(GenzooError, match="unknown official model kind"):
        official_config("mar")
    assert OFFICIAL_KINDS == ("dit", "sit")


def test_read_state_dict_errors(tmp_path):
    with pytest.raises(GenzooError, match="no weights file"):
        read_state_dict(tmp_path / "missing.pt")
    torch.save({"a": torch.ones(1), "step": 3}, tmp_path / "mixed.pt")
    with pytest.raises(GenzooError, match="'step' is a int"):
        read_state_dict(tmp_path / "mixed.pt")
    torch.save({"w": torch.ones(1), "x": fractions.Fraction(1, 3)}, tmp_path / "pickled.pt")
    with pytest.raises(GenzooError, match="weights_only=True"):
        read_state_dict(tmp_path / "pickled.pt")
    with pytest.raises(GenzooError, match="does not look like DiT/SiT weights.*encoder.weight"):
        build_official("dit", {"encoder.weight": torch.ones(1)})
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(GenzooError, match="safetensors"):
        read_state_dict(tmp_path / "junk.safetensors")


# -- export -----------------------------------------------------------------------------------


def test_export_of_a_genzoo_trained_model_has_the_official_layout():
    cfg = DiTConfig(**TINY)
    model = DiT(cfg)
    exported = export_official(model, cfg)
    assert [(k, tuple(v.shape)) for k, v in exported.items()] == official_shapes(
        **official_args(**TINY)
    )
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in exported.values())
    # detached copies: editing the export leaves the model alone
    exported["blocks.0.attn.qkv.weight"].add_(1)
    assert not torch.equal(exported["blocks.0.attn.qkv.weight"], model.blocks[0].attn.qkv.weight)
    # and it loads strictly into a fresh model of the same config
    DiT(cfg).load_state_dict(exported, strict=True)


@pytest.mark.parametrize(
    "switch",
    [
        {"time_cond": "tdln"},
        {"norm": "rmsnorm"},
        {"mlp": "swiglu"},
        {"pos": "rope"},
        {"qk_norm": True},
    ],
)
def test_export_refuses_non_official_switches_naming_them(switch):
    cfg = DiTConfig(**TINY, **switch)
    ((name, value),) = switch.items()
    with pytest.raises(GenzooError, match=rf"model\.{name}={value!r}"):
        export_official(DiT(cfg), cfg)


def test_export_checks_the_weights_against_the_config():
    cfg = DiTConfig(**TINY)
    state = DiT(cfg).state_dict()
    state.pop("final_layer.linear.bias")
    with pytest.raises(GenzooError, match="missing keys \\(1\\): final_layer.linear.bias"):
        export_official(state, cfg)
