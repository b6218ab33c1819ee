"""The embedded demo, shortened: train, sample, classifier, report — every artefact in place."""

import json

import numpy as np
import pytest

from genzoo.demo import run_demo


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    result = run_demo(tmp_path, steps=3, quiet=True, per_class=2, classifier_steps=30)
    assert (tmp_path / "grid.png").is_file() and (tmp_path / "run" / "config.json").is_file()
    samples = np.load(tmp_path / "samples.npz")
    assert samples["arr_0"].shape == (20, 32, 32, 3)
    assert np.bincount(samples["arr_1"]).tolist() == [2] * 10
    saved = json.loads((tmp_path / "demo.json").read_text())
    assert saved["num_samples"] == 20 and np.isfinite(saved["fd"])
    assert 0 <= saved["accuracy"] <= 1 and result["fd"] == saved["fd"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["spec"] == "shapes:centred" and saved["reference"].startswith("shapes:c")


@pytest.mark.slow
def test_the_autoregressive_demo_runs_end_to_end(tmp_path):
    result = run_demo(tmp_path, family="ar", steps=3, quiet=True, per_class=2, classifier_steps=30)
    for path in ("grid.png", "vq/config.json", "tokens/meta.json", "run/config.json"):
        assert (tmp_path / path).is_file(), path
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["family"]["kind"] == "ar" and config["model"]["kind"] == "gpt"
    assert config["tokenizer"] == {"kind": "vq", "source": str(tmp_path / "vq"), "ema": True}
    assert np.load(tmp_path / "samples.npz")["arr_0"].shape == (20, 32, 32, 3)
    assert 0 <= result["accuracy"] <= 1 and np.isfinite(result["fd"])


def test_a_demo_for_an_unknown_family_is_refused(tmp_path):
    from genzoo.errors import GenzooError

    with pytest.raises(GenzooError, match="no demo for family 'gann'; choose one of: flow, ar"):
        run_demo(tmp_path, family="gann")
