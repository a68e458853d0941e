"""Data sets as uint8 tensors on the training device, with batch augmentation on the device.

A data set is looked up by name in ``DATASETS``. ``mnist5k`` ships with the package
(``moda_core.resources``); the others come through torchvision from a local folder (see
``moda_core.tvdata``). Images stay uint8 until a batch is taken, so even CIFAR-100 fits on a GPU;
``Split.batch`` normalises (and augments) a batch in one vectorised step, with no per-sample Python.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from moda_core.errors import ModaError
from moda_core.rawdata import DIGITS, RawData
from moda_core.resources import mnist5k_path


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    in_channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool  # random crop (padding 4) + horizontal flip; RGB sets only
    needs_root: bool
    loader: Callable[[str | None, bool], RawData] = field(repr=False, compare=False)


def _load_mnist5k(root: str | None, download: bool) -> RawData:
    """The 5,000 embedded digits, split 4,000 train / 1,000 test, stratified, with a fixed seed."""
    path = mnist5k_path()
    if not path.exists():
        raise ModaError(f"the embedded data set is missing: expected {path} (rebuild it with assets/make_mnist5k.py)")
    with np.load(path, allow_pickle=False) as archive:
        images, labels = archive["images"], archive["labels"].astype(np.int64)
    rng = np.random.default_rng(20241101)
    test_index = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[:100] for c in range(10)]
    )
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_index] = True
    images = images[:, None]  # N×1×28×28
    return RawData(images[~is_test], labels[~is_test], images[is_test], labels[is_test], list(DIGITS))


def _load_synthetic(root: str | None, download: bool) -> RawData:
    """CIFAR-10-shaped random images (50,000 train / 10,000 test, 10 classes) for timing benchmarks.

    Each class gets its own mean colour so that a model can learn something, but the point is the
    shape of the work, not the accuracy.
    """
    rng = np.random.default_rng(0)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, n)
        tint = (np.arange(10)[:, None] * np.array([23, 57, 91]) % 128).astype(np.int16)
        images = rng.integers(0, 128, (n, 3, 32, 32), dtype=np.int16) + tint[labels][:, :, None, None]
        return images.astype(np.uint8), labels.astype(np.int64)

    train_images, train_labels = make(50_000)
    test_images, test_labels = make(10_000)
    return RawData(train_images, train_labels, test_images, test_labels, [f"class {c}" for c in range(10)])


def _torchvision_loader(name: str) -> Callable[[str | None, bool], RawData]:
    def load(root: str | None, download: bool) -> RawData:
        from moda_core import tvdata  # imports torchvision lazily: mnist5k never needs it

        return tvdata.load_arrays(name, root, download)

    return load


_MNIST_NORM = ((0.1307,), (0.3081,))
DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo("mnist5k", "5,000 MNIST digits embedded in assets/ (default)", 1, 28, 10,
                    *_MNIST_NORM, augment=False, needs_root=False, loader=_load_mnist5k),
        DatasetInfo("mnist", "MNIST from a local torchvision folder", 1, 28, 10,
                    *_MNIST_NORM, augment=False, needs_root=True, loader=_torchvision_loader("mnist")),
        DatasetInfo("fashion_mnist", "Fashion-MNIST from a local torchvision folder", 1, 28, 10,
                    (0.2860,), (0.3530,), augment=False, needs_root=True,
                    loader=_torchvision_loader("fashion_mnist")),
        DatasetInfo("cifar10", "CIFAR-10 from a local torchvision folder", 3, 32, 10,
                    (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), augment=True, needs_root=True,
                    loader=_torchvision_loader("cifar10")),
        DatasetInfo("cifar100", "CIFAR-100 from a local torchvision folder", 3, 32, 100,
                    (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), augment=True, needs_root=True,
                    loader=_torchvision_loader("cifar100")),
        DatasetInfo("synthetic", "random CIFAR-10-shaped images, for timing benchmarks", 3, 32, 10,
                    (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), augment=True, needs_root=False, loader=_load_synthetic),
        DatasetInfo("svhn", "SVHN (train/test) from a local torchvision folder", 3, 32, 10,
                    (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), augment=True, needs_root=True,
                    loader=_torchvision_loader("svhn")),
    ]
}


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise ModaError(f"unknown data set {name!r}: expected one of {', '.join(DATASETS)}") from None


@dataclass
class Split:
    """One split on one device: uint8 images N×C×H×W and int64 labels (0..num_classes-1)."""

    images: torch.Tensor
    labels: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: torch.Tensor | slice, augment: bool = False,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[index].float().div_(255.0)
        if augment:
            x = random_crop_flip(x, padding=4, generator=generator)
        return (x - self.mean) / self.std, self.labels[index]

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The whole split in order, without augmentation (evaluation)."""
        for start in range(0, len(self), batch_size):
            yield self.batch(slice(start, start + batch_size))


