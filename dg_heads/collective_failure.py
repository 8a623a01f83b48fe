"""A DDP collective that timed out or lost its peer, said in one line instead of a traceback per rank.

A collective that the processes do not all run (one took another path, or stopped) waits until the
process group's timeout (`--ddp_timeout`; the GPU preset sets it) and then raises in torch's C++
layer (gloo: `Timed out waiting 60000ms for send operation`, `Connection closed by peer`; NCCL:
`Watchdog caught collective operation timeout`; torch >= 2.4 raises `DistBackendError`). The CLI
prints `error:` with the rank, what torch said, and the innermost call of dg-heads' (or the
user's) code that was waiting: that call is where the processes parted. Only the line is printed:
the other ranks print their own, and the checkpoints on disk are untouched (they are written
whole: `run_files.write_atomic` and Lightning's checkpoint IO).
"""

from __future__ import annotations

import os
import re
import traceback

_SIGNS = re.compile(r"Timed out waiting|Connection closed by peer|Connection reset by peer|pair closure|"
                    r"collective operation timeout|NCCL communicator was aborted|DistBackendError", re.I)
_LIBRARIES = ("/torch/", "/lightning/", "/lightning_fabric/", "/pytorch_lightning/", "/torchmetrics/")


def _torch_error(name: str) -> tuple[type, ...]:
    """torch.distributed's exception class `name` (`DistBackendError`, `DistNetworkError`: public
    in torch 2.3), or none where torch is built without distributed support."""
    import torch.distributed

    found = getattr(torch.distributed, name, None)
    return (found,) if isinstance(found, type) else ()


def _chain(error: BaseException | None):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _is_rendezvous_failure(error: BaseException) -> bool:
    return any(isinstance(e, _torch_error("DistNetworkError")) for e in _chain(error))


def is_collective_failure(error: BaseException) -> bool:
    """True for the errors a collective (or the processes' first meeting) raises when another
    process never joined it."""
    return _is_rendezvous_failure(error) or any(
        isinstance(e, _torch_error("DistBackendError"))
        or (isinstance(e, RuntimeError) and _SIGNS.search(str(e)) and _raised_in_torch_distributed(e))
        for e in _chain(error))


def _raised_in_torch_distributed(error: BaseException) -> bool:
    """Raised from torch.distributed (a collective's `wait`) or DDP's reducer (its bucket
    all-reduces): not a file system or a data stream that lost its connection with the same words."""
    return any(part in frame.filename for frame in traceback.extract_tb(error.__traceback__)
               for part in ("/torch/distributed/", "/torch/nn/parallel/"))


def _rank() -> str:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return str(dist.get_rank())
    except Exception:  # only for the message
        pass
    return os.environ.get("RANK", os.environ.get("SLURM_PROCID", os.environ.get("LOCAL_RANK", "?")))


def _waiting_call(error: BaseException) -> str | None:
    """`file:line (function)` of the innermost frame outside torch and Lightning."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not any(lib in f.filename for lib in _LIBRARIES)]
    if not frames:
        return None
    frame = frames[-1]
    return f"{os.path.relpath(frame.filename) if not frame.filename.startswith('..') else frame.filename}:" \
           f"{frame.lineno} ({frame.name})"


def collective_failure_message(error: BaseException) -> str:
    """The one line for a failed collective (see the module's docstring)."""
    if _is_rendezvous_failure(error):
        cause = next(e for e in _chain(error) if isinstance(e, _torch_error("DistNetworkError")))
        return (f"rank {_rank()}: the DDP processes did not all meet within --ddp_timeout "
                f"({' '.join(str(cause).split())[:200]}): one of them did not start or stopped early, or "
                "MASTER_ADDR/MASTER_PORT cannot be reached from every node")
    what = " ".join(str(error).split())
    what = re.sub(r"^\[[^\]]*\]\s*", "", what)[:200]  # gloo's `[path/to/file.cc:129]` prefix
    where = _waiting_call(error)
    return (f"rank {_rank()}: a DDP collective did not complete ({what})"
            + (f", waiting in {where}" if where else "")
            + ": the processes ran different collectives (one took another path) or one of them stopped; "
              "it waited --ddp_timeout (the strategy's timeout). Checkpoints on disk are intact: after the fix, "
              "resume with --ckpt_path last")
