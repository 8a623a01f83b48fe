"""Every private internal of Lightning, torch and jsonargparse that dg-heads uses, in one place.

They are why pyproject.toml holds `lightning<2.7`: a minor release may rename or drop any of them.
Every Lightning and jsonargparse internal is read here only; the rest of the code calls the functions
here. A few one-line reads of torch, tensorboard and `datasets` internals stay beside the code they
serve (moving them would add a call and hide nothing): they are listed at the end. Each says
what it does, why no public API serves, and which public API would replace it (and from which
version), as `heads/open_clip_vit.py` does for open_clip. Tested: tests/dg_heads/test_compat.py
(`option_strings`: test_cli_hints.py).
Raising the Lightning pin means checking each entry against the new release.

Lightning (2.4 to 2.6):
- `last_checkpoints`, `checkpoint_folder`: `ModelCheckpoint._find_last_checkpoints` and its
  name-mangled `__resolve_ckpt_dir` (where a callback saves, before its `setup` has set `dirpath`).
- `set_purge_step`: `TensorBoardLogger._kwargs` (SummaryWriter arguments, read when the writer is made).
- `set_ddp_timeout`: `DDPStrategy._timeout` (a strategy the Trainer built from `ddp` or `auto`).
- `leave_out_ddp_wrapper`: replaces `DDPStrategy.configure_ddp` on one strategy instance.
- `set_checkpoint_monitor`: `ModelCheckpoint.__init_monitor_mode` (name-mangled; the monitor's mode).
- `attached_trainer`: `LightningModule._trainer` (the public `trainer` property raises when the module
  is used outside a Trainer, which the methods allow: a module called by hand).
- (left in place: `lightning_cli.DGHeadsCLI._prepare_subcommand_parser` overrides LightningCLI's
  private method to default `verbose` to false for `validate` and `test`: the method's arguments
  exist only once that method added them. Public replacement: none in 2.6.)

torch (2.3 to 2.14):
- `skips_step_on_device`, `skip_step_on_device`: the `found_inf` attribute that fused AdamW's
  `step` reads (the protocol between `GradScaler` and the fused optimisers) and
  `Optimizer._step_supports_amp_scaling`.
- `dispatch_mode_base`: `torch.utils._python_dispatch.TorchDispatchMode` (the op counter, `op_counter.py`).

jsonargparse (4.51 to 4.53, as LightningCLI uses it):
- `set_argument_type`: `action._typehint` of a parser's argument (and argparse's `parser._actions`).
- `option_strings`: argparse's `parser._actions` and the subcommands' `_name_parser_map` (cli_hints).

Python:
- `lightning_owner`: a traceback's frames' `f_locals` (public, but CPython-specific in spirit: a
  frame's `self` names the LightningModule or DataModule that raised). The recent-errors deque
  that `errors.user_error_in` also reads lives in `dg_heads/data/errors.py` (`RECENT`): DataLoader
  workers and jsonargparse re-raise a `DGHeadsError` as text, and the deque finds it by that text.
  Public replacement: none (an exception that crossed a process or a `str()` is only text).

Read in place (one line each, where it is used; check them too when raising torch, `datasets` or
tensorboard):
- torch `Module._parameters` / `_buffers` (`backbone.py`: every tensor a module holds, to move the
  text tower's alone), `nn.MultiheadAttention._qkv_same_embed_dim` (`heads/open_clip_vit.py`: the
  fused in-projection the head engine adopts), `torch._C._current_graph_task_id` (`heads/attention.py`:
  a forward inside a backward is activation checkpointing's recomputation; torch's own checkpoint code
  asks the same), a DataLoader iterator's `_num_yielded` (`data/samplers.py`: batches handed out, for
  the mid-epoch state).
- tensorboard `SummaryWriter._get_file_writer` (`callbacks/domain_report.py`: the HParams session's
  summaries, which `add_hparams` would write into a sub-run of its own).
- `datasets.Dataset._indices` (`data/hf_source.py`, `data/captions.py`: a selected dataset is flattened
  once so that row reads are direct).

Replaced by public API (no longer private):
- a jsonargparse parser's `error` method replaced on the instance (one line instead of the usage
  and every Union member tried): the CLI's parsers take argparse's `exit_on_error=False` and
  `DGHeadsCLI.__init__` turns the `ArgumentError` into one line (the CLI's message tests pass on
  jsonargparse 4.51 with Lightning 2.4, and 4.53 with Lightning 2.6).
- `torch._C._dispatch_has_kernel_for_dispatch_key` (is there a fused AdamW kernel for this
  device?): `optim.fused_adamw_available` now steps a one-element fused AdamW once per device type.
- `trainer._checkpoint_connector.hpc_save_path` (the next `hpc_ckpt_N.ckpt`):
  `resume.next_requeue_checkpoint` numbers the folder's files itself.
- `type(e).__name__ == "DistBackendError"` (collective_failure): `torch.distributed.DistBackendError`
  and `DistNetworkError` (public in torch's floor, 2.3).
"""

