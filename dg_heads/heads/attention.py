"""`HeadAttention`: open_clip's `nn.MultiheadAttention` with every head under control.

It *is* an `nn.MultiheadAttention` (a subclass, adopted in place by `convert` through
`open_clip_vit.adopt`), so parameter
names, state dicts and pretrained weights are untouched, and with no control active `forward`
is the parent's own code: the native fused path, at no extra cost.

With a control active it runs an explicit per-head path on fused
`F.scaled_dot_product_attention`: per-head LoRA on q, k, v, o; ablation; gates; taps.

Ablation edits head h's attention weights A (so the effect reaches every later block). All four
edits have a closed form from the SDPA output `y = A v`, so A is never materialised:
  zero      A' = 0        -> y' = 0
  scale     A' = alpha A  -> y' = alpha y
  identity  A' = I        -> y' = v           (each token keeps its own value)
  uniform   A' = 1/N      -> y' = mean_n v    (every token gets the mean value)
A strength s in [0, 1] per head blends `A' s + A (1 - s)` (s = 1: ablated; continuous s is what
back-propagated ablation learns). Order: attention -> ablation -> taps -> gate -> out_proj:
a tap holds the head's own output, and a loss on gated features applies the gate itself (so
it can choose where the gradient goes).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from dg_heads.heads.gates import HeadGate
from dg_heads.heads.lora import HeadLoRA

AblationMode = Literal["zero", "identity", "uniform", "scale"]
ABLATION_MODES: tuple[str, ...] = get_args(AblationMode)
TapFeature = Literal["cls", "mean"]  # the head outputs a `HeadTap` computes
FOLDABLE_ABLATIONS = ("zero", "scale")


class HeadTap(dict):
    """What a tapped forward leaves for a loss: `tap["cls"]` and `tap["mean"]` ([B, H, d_h], each
    computed when first read, so an unused one costs nothing) and `tap["gate"]` ([H], the gate
    values that forward used, or None).

    A tap is a by-product of one forward, inside its autograd graph: it lives only in the record of
    the `heads.tapping` scope that asked for it (the caller's), never on the module, so a copy or a
    pickle of the module holds none, and its activations are freed with the caller's record."""

    def __init__(self, heads_out: torch.Tensor, gate: torch.Tensor | None) -> None:
        super().__init__(gate=gate)
        self._heads_out = heads_out  # [B, H, tokens, d_h]

    def __missing__(self, key: str) -> torch.Tensor:
        if key == "cls":
            value = self._heads_out[:, :, 0]
        elif key == "mean":
            value = self._heads_out.mean(dim=2)
        else:
            raise KeyError(key)
        self[key] = value
        return value


class TapSink:
    """Where one block's attention puts its `HeadTap` inside a `heads.tapping` scope: the scope's
    record (`{block: HeadTap}`), which the scope hands to its caller, never the module.

    A scope holds one forward: a second write for the same block (a second forward run inside the
    scope, e.g. by a hook) is refused rather than letting a loss read the wrong forward's features.
    A copy or a pickle of the module made while a scope is open holds no sink."""

    def __init__(self, record: dict[int, HeadTap], block: int) -> None:
        self.record, self.block = record, block

    def put(self, tap: HeadTap) -> None:
        if self.block in self.record:
            raise RuntimeError(
                f"block {self.block}'s heads were tapped twice in one `heads.tapping` scope: a scope holds "
                f"one forward, and a second forward ran inside it (open one scope per forward)")
        self.record[self.block] = tap

    def __deepcopy__(self, memo) -> None:
        return None

    def __reduce__(self):
        return type(None), ()


def _in_backward() -> bool:
    """True while autograd's engine runs a backward in this thread: a forward run then is the
    recomputation of activation checkpointing (`clip.grad_checkpointing`), whose taps nobody reads.
    (torch's own checkpoint code asks the same private function.)"""
    current = getattr(torch._C, "_current_graph_task_id", None)
    return current is not None and current() != -1


class HeadAttention(nn.MultiheadAttention):
    """Self-attention of one ViT block with per-head LoRA, gates, ablation and taps."""

    lora: HeadLoRA | None
    gate: HeadGate | None

    def _init_controls(self) -> None:
        """The controls' state, all off (called by `open_clip_vit.adopt` after the class swap)."""
        self.head_dim = self.embed_dim // self.num_heads
        self.lora = None
        self.lora_merged = False  # True: `lora`'s update is inside in_proj / out_proj's weights
        self.gate = None
        self.ablation_mode: str | None = None
        self.ablation_strength: torch.Tensor | None = None  # [H] in [0, 1], may carry gradients
        self.ablation_alpha = 0.0
        self.tap_sink: TapSink | None = None  # set only inside a `heads.tapping` scope

    def __setattr__(self, name: str, value) -> None:
        """Replacing `lora` while it is merged takes its update out of the weights first: the
        merge state belongs to this module, so no adapter can leave its update behind."""
        if name == "lora" and getattr(self, "lora_merged", False) and value is not self.lora:
            self.unmerge_lora()
        super().__setattr__(name, value)

    # ------------------------------------------------------------ controls
    @property
    def controlled(self) -> bool:
        """True when the explicit per-head path is needed."""
        return ((self.lora is not None and not self.lora_merged) or self.gate is not None
                or self.ablation_strength is not None or self.tap_sink is not None)

    def set_ablation(self, mode: str, strength: torch.Tensor, alpha: float = 0.0) -> None:
        if mode not in ABLATION_MODES:
            raise ValueError(f"ablation mode {mode!r} is not one of {ABLATION_MODES}")
        if strength.shape != (self.num_heads,):
            raise ValueError(f"ablation strength needs shape ({self.num_heads},), got {tuple(strength.shape)}")
        self.ablation_mode, self.ablation_strength, self.ablation_alpha = mode, strength, float(alpha)

    def clear_ablation(self) -> None:
        self.ablation_mode, self.ablation_strength, self.ablation_alpha = None, None, 0.0

    # ------------------------------------------------------------- forward
    def forward(self, query, key=None, value=None, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        if not self.controlled:
            key = query if key is None else key
            value = query if value is None else value
            return super().forward(query, key, value, key_padding_mask=key_padding_mask,
                                   need_weights=need_weights, attn_mask=attn_mask,
                                   average_attn_weights=average_attn_weights, is_causal=is_causal)
        if (key is not None and key is not query) or (value is not None and value is not query):
            raise ValueError("HeadAttention's controlled path supports self-attention only")
        if key_padding_mask is not None or is_causal:
            raise ValueError("HeadAttention's controlled path supports no key_padding_mask / is_causal")
        x = query if self.batch_first else query.transpose(0, 1)
        out = self._controlled_forward(x, attn_mask)
        return (out if self.batch_first else out.transpose(0, 1)), None

    def _controlled_forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        batch, tokens, _ = x.shape
        heads, head_dim = self.num_heads, self.head_dim
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        lora = self.lora if self.lora is not None and not self.lora_merged else None
        if lora is not None:
            q = q + lora.delta("q", x) if "q" in lora.targets else q
            k = k + lora.delta("k", x) if "k" in lora.targets else k
            v = v + lora.delta("v", x) if "v" in lora.targets else v
        q, k, v = (t.view(batch, tokens, heads, head_dim).transpose(1, 2) for t in (q, k, v))
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros_like(attn_mask, dtype=q.dtype).masked_fill(attn_mask, float("-inf"))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        if self.ablation_strength is not None:
            y = self._ablate(y, v, attn_mask)
        gate = self.gate.values() if self.gate is not None else None
        if self.tap_sink is not None and not _in_backward():
            # not when activation checkpointing recomputes the block (in the backward: nobody reads it)
            # per head [B, H, d_h]: CLS token and token mean (computed when read), and the gate values
            self.tap_sink.put(HeadTap(y, gate))
        y = y.transpose(1, 2).reshape(batch, tokens, self.embed_dim)
        lora_o = lora is not None and "o" in lora.targets
        # The gates multiply in fp32 (the weights' dtype), never cast to the activations' dtype
        # first: under bf16 autocast a gate within 0.004 of 1 would act as exactly 1, and training
        # would differ from the fp32 export (`folded_weights`).
        if gate is None:
            out = self.out_proj(y)
        elif lora_o:  # the output LoRA reads the gated heads
            y = (y.float() * gate.float().repeat_interleave(head_dim)).to(y.dtype)
            out = self.out_proj(y)
        else:  # gate the projection's columns ([d, d], fp32; autocast casts the product), not the activations
            columns = gate.to(self.out_proj.weight.dtype).repeat_interleave(head_dim)
            out = F.linear(y, self.out_proj.weight * columns, self.out_proj.bias)
        if lora_o:
            out = out + lora.delta("o", y)
        return out

    def _ablate(self, y: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """Blend each head's output with what its edited attention weights would give."""
        s = self.ablation_strength.to(device=y.device, dtype=y.dtype).view(1, -1, 1, 1)
        mode = self.ablation_mode
        if mode == "zero":
            return y * (1 - s)
        if mode == "scale":
            return y * (1 - s + s * self.ablation_alpha)
        if mode == "identity":
            return y + s * (v - y)
        if attn_mask is not None:
            raise ValueError("uniform ablation with an attention mask is not defined here")
        return y + s * (v.mean(dim=2, keepdim=True) - y)

    # -------------------------------------------------------------- export
    def head_scale(self) -> torch.Tensor:
        """Per-head factor on head outputs from gates and zero/scale ablation (foldable ones)."""
        scale = torch.ones(self.num_heads, device=self.out_proj.weight.device)
        if self.ablation_strength is not None:
            if self.ablation_mode not in FOLDABLE_ABLATIONS and bool((self.ablation_strength != 0).any()):
                raise ValueError(
                    f"{self.ablation_mode!r} ablation cannot be folded into weights: the exported "
                    f"model would differ; only {FOLDABLE_ABLATIONS} ablations export"
                )
            s = self.ablation_strength.detach().to(scale)
            alpha = self.ablation_alpha if self.ablation_mode == "scale" else 0.0
            scale = scale * (1 - s + s * alpha)
        if self.gate is not None:
            scale = scale * self.gate.values().detach().to(scale)
        return scale

    @torch.no_grad()
    def folded_weights(self) -> dict[str, torch.Tensor]:
        """`in_proj_weight`, `in_proj_bias`, `out_proj.weight`, `out_proj.bias` with LoRA merged
        and gates / zero / scale ablation folded into the output projection's columns."""
        in_w, out_w = self.in_proj_weight.detach().clone(), self.out_proj.weight.detach().clone()
        lora = self.lora
        if lora is not None and not self.lora_merged:
            for index, target in enumerate("qkv"):
                if target in lora.targets:
                    in_w[index * self.embed_dim:(index + 1) * self.embed_dim] += lora.delta_weight(target).to(in_w)
            if "o" in lora.targets:
                out_w += lora.delta_weight("o").to(out_w)
        out_w *= self.head_scale().repeat_interleave(self.head_dim).to(out_w)
        return {"in_proj_weight": in_w, "in_proj_bias": self.in_proj_bias.detach().clone(),
                "out_proj.weight": out_w, "out_proj.bias": self.out_proj.bias.detach().clone()}

    @torch.no_grad()
    def merge_lora(self) -> None:
        """Add LoRA's update into the weights (forward then skips LoRA); `unmerge_lora` undoes it."""
        self._apply_lora(+1.0)

    @torch.no_grad()
    def unmerge_lora(self) -> None:
        self._apply_lora(-1.0)

    def _apply_lora(self, sign: float) -> None:
        lora = self.lora
        if lora is None or self.lora_merged == (sign > 0):
            return
        for index, target in enumerate("qkv"):
            if target in lora.targets:
                rows = slice(index * self.embed_dim, (index + 1) * self.embed_dim)
                self.in_proj_weight[rows] += sign * lora.delta_weight(target).to(self.in_proj_weight)
        if "o" in lora.targets:
            self.out_proj.weight += sign * lora.delta_weight("o").to(self.out_proj.weight)
        self.lora_merged = sign > 0
