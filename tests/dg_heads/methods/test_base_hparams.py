"""TensorBoard's HParams tab: the method first, no jsonargparse bookkeeping, specs flattened."""

import os
import sys

import pytest

from tests.conftest import demo_configs


def _built_model(config: str, tmp_path):
    """The model as `lightning fit` builds a method's demo (jsonargparse adds `_class_path`, `_instantiator`)."""
    from dg_heads.lightning_cli import DGHeadsCLI

    here, argv = os.getcwd(), sys.argv
    try:
        os.chdir(tmp_path)
        sys.argv = ["dg-heads", *demo_configs(config)]
        return DGHeadsCLI(run=False).model
    finally:
        os.chdir(here)
        sys.argv = argv


@pytest.mark.parametrize("config, method, nested", [
    ("hap", "hap", {"lora/head_aware": True, "lora/targets": "['q', 'v']", "gating/mmd_weight": None,
                  "gating/enabled": True, "clip/model_name": "dg-tiny-vit", "optim/lr": None}),
    ("aat_ga", "aat_ga", {"search/strategy": "ga", "search/ga/population": None, "clip/model_name": "dg-tiny-vit"}),
])
def test_hparams_are_flat_with_the_method_first(config, method, nested, tmp_path):
    model = _built_model(config, tmp_path)
    assert "_class_path" in model.hparams  # what LightningCLI stores, and the tab must not show
    params = model.hparams_for_logging()
    assert list(params)[0] == "Method" and params["Method"] == method  # the run folder's name, not the class
    # TensorBoard sorts the tab's columns by name (differing ones first): the method sorts first
    assert sorted(params)[0] == "Method"
    assert not [k for k in params if "_class_path" in k or "_instantiator" in k or k.startswith("_")]
    for key, value in nested.items():
        assert key in params, (key, sorted(params))
        if value is not None:
            assert params[key] == value
    assert "lora" not in params and "gating" not in params and "search" not in params
    assert all(isinstance(v, (int, float, str, bool)) for v in params.values())
