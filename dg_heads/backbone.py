"""Create an open_clip model and its tokenizer from a name plus a pretrained tag or weights file.

Why a wrapper: open_clip silently runs GELU when OpenAI weights are loaded from a file into a
non-`-quickgelu` config, and a mistyped tag or path fails deep inside open_clip. Here both are
caught up front, and the tiny configs shipped with dg-heads are registered for demos and tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from open_clip import build_zero_shot_classifier

from dg_heads.errors import DGHeadsError

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
open_clip.add_model_config(MODEL_CONFIG_DIR)

TINY_MODEL = "dg-tiny-vit"
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
DEFAULT_TEMPLATES = ["a photo of a {}."]


@dataclass
class CLIPSpec:
    """Which CLIP to build: `pretrained` is a tag (`openai`, `laion2b_s34b_b88k`, ...), a local
    weights file, or null for random init. `quick_gelu` null means: on for OpenAI weights.
    `grad_checkpointing`: open_clip's activation checkpointing (`set_grad_checkpointing`): a
    training step keeps each block's input instead of its activations and recomputes them in
    the backward (~1/3 more compute; the same gradients)."""

    model_name: str = TINY_MODEL
    pretrained: str | None = None
    quick_gelu: bool | None = None
    # null: the data's prompts (`data.init_args.templates`), else DEFAULT_TEMPLATES
    templates: list[str] | None = None
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        # `--...pretrained null` on the command line can arrive as the string 'None' (omegaconf mode)
        if isinstance(self.pretrained, str) and self.pretrained.strip().lower() in ("", "none", "null"):
            self.pretrained = None


def _is_path(pretrained: str) -> bool:
    return "/" in pretrained or pretrained.endswith(WEIGHT_SUFFIXES)


def wants_quick_gelu(spec: CLIPSpec) -> bool:
    """OpenAI's CLIP was trained with QuickGELU; a file named like OpenAI weights gets it too."""
    if spec.quick_gelu is not None:
        return spec.quick_gelu
    if spec.model_name.endswith("-quickgelu") or not spec.pretrained:
        return False
    return spec.pretrained == "openai" or "openai" in Path(spec.pretrained).name.lower()


def check_spec(spec: CLIPSpec) -> None:
    if spec.model_name not in open_clip.list_models():
        vits = [m for m in open_clip.list_models() if m.startswith("ViT-B") or m == TINY_MODEL]
        raise DGHeadsError(
            f"model_name {spec.model_name!r} is not an open_clip model; expected one of "
            f"open_clip.list_models(), e.g. {', '.join(vits[:8])}"
        )
    if spec.pretrained is None:
        return
    if _is_path(spec.pretrained):
        if not Path(spec.pretrained).expanduser().is_file():
            raise DGHeadsError(f"pretrained weights file {spec.pretrained!r} does not exist")
        return
    tags = open_clip.list_pretrained_tags_by_model(spec.model_name)
    if spec.pretrained not in tags:
        raise DGHeadsError(
            f"pretrained tag {spec.pretrained!r} is unknown for {spec.model_name}; expected a "
            f"weights file or one of {tags or 'no tags (random init only: pretrained: null)'}"
        )


def tag_weights(model_name: str, tag: str) -> Path | None:
    """A tag's cached weights file (loaded from there: no request to the hub at all), None when
    it must be downloaded (network here), or an error at once when there is no network: an
    offline node would otherwise retry the download for half a minute."""
    from dg_heads.weights import cached_or_offline_error

    return cached_or_offline_error(model_name, tag)


