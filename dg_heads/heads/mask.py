"""`HeadMask`: which heads of which blocks, the one form a head mask takes in dg-heads.

A search builds one, `heads.ablate` applies one, a checkpoint and `ablation.json` store one
(`{"block": [heads]}`, block keys as strings: JSON's own form, and what older checkpoints and
run folders hold), a heatmap draws one (`to_tensor`). It is immutable and hashable, so a
search can cache the score of every mask it has seen.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from dg_heads.errors import DGHeadsError


@dataclass(frozen=True)
class HeadMask:
    """A set of (block, head) index pairs."""

    pairs: frozenset[tuple[int, int]] = frozenset()

    # ------------------------------------------------------------- building
    @classmethod
    def of(cls, value: HeadMask | Mapping | None) -> HeadMask:
        """A `HeadMask` as is, `{block: [heads]}` converted, None as the empty mask."""
        if value is None:
            return cls()
        if isinstance(value, HeadMask):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise DGHeadsError(f"a head mask is {{block: [heads]}} or a HeadMask, got {type(value).__name__}")

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[int, int]]) -> HeadMask:
        return cls(frozenset((int(b), int(h)) for b, h in pairs))

    @classmethod
    def from_dict(cls, mapping: Mapping[int | str, Sequence[int]], source: str = "the mask") -> HeadMask:
        """From `{block: [heads]}` (int or string block keys: JSON and old checkpoints have strings)."""
        pairs = []
        for block_key, heads in mapping.items():
            try:
                block = int(block_key)
            except (TypeError, ValueError):
                raise DGHeadsError(f"{source}: block {block_key!r} is not an integer block index") from None
            if isinstance(heads, (str, bytes)) or not isinstance(heads, Iterable):
                raise DGHeadsError(f"{source}: block {block} must map to a list of head indices, got {heads!r}")
            for head in heads:
                if isinstance(head, (bool, float)) or not str(head).lstrip("-").isdigit():
                    raise DGHeadsError(f"{source}: head {head!r} of block {block} is not an integer head index")
                pairs.append((block, int(head)))
        return cls.from_pairs(pairs)

    @classmethod
    def from_tensor(cls, chosen: torch.Tensor) -> HeadMask:
        """From a [blocks, heads] tensor: every nonzero entry is an ablated head."""
        return cls.from_pairs(tuple(p) for p in torch.nonzero(chosen.detach().cpu()).tolist())

    @classmethod
    def read(cls, path: str | Path) -> HeadMask:
        """A mask file (`ablation.json`: `{"block": [heads, ...]}`)."""
        path = Path(path)
        if not path.is_file():
            raise DGHeadsError(f"mask file {path} does not exist")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise DGHeadsError(f"mask file {path} is not JSON: {error}") from None
        if not isinstance(data, dict):
            raise DGHeadsError(f'mask file {path} must hold {{"block": [heads, ...]}}, got {str(data)[:80]}')
        return cls.from_dict(data, source=f"mask file {path}")

    # ------------------------------------------------------------ reading
    def to_dict(self) -> dict[int, list[int]]:
        """`{block: [heads]}`, blocks and heads sorted."""
        out: dict[int, list[int]] = {}
        for block, head in sorted(self.pairs):
            out.setdefault(block, []).append(head)
        return out

    def to_json_dict(self) -> dict[str, list[int]]:
        """`{"block": [heads]}`: the form of `ablation.json` and of checkpoints."""
        return {str(b): h for b, h in self.to_dict().items()}

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), indent=1) + "\n"

    def to_tensor(self, shape: tuple[int, int]) -> torch.Tensor:
        """[blocks, heads] float: 1 where a head is ablated (for heatmaps and GA populations)."""
        image = torch.zeros(shape)
        for block, head in self.pairs:
            image[block, head] = 1.0
        return image

    def first_block(self, default: int) -> int:
        return min((b for b, _ in self.pairs), default=default)

    def describe(self) -> str:
        """`block 2: heads 0, 3; block 3: head 1` (or `no head`)."""
        if not self.pairs:
            return "no head"
        return "; ".join(f"block {b}: head{'s' if len(hs) > 1 else ''} {', '.join(map(str, hs))}"
                         for b, hs in self.to_dict().items())

    def check(self, heads_per_block: Sequence[int]) -> HeadMask:
        """Raise a `DGHeadsError` naming the first block or head index the model does not have."""
        for block, head in sorted(self.pairs):
            if not 0 <= block < len(heads_per_block):
                raise DGHeadsError(
                    f"block {block} does not exist: the image tower has blocks 0..{len(heads_per_block) - 1}")
            if not 0 <= head < heads_per_block[block]:
                raise DGHeadsError(
                    f"head {head} of block {block} does not exist: heads are 0..{heads_per_block[block] - 1}")
        return self

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(sorted(self.pairs))

    def __repr__(self) -> str:
        return f"HeadMask({self.to_dict()})"
