"""The command line: every flag is a config field, and every flag survives torchrun's parser."""

from __future__ import annotations

import pytest

from genzoo.cli import SAMPLE_FLAGS, TRAIN_FLAGS, build_parser, main


def _subparser(name):
    return build_parser()._subparsers._group_actions[0].choices[name]


@pytest.mark.parametrize("command", ["train", "sample"])
def test_every_flag_has_a_spelling_torchrun_leaves_alone(command):
    # torchrun parses the whole command line and rejects options that abbreviate several of its
    # own (e.g. --run → --run-path/--run_path), even after the script name.
    from torch.distributed.run import get_args_parser

    theirs = [o for o in get_args_parser()._option_string_actions if o.startswith("--")]
    for action in _subparser(command)._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs or longs == ["--help"]:
            continue
        safe = [o for o in longs if not any(t.startswith(o) for t in theirs)]
        assert safe, f"{command} {longs}: every spelling is an abbreviation of a torchrun option"


def test_train_flags_map_onto_config_fields():
    from genzoo.config import RunConfig, field_paths
    from genzoo.registry import TAGGED_SECTIONS

    keys = set(field_paths(RunConfig())) | set(TAGGED_SECTIONS)  # --tokenizer kl-vae:PATH
    for _, key, *_ in TRAIN_FLAGS:
        assert key in keys
    from genzoo.config import SampleConfig

    keys = set(field_paths(SampleConfig()))
    for _, key, *_ in SAMPLE_FLAGS:
        assert key in keys


def test_help_lists_presets(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "dit-xl2" in out and "[train.steps]" in out
