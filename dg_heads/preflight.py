"""`dg-heads sweep`'s pre-flight: what every job needs from this file system, checked before
anything is queued, so that no array task fails hours later on a missing dataset or weights file.

- every dataset's folder (under the jobs' data root: `data.init_args.root` of the job's configs
  and arguments, else `$DG_HEADS_DATA`) holds the registry's domains, each with the same,
  non-empty class folders: what the DataModule needs to split it (`dg-heads prepare` checks the
  counts too); built-in datasets (RotatedDigits) and Hugging Face sources are skipped;
- every pretrained tag the jobs build (`model.init_args.clip.pretrained`) is in the weights cache
  (compute nodes often have no network), and a weights file given as a path exists.

Each problem is one line naming the command that fixes it (`dg-heads prepare ...`,
`dg-heads weights ...`). `dg-heads sweep --no-preflight` skips it.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from dg_heads.config_files import inline_group_files
from dg_heads.data.registry import get_dataset
from dg_heads.errors import DGHeadsError

MISSING = object()


def config_value(configs: list[str], args: list[str], key: str, default=None):
    """A dotted key's value as the CLI will resolve it from these config files (later ones win)
    and `--key value` arguments (the last wins); `default` when none sets it."""
    value = default
    for config in configs:
        try:  # a group given as a file (method files' `clip: ../backbone/default.yaml`) read as the CLI reads it
            node = inline_group_files(yaml.safe_load(Path(config).read_text()) or {}, Path(config).parent)
        except (OSError, yaml.YAMLError, DGHeadsError):
            continue  # the job check (`--print_config`) reports an unreadable file
        for part in key.split("."):
            node = node.get(part, MISSING) if isinstance(node, dict) else MISSING
        if node is not MISSING:
            value = node
    for i, arg in enumerate(args):
        if arg == f"--{key}" and i + 1 < len(args):
            value = yaml.safe_load(args[i + 1])
        elif arg.startswith(f"--{key}="):
            value = yaml.safe_load(arg.split("=", 1)[1])
    return value


def dataset_problem(dataset: str, root: Path) -> str | None:
    """Why the DataModule could not split `dataset` under `root`, with the command that fixes it."""
    from dg_heads.data.folder import check_layout, scan_folder

    info = get_dataset(dataset)
    if info.builtin:
        return None
    folder = root / info.folder
    try:
        check_layout(scan_folder(folder), list(info.domains), list(info.classes))
    except DGHeadsError as error:
        return f"{dataset}: {error.detail}; run `dg-heads prepare {info.name} " \
               f"--root {root}` (downloads it where it can, else prints the steps, then verifies the copy)"
    return None


def weights_problem(model_name: str, pretrained) -> str | None:
    """Why a run could not build `model_name` with `pretrained` on a node without network."""
    from dg_heads.backbone import _is_path
    from dg_heads.weights import cached_weights, sources

    if pretrained in (None, "", "none", "None", "null"):
        return None
    pretrained = str(pretrained)
    if _is_path(pretrained):
        if not Path(pretrained).expanduser().is_file():
            return f"weights file {pretrained} (model.init_args.clip.pretrained) does not exist"
        return None
    if sources(model_name, pretrained) == (None, [], None):  # open_clip knows no such model or tag (it
        return None  # returns an empty config, no exception): the job's own check names it
    try:
        found = cached_weights(model_name, pretrained)
    except Exception:  # noqa: BLE001 - an unknown model or tag: the job's own check names it
        return None
    if found is None:
        return (f"pretrained weights {model_name} {pretrained} are not in the cache; run "
                f"`dg-heads weights {model_name} {pretrained}` on a machine with network (a login node)")
    return None


def preflight(jobs) -> list[str]:
    """Every problem of the jobs' datasets and weights, once each (see the module's docstring)."""
    from dg_heads.data.domainbed import default_root

    problems: dict[str, None] = {}
    seen, checked = set(), {}  # checked: (dataset, root) -> its problem: a folder is walked once per sweep
    for job in jobs:
        configs, args = job.configs, [*job.extra_args, *(a for k, v in job.hparams.items()
                                                         for a in (f"--{k}", v if isinstance(v, str) else str(v)))]
        key = (job.method, job.dataset, tuple(args))
        if key in seen:
            continue
        seen.add(key)
        if config_value(configs, args, "data.init_args.hf") is None:
            root = config_value(configs, args, "data.init_args.root")
            root = Path(str(root)).expanduser() if root else default_root()
            if (job.dataset, root) not in checked:
                checked[job.dataset, root] = dataset_problem(job.dataset, root)
            problem = checked[job.dataset, root]
            if problem:
                problems[problem] = None
        model_name = config_value(configs, args, "model.init_args.clip.model_name", "dg-tiny-vit")
        problem = weights_problem(str(model_name), config_value(configs, args, "model.init_args.clip.pretrained"))
        if problem:
            problems[problem] = None
    return list(problems)
