"""The reference figures of `test_retrieval_cli.py::test_zero_shot_recalls_equal_clip_benchmarks`:
CLIP_benchmark's own `clip_benchmark.metrics.zeroshot_retrieval.evaluate` on the model and data of
that test's `lightning test` run (the tiny CLIP built from seed 0 as the demo preset builds it,
DigitCaptions' test split as the DataModule reads it, normalised as the model does), printed as
percent. CLIP_benchmark is not a dependency (its package pulls transformers, pycocoevalcap and
webdataset; the module used here imports only torch and tqdm), so its figures are stored:

    pip download clip-benchmark==1.6.2 --no-deps -d /tmp/cb && (cd /tmp/cb && unzip -oq clip_benchmark-*.whl)
    PYTHONPATH=/tmp/cb:. python tests/cli/clip_benchmark_reference.py
"""

from __future__ import annotations

import lightning as L
import torch
from clip_benchmark.metrics.zeroshot_retrieval import evaluate

from dg_heads.backbone import CLIPSpec
from dg_heads.data import RetrievalDataModule
from dg_heads.methods import CLIPBaseline


def main() -> None:
    L.seed_everything(0)  # the demo preset's seed_everything, then the classes as the CLI builds them
    data = RetrievalDataModule(dataset="digit_captions", image_size=32, eval_batch_size=100, num_workers=0)
    model = CLIPBaseline(clip=CLIPSpec(model_name="dg-tiny-vit", pretrained=None), mode="zero_shot").eval()
    data.setup("test")
    loader = [(model.prepare_images(b["images"]), b["captions"]) for b in data.test_dataloader()[0]]
    figures = evaluate(model.clip, loader, model.tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10])
    names = {"text_retrieval_recall": "i2t", "image_retrieval_recall": "t2i"}
    out = {f"{names[k.split('@')[0]]}_r{k.split('@')[1]}": 100 * v for k, v in figures.items()}
    print({k: round(v, 4) for k, v in sorted(out.items())})


if __name__ == "__main__":
    with torch.no_grad():
        main()
