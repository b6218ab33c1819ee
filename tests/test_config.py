import pytest

from genzoo.config import RunConfig, SampleConfig, apply_overrides
from genzoo.errors import GenzooError
from genzoo.zoo.presets import PRESETS, preset


def test_presets_follow_the_dit_table():
    # DiT paper Table 1: (depth, hidden, heads) and the patch size in the name.
    expected = {"s": (12, 384, 6), "b": (12, 768, 12), "l": (24, 1024, 16), "xl": (28, 1152, 16)}
    for size, (depth, hidden, heads) in expected.items():
        for p in (2, 4, 8):
            m = preset(f"dit-{size}{p}").model
            assert (m.depth, m.hidden_size, m.num_heads, m.patch_size) == (depth, hidden, heads, p)
    assert preset("DiT-XL/2").model.depth == 28
    assert preset("sit-b4").family.kind == "flow" and preset("dit-b4").family.kind == "diffusion"
    assert {"dit-s2", "dit-xl8", "sit-xl2", "dit-tiny"} <= set(PRESETS)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(GenzooError, match="unknown preset 'dit-q2'.*dit-s2"):
        preset("dit-q2")


def test_set_reaches_nested_fields_with_types():
    cfg = preset("dit-s2")
    apply_overrides(
        cfg, ["model.depth=3", "train.lr=3e-4", "train.compile=true", "train.betas=0.9,0.95"]
    )
    assert cfg.model.depth == 3 and cfg.train.lr == 3e-4 and cfg.train.compile is True
    assert cfg.train.betas == (0.9, 0.95)
    s = SampleConfig()
    apply_overrides(s, ["cfg_interval=0.1,0.9", "steps=7", "num=4"])
    assert s.options == {"cfg_interval": "0.1,0.9", "steps": "7"} and s.num == 4


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("model.dept=3", "unknown config key 'model.dept'"),
        ("train.lr=fast", "expected a value of type float"),
        ("train.compile=maybe", "expected true/false"),
        ("model=3", "unknown model kind '3'; choose one of: dit"),
        ("train=3", "is a group"),
        ("depth", "expected key=value"),
    ],
)
def test_bad_overrides_are_named(assignment, message):
    with pytest.raises(GenzooError, match=message):
        apply_overrides(preset("dit-s2"), [assignment])


def test_config_round_trips_through_json(tmp_path):
    cfg = preset("sit-b2")
    apply_overrides(cfg, ["data.spec=digits", "train.betas=0.8,0.9"])
    cfg.save(tmp_path / "c.json")
    assert RunConfig.load(tmp_path / "c.json") == cfg


def test_unknown_key_in_a_saved_config_is_reported(tmp_path):
    d = preset("dit-s2").to_dict()
    d["train"]["lrr"] = 1
    with pytest.raises(GenzooError, match="unknown config key 'train.lrr'"):
        RunConfig.from_dict(d)
