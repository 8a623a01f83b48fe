"""Testing the checkpoint that training-domain validation selected (DomainBed's model selection).

The CLI's `--test_after_fit` calls this after `fit`; from Python it follows `trainer.fit`:

    trainer.fit(model, datamodule)
    evaluate_selected_checkpoint(trainer, model, datamodule)

`DomainReport` then writes `metrics_validate.json` and `metrics_test.json` (the selected
checkpoint's `val/*` beside its `test/*`: what `dg-heads collect` reads).
"""

from __future__ import annotations


def evaluate_selected_checkpoint(trainer, model, datamodule) -> None:
    """Validate, then test, the best checkpoint of `trainer.checkpoint_callback` (the first
    `ModelCheckpoint`; dg-heads configs monitor `val/acc`), or the weights in memory when it
    saved none. Both evaluations print no Lightning table: `DomainReport` prints the domains'."""
    callback = trainer.checkpoint_callback
    # the path itself: `"best"` makes Lightning warn that there are several checkpoint callbacks
    ckpt = callback.best_model_path if callback is not None and callback.best_model_path else None
    trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
    trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
