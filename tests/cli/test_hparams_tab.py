"""TensorBoard's HParams tab over several runs, read through TensorBoard's own data API (the
hparams plugin's handlers for `/experiment` and `/session_groups`, what the tab requests)."""

import json

import pytest

from tests.conftest import demo_configs, run_cli

pytestmark = pytest.mark.slow

QUICK_FIT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
             "--data.init_args.num_workers", "0",
             "--test_after_fit", "true"]


def hparams_tab(logdir):
    """(experiment, session groups) as the HParams tab gets them for `tensorboard --logdir logdir`."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    tb = base_plugin.TBContext(logdir=str(logdir), multiplexer=mux,
                               data_provider=data_provider.MultiplexerDataProvider(mux, str(logdir)))
    backend, request = backend_context.Context(tb), context.RequestContext()
    experiment = get_experiment.Handler(request, backend, "", api_pb2.GetExperimentRequest()).run()
    query = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=100, allowed_statuses=[
        api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING])
    groups = list_session_groups.Handler(request, backend, "", query).run().session_groups
    return experiment, groups


def test_hparams_tab_compares_methods_with_test_accuracy(data_root, tmp_path):
    runs = [("finetune", ["--model.init_args.optim.lr", "0.001"]),
            ("lora", ["--model.init_args.optim.lr", "0.01", "--data.init_args.test_domains", "['60']"])]
    for method, extra in runs:
        result = run_cli("fit", *demo_configs(method), *QUICK_FIT, *extra, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    experiment, groups = hparams_tab(tmp_path / "runs")
    metrics = {m.name.tag for m in experiment.metric_infos}
    # the selected checkpoint's test accuracy is a column beside the validation's; nothing else is
    assert {"hp/test_acc", "hp/val_acc", "hp/test_acc/75", "hp/test_acc/60", "hp/val_acc/0"} <= metrics
    assert all(m.startswith("hp/") for m in metrics), metrics
    # the tab checks the first five columns after sorting those that differ first: the varied ones
    # (constant ones, `clip/model_name`..., only fill the rest)
    differing = {h.name for h in experiment.hparam_infos if h.differs}
    assert differing == {"Method", "optim/lr", "data/test_domains"}
    shown = [h.name for h in sorted(experiment.hparam_infos, key=lambda h: not h.differs)][:5]
    assert set(shown[:3]) == differing, shown
    by_method = {g.hparams["Method"].string_value: g for g in groups}
    assert set(by_method) == {"finetune", "lora"}  # the run folders' names, not HeadPurification / CLIPBaseline
    for method, domain in (("finetune", "75"), ("lora", "60")):
        written = json.loads(
            (tmp_path / f"runs/rotated_digits/{method}/version_0/metrics_test.json").read_text())
        values = {m.name.tag: m.value for m in by_method[method].metric_values}
        assert values["hp/test_acc"] == pytest.approx(written["test/acc"])
        assert values[f"hp/test_acc/{domain}"] == pytest.approx(written[f"test/acc/{domain}"])
        assert values["hp/val_acc"] == pytest.approx(written["val/acc"])
