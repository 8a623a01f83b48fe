"""`GateFile`: `gates.json` / `gates.csv` hold the gates of the checkpoint that validation selected
(read from that checkpoint's logits, the module left as it is), the module's own gates without one,
1 for a block without gates; a model without gated blocks writes nothing."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import torch
from torch import nn

from dg_heads import heads
from dg_heads.backbone import CLIPSpec, create_clip
from dg_heads.callbacks import GateFile
from dg_heads.callbacks.gate_file import selected_gate_values


class _Gated(nn.Module):
    def __init__(self, blocks: list[int]) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.clip = heads.convert(create_clip(CLIPSpec())[0])  # tiny CLIP: 4 blocks x 4 heads
        heads.add_gates(self.clip, blocks)
        self.gated_blocks = blocks


def _trainer(folder, best_model_path=""):
    return SimpleNamespace(is_global_zero=True, logger=SimpleNamespace(log_dir=folder),
                           checkpoint_callback=SimpleNamespace(best_model_path=best_model_path),
                           strategy=SimpleNamespace(load_checkpoint=lambda p: torch.load(p, weights_only=True)))


def test_the_gates_of_the_selected_checkpoint_are_written(tmp_path):
    model = _Gated([1, 3])
    weights = [1.0, 1.0, 2.0, 4.0]  # the checkpoint's block-1 gates are 4 * w / sum(w) (H softmax(theta))
    state = {"clip.visual.transformer.resblocks.1.attn.gate.theta": torch.tensor([math.log(w) for w in weights]),
             "clip.visual.transformer.resblocks.3.attn.gate.theta": torch.zeros(4)}
    names = {n for n, _ in model.named_parameters() if n.endswith("gate.theta")}
    assert names == set(state)
    torch.save({"state_dict": state}, tmp_path / "best.ckpt")
    with torch.no_grad():  # the module's own (final) gates differ from the checkpoint's
        model.clip.visual.transformer.resblocks[1].attn.gate.theta.copy_(torch.tensor([5.0, 0.0, 0.0, 0.0]))
    GateFile().on_train_end(_trainer(tmp_path / "run", str(tmp_path / "best.ckpt")), model)
    expected = {"0": [1.0] * 4, "1": [0.5, 0.5, 1.0, 2.0], "2": [1.0] * 4, "3": [1.0] * 4}
    assert json.loads((tmp_path / "run" / "gates.json").read_text()) == expected
    assert (tmp_path / "run" / "gates.csv").read_text().splitlines()[2] == "1,0.500000,0.500000,1.000000,2.000000"
    assert model.clip.visual.transformer.resblocks[1].attn.gate.theta[0].item() == 5.0  # left as it was


def test_without_a_selected_checkpoint_the_modules_own_gates(tmp_path):
    model = _Gated([0])
    with torch.no_grad():
        model.clip.visual.transformer.resblocks[0].attn.gate.theta.copy_(torch.tensor([math.log(3.0), 0.0, 0.0, 0.0]))
    for path in ("", str(tmp_path / "missing.ckpt")):  # checkpointing off; a path that is not there
        values = selected_gate_values(_trainer(tmp_path, path), model)
        assert torch.allclose(values[0], torch.tensor([2.0, 2 / 3, 2 / 3, 2 / 3]))  # 4 * (3, 1, 1, 1) / 6
        assert torch.equal(values[1:], torch.ones(3, 4))


def test_a_model_without_gated_blocks_writes_nothing(tmp_path):
    GateFile().on_train_end(_trainer(tmp_path / "run"), SimpleNamespace(gated_blocks=[]))
    GateFile().on_train_end(_trainer(tmp_path / "run"), nn.Linear(2, 2))
    assert not (tmp_path / "run").exists()
