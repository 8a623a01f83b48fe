"""`HeadMask`, the one form of a head mask: conversions, validation, and the stored forms."""

import json

import pytest
import torch

from dg_heads import heads
from dg_heads.backbone import CLIPSpec, create_clip
from dg_heads.errors import DGHeadsError
from dg_heads.heads import HeadMask


def test_dict_tensor_and_json_forms_round_trip(tmp_path):
    mask = HeadMask.from_dict({"3": [2, 0], 1: [1]})
    assert mask.to_dict() == {1: [1], 3: [0, 2]}
    assert mask.to_json_dict() == {"1": [1], "3": [0, 2]}
    grid = torch.zeros(4, 4)
    grid[1, 1] = grid[3, 0] = grid[3, 2] = 1
    assert torch.equal(mask.to_tensor((4, 4)), grid)
    assert HeadMask.from_tensor(grid) == mask
    path = tmp_path / "ablation.json"
    path.write_text(mask.to_json())
    assert json.loads(path.read_text()) == {"1": [1], "3": [0, 2]}
    assert HeadMask.read(path) == mask
    assert len(mask) == 3 and list(mask) == [(1, 1), (3, 0), (3, 2)]
    assert mask.describe() == "block 1: head 1; block 3: heads 0, 2" and HeadMask().describe() == "no head"
    assert mask.first_block(default=4) == 1 and HeadMask().first_block(default=4) == 4
    assert not HeadMask() and {mask: 0.5}[HeadMask.from_pairs([(3, 2), (1, 1), (3, 0)])] == 0.5  # hashable


@pytest.mark.parametrize("data, message", [
    ({"x": [0]}, r"block 'x' is not an integer block index"),
    ({"0": 3}, r"block 0 must map to a list of head indices, got 3"),
    ({"0": ["a"]}, r"head 'a' of block 0 is not an integer head index"),
    ({"0": [1.5]}, r"head 1\.5 of block 0 is not an integer head index"),
])
def test_malformed_masks_name_the_entry(tmp_path, data, message):
    path = tmp_path / "ablation.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DGHeadsError, match=f"mask file {path}: {message}"):
        HeadMask.read(path)


def test_mask_files_that_are_missing_or_not_a_mapping(tmp_path):
    with pytest.raises(DGHeadsError, match="does not exist"):
        HeadMask.read(tmp_path / "missing.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(DGHeadsError, match=r'must hold \{"block": \[heads, \.\.\.\]\}'):
        HeadMask.read(tmp_path / "list.json")


def test_validation_against_the_model():
    model = heads.convert(create_clip(CLIPSpec())[0])
    assert heads.validate_mask(model, {"2": [3]}) == HeadMask.from_pairs([(2, 3)])
    with pytest.raises(DGHeadsError, match=r"head 7 of block 2 does not exist: heads are 0\.\.3"):
        heads.validate_mask(model, HeadMask.from_pairs([(2, 7)]))
    with pytest.raises(DGHeadsError, match=r"block 9 does not exist: the image tower has blocks 0\.\.3"):
        heads.validate_mask(model, {9: [0]})
