"""Testing what DomainBed's two model selections need, after `fit`.

The CLI's `--test_after_fit` calls this after `fit`; from Python it follows `trainer.fit`:

    trainer.fit(model, datamodule)
    evaluate_selected_checkpoint(trainer, model, datamodule)

First, while the weights in memory are still the last ones (the end of training), they are
tested on each test domain's DomainBed `in` and `out` splits (`metrics_oracle.json`: what
test-domain validation, the oracle, needs: DomainBed's `OracleSelectionMethod` takes each
hyper-parameter set's LAST checkpoint, selects by its test-domain `out` accuracy and reports its
`in` accuracy). Then the checkpoint that training-domain validation selected is validated and
tested: `DomainReport` writes `metrics_validate.json` and `metrics_test.json` (its `val/*`
beside its `test/*`). `dg-heads collect` reads both files.
"""

from __future__ import annotations


def evaluate_last_on_test_splits(trainer, model, datamodule) -> None:
    """Test the weights in memory on each test domain's `in` and `out` splits (a DataModule with
    `oracle_test()`; others are skipped). The `DoneMarker` is held back meanwhile: the run is
    done after the selected checkpoint's test, not after this one."""
    if not hasattr(datamodule, "oracle_test"):
        return
    from dg_heads.callbacks.done_marker import DoneMarker

    held = [c for c in trainer.callbacks if isinstance(c, DoneMarker)]
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, DoneMarker)]
    try:
        with datamodule.oracle_test():
            trainer.test(model, datamodule=datamodule, verbose=False)
    finally:
        trainer.callbacks = [*trainer.callbacks, *held]


def evaluate_selected_checkpoint(trainer, model, datamodule) -> None:
    """Test the last weights for the oracle (`evaluate_last_on_test_splits`), then validate and
    test the best checkpoint of `trainer.checkpoint_callback` (the first `ModelCheckpoint`;
    dg-heads configs monitor `val/acc`), or the weights in memory when it saved none. The
    evaluations print no Lightning table: `DomainReport` prints the selected checkpoint's."""
    evaluate_last_on_test_splits(trainer, model, datamodule)
    callback = trainer.checkpoint_callback
    # the path itself: `"best"` makes Lightning warn that there are several checkpoint callbacks
    ckpt = callback.best_model_path if callback is not None and callback.best_model_path else None
    trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
    trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
