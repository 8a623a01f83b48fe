"""Reading dg-heads config files outside the Lightning CLI (the atlas, the sweep's pre-flight checks).

A config may give a group as a file of its own, relative to the config that names it, as the
method configs give their backbone (`clip: ../backbone/default.yaml`); jsonargparse reads such a
file when it parses the config. Tools that read the YAML themselves inline those files first, so
that they see what the CLI sees.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from dg_heads.errors import DGHeadsError


def inline_group_files(node, base: Path):
    """`node` with every string value naming an existing `.yaml`/`.yml` file (relative to `base`,
    the folder of the config that holds it) replaced by that file's contents, recursively."""
    if isinstance(node, dict):
        return {key: inline_group_files(value, base) for key, value in node.items()}
    if isinstance(node, list):
        return [inline_group_files(value, base) for value in node]
    if isinstance(node, str) and node.endswith((".yaml", ".yml")):
        path = (base / node) if not Path(node).is_absolute() else Path(node)
        if path.is_file():
            try:
                return inline_group_files(yaml.safe_load(path.read_text()) or {}, path.parent)
            except yaml.YAMLError as error:
                raise DGHeadsError(f"config {path} is not YAML: {error}") from None
    return node
