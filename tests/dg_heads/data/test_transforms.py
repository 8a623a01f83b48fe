"""Image transforms: uint8 images normalised on the device equal the float transform."""

import pytest
import torch

from dg_heads.data import DomainBedDataModule


@pytest.mark.parametrize("augment", ["eval", "domainbed", "clip"])
def test_uint8_images_normalised_on_the_device_equal_the_float_transform(augment, data_root):
    from dg_heads.data.transforms import eval_transform, normalize_uint8, train_transform
    from dg_heads.methods.base import DGModule

    dm = DomainBedDataModule("rotated_digits", ["75"], root=str(data_root), image_size=32, num_workers=0)
    dm.setup("fit")
    images = [dm.table.reader.read(int(r)) for r in dm.table.rows_of("0")[:6]]

    def make(uint8):
        return eval_transform(32, uint8=uint8) if augment == "eval" else train_transform(32, augment, uint8=uint8)

    torch.manual_seed(3)
    floats = torch.stack([make(False)(im) for im in images])
    torch.manual_seed(3)
    raw = torch.stack([make(True)(im) for im in images])
    assert raw.dtype == torch.uint8 and raw.shape == floats.shape == (6, 3, 32, 32)
    assert (normalize_uint8(raw) - floats).abs().max() <= 1e-6
    model = DGModule.__new__(DGModule)  # prepare_images needs only the two buffers
    torch.nn.Module.__init__(model)
    model.register_buffer("pixel_mean", torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1))
    model.register_buffer("pixel_std", torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1))
    assert (model.prepare_images(raw) - floats).abs().max() <= 1e-6
    assert model.prepare_images(floats) is floats
    # and the loaders hand out uint8
    batch = next(iter(dm.train_dataloader()))
    assert all(x.dtype == torch.uint8 for x, _ in batch.values())
    assert next(iter(dm.val_dataloader()[0]))[0].dtype == torch.uint8
