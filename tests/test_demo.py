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