from __future__ import annotations

import inspect
from datetime import timedelta
from pathlib import Path

__all__ = ["attached_trainer", "checkpoint_folder", "dispatch_mode_base", "last_checkpoints",
           "leave_out_ddp_wrapper", "lightning_owner", "option_strings", "set_argument_type",
           "set_checkpoint_monitor", "set_ddp_timeout", "set_purge_step", "skip_step_on_device",
           "skips_step_on_device"]


# ----------------------------------------------------------------------------------- Lightning
def last_checkpoints(callback, trainer) -> set[Path]:
    """The `last*.ckpt` files a `ModelCheckpoint` wrote into its folder (with its version counter's
    `last-v1.ckpt`), found before `fit` starts: what Lightning's own `ckpt_path="last"` resumes from.

    Private: `ModelCheckpoint._find_last_checkpoints(trainer)` (Lightning 2.0-2.6). Public
    replacement: none; `Trainer.fit(ckpt_path="last")` does the search but does not say what it
    found, and dg-heads also weighs the requeue checkpoints (`resume.newest_checkpoint`)."""
    return {Path(p) for p in callback._find_last_checkpoints(trainer)}


def checkpoint_folder(callback, trainer) -> Path | None:
    """The folder a checkpoint callback saves into, also before its `setup` has set `dirpath`
    (the logger's `version_N/checkpoints`, or `default_root_dir/checkpoints`); None for a callback
    that has no such folder.

    Private: `ModelCheckpoint.__resolve_ckpt_dir(trainer)` (name-mangled; Lightning 2.0-2.6).
    Public replacement: none (`dirpath` is set in `ModelCheckpoint.setup`, after `fit` started)."""
    resolve = getattr(callback, "_ModelCheckpoint__resolve_ckpt_dir", None)
    return Path(resolve(trainer)) if resolve is not None else None


def set_purge_step(logger, step: int) -> None:
    """Make a TensorBoard logger's writer drop events at or after `step` that an earlier process
    wrote (SummaryWriter's `purge_step`), if the writer is not made yet; other loggers: nothing.

    Private: `TensorBoardLogger._kwargs` (the SummaryWriter arguments, Lightning 2.0-2.6) and
    `_experiment`. Public replacement: `TensorBoardLogger(purge_step=...)` at construction, which
    the CLI cannot use: the step is known only once the Trainer (and its callbacks) exist."""
    if logger is not None and hasattr(logger, "_kwargs") and getattr(logger, "_experiment", None) is None:
        logger._kwargs["purge_step"] = step


def set_ddp_timeout(strategy, timeout: timedelta | None) -> None:
    """Give a DDP strategy the run's `--ddp_timeout` unless its own config set one. Set before
    `fit` starts the process group (`DDPStrategy.setup_distributed` reads it).

    Private: `DDPStrategy._timeout` (Lightning 2.4-2.6). Public replacement: the constructor's
    `timeout` (`trainer.strategy.init_args.timeout` in a config, which wins here); a strategy named
    by string (`ddp`) or chosen by `auto` is built inside the Trainer, without it."""
    from lightning.pytorch.strategies import DDPStrategy

    if timeout is None or not isinstance(strategy, DDPStrategy):
        return
    default = inspect.signature(DDPStrategy).parameters["timeout"].default
    if getattr(strategy, "_timeout", default) == default:
        strategy._timeout = timeout


def leave_out_ddp_wrapper(strategy) -> None:
    """Let a training-free search (AAT's scan, GA, a given mask) run under a DDP strategy: the
    processes form their group, but the module is not wrapped in `DistributedDataParallel`.

    DDP refuses to wrap a module with no parameter that requires a gradient, and on CUDA
    Lightning's `_register_ddp_hooks` asserts the wrapper is there. Private: replaces
    `DDPStrategy.configure_ddp` (called by `DDPStrategy.setup` when fitting, Lightning 2.0-2.6) on
    this strategy instance. Public replacement: none (no switch to skip the wrapper; a
    `DDPStrategy` subclass would not reach a strategy the Trainer built from `ddp`)."""
    from lightning.pytorch.strategies import DDPStrategy

    if isinstance(strategy, DDPStrategy):
        strategy.configure_ddp = lambda: None