@dataclass
class Dataset:
    info: DatasetInfo
    train: Split
    test: Split
    classes: list[int]  # original class ids kept, sorted; label k here is original class classes[k]
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def random_crop_flip(x: torch.Tensor, padding: int = 4,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop after zero padding and random horizontal flip, for a whole batch at once."""
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    offsets = torch.randint(0, 2 * padding + 1, (2, b), device=x.device, generator=generator)
    rows = (offsets[0, :, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (offsets[1, :, None] + torch.arange(w, device=x.device))[:, None, None, :]
    flip = torch.rand(b, device=x.device, generator=generator) < 0.5
    cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
    batch_index = torch.arange(b, device=x.device)[:, None, None, None]
    channel_index = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch_index, channel_index, rows, cols]


def _select(images: np.ndarray, labels: np.ndarray, classes: list[int], fraction: float, seed: int,
            class_fractions: Mapping[int, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isin(labels, classes)
    images, labels = images[keep], labels[keep]
    fractions = {c: (class_fractions or {}).get(c, fraction) for c in classes}
    if any(f < 1.0 for f in fractions.values()):
        # stratified: a fixed share of every class (``fraction``, or the class's own in ``class_fractions``),
        # chosen with a fixed seed; one permutation per class in class order, whatever the shares
        rng = np.random.default_rng(seed)
        chosen = [rng.permutation(np.flatnonzero(labels == c))[: max(1, round(fractions[c] * (labels == c).sum()))]
                  for c in classes]
        index = np.sort(np.concatenate(chosen))
        images, labels = images[index], labels[index]
    remap = np.full(int(max(classes)) + 1, -1, dtype=np.int64)
    remap[classes] = np.arange(len(classes))
    return images, remap[labels]


def check_class_fractions(class_fractions: Mapping, classes: Sequence[int], what: str) -> dict[int, float]:
    """Validate per-class training fractions (original class id -> share in (0, 1]) against the classes
    learnt; keys may be strings (as read back from JSON). Returns them with int keys, sorted."""
    checked: dict[int, float] = {}
    for key, value in class_fractions.items():
        try:
            class_id = int(key)
        except (TypeError, ValueError):
            raise ModaError(f"class fraction key {key!r} for {what} is not a class id") from None
        if class_id not in classes:
            raise ModaError(f"class fraction given for class {class_id} for {what}, but that class is not learnt "
                            f"(the classes are {list(classes)})")
        try:
            share = float(value)
        except (TypeError, ValueError):
            raise ModaError(f"class fraction of class {class_id} for {what} must be a number, got {value!r}") from None
        if not 0.0 < share <= 1.0:
            raise ModaError(f"class fraction of class {class_id} for {what} must be in (0, 1], got {value}")
        checked[class_id] = share
    return dict(sorted(checked.items()))


def load_dataset(name: str = "mnist5k", root: str | None = None, download: bool = False,
                 classes: Sequence[int] | None = None, train_fraction: float = 1.0, seed: int = 0,
                 device: str | torch.device = "cpu",
                 class_fractions: Mapping[int, float] | None = None) -> Dataset:
    """Load a registered data set onto ``device``, optionally keeping only ``classes`` (relabelled
    0..k-1 in sorted order) and a stratified ``train_fraction`` of the training split;
    ``class_fractions`` (original class id -> share) overrides that share for the classes it names."""
    info = dataset_info(name)
    if info.needs_root and not root:
        raise ModaError(f"data set {name!r} needs a local folder",
                        hint="pass --data-root DIR (add --download to fetch it there when online)")
    if not 0.0 < train_fraction <= 1.0:
        raise ModaError(f"train fraction must be in (0, 1], got {train_fraction}")
    if classes is None:
        classes = list(range(info.num_classes))
    classes = check_classes(classes, info.num_classes, what=f"data set {name!r}")
    if class_fractions:
        class_fractions = check_class_fractions(class_fractions, classes, what=f"this selection of {name!r}")
    raw = info.loader(root, download)
    train_images, train_labels = _select(raw.train_images, raw.train_labels, classes, train_fraction, seed,
                                         class_fractions)
    test_images, test_labels = _select(raw.test_images, raw.test_labels, classes, 1.0, seed)
    for which, labels in (("train", train_labels), ("test", test_labels)):
        counts = np.bincount(labels, minlength=len(classes))
        if (counts == 0).any():
            empty = [classes[k] for k in np.flatnonzero(counts == 0)]
            raise ModaError(f"data set {name!r} has no {which} samples of class(es) {empty}")
    device = torch.device(device)
    mean = torch.tensor(info.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(info.std, device=device).view(1, -1, 1, 1)

    def split(images: np.ndarray, labels: np.ndarray) -> Split:
        return Split(torch.from_numpy(np.ascontiguousarray(images)).to(device),
                     torch.from_numpy(labels).to(device), mean, std)

    return Dataset(info, split(train_images, train_labels), split(test_images, test_labels),
                   classes, [raw.class_names[c] for c in classes])


def check_classes(classes: Sequence[int], num_classes: int, what: str) -> list[int]:
    """Validate a class list: non-empty, no duplicates, every index in range; returns it sorted."""
    classes = [int(c) for c in classes]
    if not classes:
        raise ModaError(f"empty class list for {what}: give at least one class index")
    duplicates = sorted({c for c in classes if classes.count(c) > 1})
    if duplicates:
        raise ModaError(f"duplicated class index(es) {duplicates} for {what}")
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ModaError(f"class index(es) {bad} out of range for {what}: expected 0..{num_classes - 1}")
    return sorted(classes)
