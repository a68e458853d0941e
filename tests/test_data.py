"""The embedded data set, class subsetting, fixed splits and on-device augmentation."""
import numpy as np
import pytest
import torch

from moda_core.data import DATASETS, check_classes, load_dataset, random_crop_flip
from moda_core.errors import ModaError


def test_mnist5k_split_is_stratified_and_fixed():
    data = load_dataset("mnist5k")
    assert len(data.train) == 4000 and len(data.test) == 1000
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (1, 28, 28)
    assert torch.bincount(data.test.labels).tolist() == [100] * 10
    assert torch.bincount(data.train.labels).tolist() == [400] * 10
    again = load_dataset("mnist5k")
    assert torch.equal(again.test.images, data.test.images)
    # no test image is also a training image
    train_keys = {bytes(x.numpy()) for x in data.train.images}
    assert not any(bytes(x.numpy()) in train_keys for x in data.test.images)


def test_class_subset_relabels_in_sorted_order():
    data = load_dataset("mnist5k", classes=[7, 1])
    full = load_dataset("mnist5k")
    assert data.classes == [1, 7] and data.class_names == ["1", "7"]
    assert torch.equal(data.test.images, full.test.images[(full.test.labels == 1) | (full.test.labels == 7)])
    assert set(data.test.labels.tolist()) == {0, 1}


def test_train_fraction_is_stratified_and_seeded():
    a = load_dataset("mnist5k", train_fraction=0.1, seed=3)
    b = load_dataset("mnist5k", train_fraction=0.1, seed=3)
    c = load_dataset("mnist5k", train_fraction=0.1, seed=4)
    assert torch.bincount(a.train.labels).tolist() == [40] * 10
    assert torch.equal(a.train.images, b.train.images) and not torch.equal(a.train.images, c.train.images)
    assert len(a.test) == 1000  # the test split is never reduced


def test_batch_normalises():
    data = load_dataset("mnist5k")
    x, y = data.train.batch(torch.arange(10))
    raw = data.train.images[:10].float() / 255
    assert torch.allclose(x, (raw - 0.1307) / 0.3081)
    assert torch.equal(y, data.train.labels[:10])


def test_random_crop_flip_matches_per_sample_reference():
    torch.manual_seed(0)
    x = torch.rand(6, 3, 5, 7)
    out = random_crop_flip(x, padding=2, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    offsets = torch.randint(0, 5, (2, 6), generator=g)
    flips = torch.rand(6, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        oy, ox = offsets[0, i].item(), offsets[1, i].item()
        crop = padded[i, :, oy:oy + 5, ox:ox + 7]
        assert torch.equal(out[i], crop.flip(-1) if flips[i] else crop)


def test_augmentation_only_for_rgb_sets():
    assert not DATASETS["mnist5k"].augment and DATASETS["cifar10"].augment


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="imagenet"), "unknown data set"),
    (dict(name="mnist5k", classes=[3, 10]), "out of range"),
    (dict(name="mnist5k", classes=[3, 3]), "duplicated"),
    (dict(name="mnist5k", classes=[]), "empty class list"),
    (dict(name="cifar10"), "needs a local folder"),
    (dict(name="mnist5k", train_fraction=0.0), "train fraction"),
])
def test_bad_input_is_a_clear_error(kwargs, match):
    with pytest.raises(ModaError, match=match):
        load_dataset(**kwargs)


def test_check_classes_sorts():
    assert check_classes(np.array([4, 2]), 5, "x") == [2, 4]