def set_checkpoint_monitor(callback, monitor: str, mode: str) -> None:
    """Make a `ModelCheckpoint` not yet fitted select by `monitor` in `mode` (`min` / `max`), with
    its starting best score for that mode: the CLI's default selection pointed at the data's task.

    Private: the name-mangled `ModelCheckpoint.__init_monitor_mode(mode)` (Lightning 2.0-2.6), which
    sets `mode` and the matching `kth_value`. Public replacement: none for a callback the CLI already
    built (`ModelCheckpoint(monitor=..., mode=...)` at construction, before the data is known)."""
    callback.monitor = monitor
    callback._ModelCheckpoint__init_monitor_mode(mode)


# --------------------------------------------------------------------------------------- torch
def _unwrapped(optimizer):
    """The torch optimizer behind Lightning's `LightningOptimizer` (its public `.optimizer`)."""
    from lightning.pytorch.core.optimizer import LightningOptimizer

    return optimizer.optimizer if isinstance(optimizer, LightningOptimizer) else optimizer


def skips_step_on_device(optimizer) -> bool:
    """Whether `optimizer` can skip a step on the device given a flag tensor: a fused optimiser
    (fused AdamW) whose `step` reads `found_inf` (and `grad_scale`) as GradScaler sets them.

    Private: `Optimizer._step_supports_amp_scaling` (torch 1.13-2.14) and the fused kernels'
    `found_inf` attribute protocol. Public replacement: none without a GradScaler (whose `step`
    syncs with the host to decide)."""
    optimizer = _unwrapped(optimizer)
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False)) and all(
        g.get("fused") for g in optimizer.param_groups)


def skip_step_on_device(optimizer, flag) -> bool:
    """Make the optimiser's next `step` leave parameters, moments and step count alone where the
    0-d bool tensor `flag` is true, with no host sync; False (nothing done) when the optimiser
    cannot (the caller then zeroes the step's gradients). See `skips_step_on_device`."""
    if not skips_step_on_device(optimizer):
        return False
    _unwrapped(optimizer).found_inf = flag.float()
    return True


def dispatch_mode_base() -> type:
    """torch's `TorchDispatchMode`: a context whose `__torch_dispatch__` sees every aten op (the op
    and host-sync counter, `dg_heads.op_counter`). Private module: `torch.utils._python_dispatch`
    (torch 2.0-2.14; the class torch's own dispatcher tutorials use). Public replacement: none
    (`torch.overrides.TorchFunctionMode` is public but sees Python-level calls, not aten ops)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    return TorchDispatchMode


# --------------------------------------------------------------------------------- jsonargparse
def set_argument_type(parser, dests: tuple[str, ...], typehint) -> None:
    """Give the parser's arguments named `dests` the type `typehint` (an argument Lightning declared).

    Used for the Trainer's `limit_*_batches`: typing caches unions as equal whatever their order,
    so the parser may get `Union[float, int, None]` and read `1` as 1.0 (Lightning issue #21259).
    Private: argparse's `parser._actions` and jsonargparse's `ActionTypeHint._typehint` (4.x).
    Public replacement: none (jsonargparse sets an argument's type only in `add_argument`)."""
    for action in getattr(parser, "_actions", []):
        if action.dest in dests and hasattr(action, "_typehint"):
            action._typehint = typehint


def option_strings(parser) -> set[str]:
    """Every option string of a parser and of its subcommands' parsers (`--trainer.max_epochs`,
    `-c`), for the nearest option to an unknown one (`cli_hints.suggest`).

    Private: argparse's `parser._actions` and its subparsers action's `_name_parser_map`
    (jsonargparse's subcommands, 4.x). Public replacement: none (argparse lists its options only
    in the help text; jsonargparse's `get_defaults()` gives the keys, not the option strings, and
    builds every default on the way)."""
    names, stack = set(), [parser]
    while stack:
        current = stack.pop()
        for action in getattr(current, "_actions", []):
            names |= set(action.option_strings)
            stack += list(getattr(action, "_name_parser_map", {}).values())
    return names


def attached_trainer(module):
    """The Trainer `module` (a LightningModule) runs under, or None outside one (called by hand).
    Private: `LightningModule._trainer`. Public replacement: none (`module.trainer` raises then)."""
    return module._trainer


# --------------------------------------------------------------------------------------- Python
def lightning_owner(error: BaseException) -> tuple[str, str] | None:
    """`("model", "HeadPurification")` when `error` was raised while a LightningModule (or `data`:
    a LightningDataModule) was being built or run: the innermost such `self` in its traceback's
    frames (their `f_locals`). Public replacement: none (jsonargparse reports a failed
    `__init__` without naming the class's config key)."""
    found, tb = None, error.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        names = {c.__name__ for c in type(owner).__mro__} if owner is not None else set()
        if "LightningModule" in names:
            found = ("model", type(owner).__name__)
        elif "LightningDataModule" in names:
            found = ("data", type(owner).__name__)
        tb = tb.tb_next
    return found