def create_clip(spec: CLIPSpec) -> tuple[open_clip.CLIP, open_clip.tokenizer.SimpleTokenizer]:
    """Build the model (fp32 weights: Lightning's autocast handles mixed precision) and tokenizer."""
    check_spec(spec)
    pretrained = spec.pretrained
    if pretrained and _is_path(pretrained):
        pretrained = str(Path(pretrained).expanduser())
    if pretrained and not _is_path(pretrained):
        pretrained = str(tag_weights(spec.model_name, pretrained) or pretrained)
    try:
        model = open_clip.create_model(
            spec.model_name, pretrained=pretrained, force_quick_gelu=wants_quick_gelu(spec)
        )
    except (OSError, RuntimeError) as error:  # download failures, unreadable files
        if spec.pretrained and not _is_path(spec.pretrained):
            raise DGHeadsError(
                f"could not fetch pretrained weights {spec.pretrained!r} for {spec.model_name} "
                f"({type(error).__name__}: {error}); on a machine without network pass a local "
                f"weights file as `pretrained`"
            ) from error
        raise DGHeadsError(f"could not load weights {spec.pretrained!r}: {error}") from error
    if spec.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model, open_clip.get_tokenizer(spec.model_name)


def image_size_of(model: torch.nn.Module) -> int:
    """The square input size the image tower was built for (its positional embedding fixes it)."""
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def resolve_templates(templates: list[str]) -> list[str]:
    """A template list, or one of open_clip's named sets: `openai_imagenet` (80), `simple_imagenet` (7)."""
    named = {
        "openai_imagenet": open_clip.OPENAI_IMAGENET_TEMPLATES,
        "simple_imagenet": open_clip.SIMPLE_IMAGENET_TEMPLATES,
    }
    if len(templates) == 1 and templates[0] in named:
        return [t("{}") for t in named[templates[0]]]
    for template in templates:
        if "{}" not in template:
            raise DGHeadsError(f"prompt template {template!r} has no '{{}}' for the class name")
    return list(templates)


PROMPTS_PER_BATCH = 1024  # prompts through the text tower at once when the zero-shot head is built


@contextmanager
def text_tower_on(model: torch.nn.Module, device: torch.device | str) -> Iterator[None]:
    """Every parameter and buffer of `model` outside its image tower (`model.visual`: the text
    tower, projections, logit scale) on `device` inside the block: copies stand in for them in
    their modules, and after the block the very tensors that were there are back (same objects,
    same storage, bit for bit; nothing is copied back)."""
    device = torch.device(device)
    image = {id(t) for t in [*model.visual.parameters(), *model.visual.buffers()]}
    moved: dict[int, torch.Tensor] = {}  # a tensor shared by two modules gets one copy
    kept: list[tuple[dict, str, torch.Tensor]] = []
    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for name, tensor in table.items():
                if tensor is None or id(tensor) in image or tensor.device == device:
                    continue
                if id(tensor) not in moved:
                    copy = tensor.detach().to(device)
                    moved[id(tensor)] = (torch.nn.Parameter(copy, tensor.requires_grad)
                                         if isinstance(tensor, torch.nn.Parameter) else copy)
                kept.append((table, name, tensor))
                table[name] = moved[id(tensor)]
    try:
        yield
    finally:
        for table, name, tensor in kept:
            table[name] = tensor


@torch.no_grad()
def build_text_classifier(model: torch.nn.Module, tokenizer, class_names: list[str], templates: list[str],
                          device: torch.device | str | None = None) -> torch.Tensor:
    """The zero-shot head: each class's normalised mean text embedding over the prompt templates,
    `[classes, embed_dim]` fp32 on the CPU, computed by open_clip's `build_zero_shot_classifier`
    with the text tower on `device` (default: where its weights are; see `text_tower_on`), in
    batches of about `PROMPTS_PER_BATCH` prompts (DomainNet's 345 classes x 80 templates are
    27,600 prompts: on a GPU seconds, on a CPU core tens of minutes)."""
    device = torch.device(device) if device is not None else model.logit_scale.device
    with text_tower_on(model, device):
        weights = build_zero_shot_classifier(model, tokenizer, class_names, templates, device=device,
                                             num_classes_per_batch=max(1, PROMPTS_PER_BATCH // len(templates)))
        return weights.T.float().cpu().contiguous()
