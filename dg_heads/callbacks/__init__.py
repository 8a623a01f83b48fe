"""Every file a run leaves in its folder comes from one of these Lightning callbacks.

`DGModule.configure_callbacks` installs them on whatever Trainer runs a dg-heads method, so the
CLI and a plain `Trainer.fit(model, datamodule)` in a notebook leave the same files:

    splits_manifest.SplitsManifest   splits.json: the images each split holds (at setup)
    domain_report.DomainReport       the per-domain table (printed), metrics_<stage>.json and the
                                     HParams tab, after fit, validate and test (classification)
    retrieval_report.RetrievalReport the same for retrieval: the recall table (the data's task
                                     chooses the report: `dg_heads.tasks`)
    predictions.PredictionsWriter    predictions.csv (predict)
    gate_file.GateFile               HAP: the gates as a TensorBoard heatmap and gates.json/.csv
    requeue.RequeueOnSignal          SLURM's requeue signal: every process checkpoints at one agreed
                                     step (hpc_ckpt_N.ckpt), rank 0 requeues, exit code 143
    done_marker.DoneMarker           not a default: a file written when a chosen stage finished
                                     (the CLI's `--done_marker`; sweeps skip runs that have it)

A method's own steps live beside the method: AAT's search is `dg_heads.methods.aat.HeadSearch`
(runs scan / GA when fit starts, bp's choice when training ends, writes `ablation.json`, hands
the mask to the module) and its report `dg_heads.methods.aat.SearchReport` (the lines and the
search's other files when fit ends).

The pattern, for a method's own files: one idea per file here, a `Callback` whose hook builds
the text and hands it to `dg_heads.run_files.write_run_file(trainer, name, text)` (rank 0 only,
atomic, into the logger's run folder; never a collective call from one rank), and the method's
`default_callbacks()` returns it beside `super().default_callbacks()`. A callback of the same
type given to the Trainer (configured by a user) takes the default's place.

Testing the checkpoint that validation selected, after fit (the CLI's `--test_after_fit`), is two
plain Lightning calls, `dg_heads.selection.evaluate_selected_checkpoint`; `DomainReport` then writes
`metrics_test.json` with the `val/*` accuracies of the same checkpoint beside `test/*`.
"""

from dg_heads.callbacks.domain_report import DomainReport
from dg_heads.callbacks.done_marker import DoneMarker
from dg_heads.callbacks.gate_file import GateFile
from dg_heads.callbacks.predictions import PredictionsWriter
from dg_heads.callbacks.requeue import RequeueOnSignal
from dg_heads.callbacks.retrieval_report import RetrievalReport
from dg_heads.callbacks.splits_manifest import SplitsManifest

__all__ = ["DomainReport", "DoneMarker", "GateFile", "PredictionsWriter", "RequeueOnSignal", "RetrievalReport",
           "SplitsManifest"]
