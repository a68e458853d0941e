"""The torchvision-format data sets: tiny files in each real on-disk format, loaded through
``moda_core.data.load_dataset``, must round-trip exactly, and bad folders must give clear errors."""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from moda_core.data import load_dataset
from moda_core.errors import ModaError
from moda_core.rawdata import DIGITS

RNG_SEED = 1234


def _balanced_labels(num_classes: int, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Every class present ``per_class`` times, shuffled (load_dataset rejects empty classes)."""
    return rng.permutation(np.repeat(np.arange(num_classes), per_class))


# --- writers for each on-disk format -----------------------------------------------------------

def _idx_bytes(array: np.ndarray) -> bytes:
    # IDX: two zero bytes, type code 0x08 (unsigned byte), number of dims, big-endian int32 dims, data
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_idx_set(root: Path, folder: str, compress: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(RNG_SEED)
    arrays = {}
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for prefix, per_class in (("train", 3), ("t10k", 2)):
        labels = _balanced_labels(10, per_class, rng)
        images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
        arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"] = images, labels
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            if compress:
                (raw / f"{name}.gz").write_bytes(gzip.compress(_idx_bytes(array)))
            else:
                (raw / name).write_bytes(_idx_bytes(array))
    return arrays


def _cifar_batch(labels: np.ndarray, labels_key: str, rng: np.random.Generator, as_bytes: bool) -> dict:
    data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    batch = {"batch_label": "tiny batch", "data": data, labels_key: [int(v) for v in labels],
             "filenames": [f"img_{i}.png" for i in range(len(labels))]}
    # the official files, pickled by Python 2, read back with str keys; Python 3 writers use bytes
    return {k.encode(): v for k, v in batch.items()} if as_bytes else batch


def _write_cifar10(root: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(RNG_SEED)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    train_labels = _balanced_labels(10, 3, rng)
    train_data = []
    for number, part in enumerate(np.array_split(train_labels, 5), start=1):  # batches of 6 images
        batch = _cifar_batch(part, "labels", rng, as_bytes=True)
        train_data.append(batch[b"data"])
        (base / f"data_batch_{number}").write_bytes(pickle.dumps(batch, protocol=2))
    test_labels = _balanced_labels(10, 2, rng)
    test = _cifar_batch(test_labels, "labels", rng, as_bytes=True)
    (base / "test_batch").write_bytes(pickle.dumps(test, protocol=2))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    meta = {b"label_names": names, b"num_cases_per_batch": 6, b"num_vis": 3072}
    (base / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return {"train_data": np.concatenate(train_data), "train_labels": train_labels,
            "test_data": test[b"data"], "test_labels": test_labels,
            "names": [n.decode() for n in names]}


def _write_cifar100(root: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(RNG_SEED)
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    out = {}
    for split, per_class in (("train", 2), ("test", 1)):
        labels = _balanced_labels(100, per_class, rng)
        batch = _cifar_batch(labels, "fine_labels", rng, as_bytes=False)
        batch["coarse_labels"] = [int(v) // 5 for v in labels]
        (base / split).write_bytes(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
        out[f"{split}_data"], out[f"{split}_labels"] = batch["data"], labels
    out["names"] = [f"class_{i:02d}" for i in range(100)]
    meta = {"fine_label_names": out["names"], "coarse_label_names": [f"super_{i}" for i in range(20)]}
    (base / "meta").write_bytes(pickle.dumps(meta, protocol=pickle.HIGHEST_PROTOCOL))
    return out


def _write_svhn(root: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(RNG_SEED)
    out = {}
    for split, per_class in (("train", 3), ("test", 2)):
        digits = _balanced_labels(10, per_class, rng)
        x = rng.integers(0, 256, size=(32, 32, 3, len(digits)), dtype=np.uint8)  # H×W×C×N
        y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]  # SVHN writes 0 as 10
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})
        out[f"{split}_x"], out[f"{split}_digits"] = x, digits
    return out


# --- the torchvision import shim ---------------------------------------------------------------

def test_import_torchvision_exposes_datasets():
    from moda_core._tv import import_torchvision

    torchvision = import_torchvision()
    assert import_torchvision() is torchvision is sys.modules["torchvision"]  # imported once, reused
    for name in ("MNIST", "FashionMNIST", "CIFAR10", "CIFAR100", "SVHN"):
        assert hasattr(torchvision.datasets, name)


# --- MNIST and Fashion-MNIST -------------------------------------------------------------------

IDX_SETS = [("mnist", "MNIST", [f"{d} - {w}" for d, w in enumerate(
                 ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])]),
            ("fashion_mnist", "FashionMNIST", ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"])]


@pytest.mark.parametrize("name,folder,class_names", IDX_SETS)
def test_idx_round_trip(tmp_path, name, folder, class_names):
    arrays = _write_idx_set(tmp_path, folder)
    ds = load_dataset(name, root=str(tmp_path))
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64
    assert tuple(ds.train.images.shape) == (30, 1, 28, 28)
    assert tuple(ds.test.images.shape) == (20, 1, 28, 28)
    np.testing.assert_array_equal(ds.train.images.numpy()[:, 0], arrays["train_images"])
    np.testing.assert_array_equal(ds.train.labels.numpy(), arrays["train_labels"])
    np.testing.assert_array_equal(ds.test.images.numpy()[:, 0], arrays["t10k_images"])
    np.testing.assert_array_equal(ds.test.labels.numpy(), arrays["t10k_labels"])
    assert ds.class_names == class_names


def test_idx_class_subset(tmp_path):
    arrays = _write_idx_set(tmp_path, "MNIST")
    ds = load_dataset("mnist", root=str(tmp_path), classes=[7, 3])
    keep = np.isin(arrays["train_labels"], [3, 7])
    np.testing.assert_array_equal(ds.train.images.numpy()[:, 0], arrays["train_images"][keep])
    np.testing.assert_array_equal(ds.train.labels.numpy(), (arrays["train_labels"][keep] == 7).astype(np.int64))
    assert ds.classes == [3, 7] and ds.class_names == ["3 - three", "7 - seven"]
    assert len(ds.test) == 4


def test_idx_only_archives_says_how_to_extract(tmp_path):
    _write_idx_set(tmp_path, "MNIST", compress=True)
    with pytest.raises(ModaError) as caught:
        load_dataset("mnist", root=str(tmp_path))
    message = str(caught.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message and "gunzip" in message and "--download" in message


def test_idx_missing_files(tmp_path):
    _write_idx_set(tmp_path, "FashionMNIST")
    (tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ModaError, match="t10k-labels-idx1-ubyte") as caught:
        load_dataset("fashion_mnist", root=str(tmp_path))
    assert str(tmp_path / "FashionMNIST" / "raw") in str(caught.value)
    assert "--download" in str(caught.value)


def test_idx_corrupt_file(tmp_path):
    _write_idx_set(tmp_path, "MNIST")
    images = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])  # truncated
    with pytest.raises(ModaError, match="test split") as caught:
        load_dataset("mnist", root=str(tmp_path))
    assert str(images.parent) in str(caught.value) and "Traceback" not in str(caught.value)


# --- CIFAR-10 and CIFAR-100 --------------------------------------------------------------------

def test_cifar10_round_trip(tmp_path):
    expected = _write_cifar10(tmp_path)
    ds = load_dataset("cifar10", root=str(tmp_path))
    assert ds.train.images.dtype == torch.uint8 and tuple(ds.train.images.shape) == (30, 3, 32, 32)
    assert tuple(ds.test.images.shape) == (20, 3, 32, 32)
    np.testing.assert_array_equal(ds.train.images.numpy().reshape(30, -1), expected["train_data"])
    np.testing.assert_array_equal(ds.train.labels.numpy(), expected["train_labels"])
    np.testing.assert_array_equal(ds.test.images.numpy().reshape(20, -1), expected["test_data"])
    np.testing.assert_array_equal(ds.test.labels.numpy(), expected["test_labels"])
    # a row is the red plane then green then blue: pixel (row 1, col 2) of green is 1024 + 32 + 2
    assert ds.train.images[0, 1, 1, 2].item() == expected["train_data"][0, 1024 + 32 + 2]
    assert ds.class_names == expected["names"]


def test_cifar100_round_trip_and_subset(tmp_path):
    expected = _write_cifar100(tmp_path)
    ds = load_dataset("cifar100", root=str(tmp_path))
    assert tuple(ds.train.images.shape) == (200, 3, 32, 32) and tuple(ds.test.images.shape) == (100, 3, 32, 32)
    np.testing.assert_array_equal(ds.train.images.numpy().reshape(200, -1), expected["train_data"])
    np.testing.assert_array_equal(ds.test.labels.numpy(), expected["test_labels"])
    assert ds.class_names == expected["names"]

    subset = load_dataset("cifar100", root=str(tmp_path), classes=[42, 5, 99])
    keep = np.isin(expected["train_labels"], [5, 42, 99])
    np.testing.assert_array_equal(subset.train.images.numpy().reshape(-1, 3072), expected["train_data"][keep])
    remap = {5: 0, 42: 1, 99: 2}
    np.testing.assert_array_equal(subset.train.labels.numpy(), [remap[v] for v in expected["train_labels"][keep]])
    assert subset.class_names == ["class_05", "class_42", "class_99"]


def test_cifar_missing_files(tmp_path):
    _write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(ModaError, match="data_batch_4") as caught:
        load_dataset("cifar10", root=str(tmp_path))
    message = str(caught.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "test_batch" in message and "batches.meta" in message and "--download" in message


def test_cifar_corrupt_file(tmp_path):
    _write_cifar100(tmp_path)
    broken = tmp_path / "cifar-100-python" / "test"
    broken.write_bytes(broken.read_bytes()[:500])
    with pytest.raises(ModaError, match="could not read") as caught:
        load_dataset("cifar100", root=str(tmp_path))
    assert str(broken) in str(caught.value)


def test_cifar_wrong_contents(tmp_path):
    _write_cifar10(tmp_path)
    batch_path = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch = pickle.loads(batch_path.read_bytes())
    batch[b"data"] = batch[b"data"][:, :100]
    batch_path.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(ModaError, match="N×3072") as caught:
        load_dataset("cifar10", root=str(tmp_path))
    assert str(batch_path) in str(caught.value)


class _Exploit:
    """Unpickling this would create a folder: the restricted unpickler must refuse it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def test_cifar_pickle_cannot_run_code(tmp_path):
    _write_cifar10(tmp_path)
    marker = tmp_path / "code_ran"
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(pickle.dumps({b"label_names": [_Exploit(marker)]}, protocol=2))
    with pytest.raises(ModaError, match="refusing to load") as caught:
        load_dataset("cifar10", root=str(tmp_path))
    assert str(meta) in str(caught.value)
    assert not marker.exists()


# --- SVHN --------------------------------------------------------------------------------------

def test_svhn_round_trip(tmp_path):
    expected = _write_svhn(tmp_path)
    ds = load_dataset("svhn", root=str(tmp_path))
    assert ds.train.images.dtype == torch.uint8 and tuple(ds.train.images.shape) == (30, 3, 32, 32)
    assert tuple(ds.test.images.shape) == (20, 3, 32, 32)
    np.testing.assert_array_equal(ds.train.images.numpy(), expected["train_x"].transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(ds.test.images.numpy(), expected["test_x"].transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(ds.train.labels.numpy(), expected["train_digits"])  # 10 read as 0
    np.testing.assert_array_equal(ds.test.labels.numpy(), expected["test_digits"])
    assert ds.class_names == DIGITS

    subset = load_dataset("svhn", root=str(tmp_path), classes=[0, 9])
    keep = np.isin(expected["train_digits"], [0, 9])
    np.testing.assert_array_equal(subset.train.labels.numpy(), (expected["train_digits"][keep] == 9).astype(int))


def test_svhn_missing_and_corrupt(tmp_path):
    _write_svhn(tmp_path)
    (tmp_path / "test_32x32.mat").unlink()
    with pytest.raises(ModaError, match="test_32x32.mat") as caught:
        load_dataset("svhn", root=str(tmp_path))
    assert str(tmp_path) in str(caught.value) and "--download" in str(caught.value)

    (tmp_path / "test_32x32.mat").write_bytes(b"not a MATLAB file at all")
    with pytest.raises(ModaError, match="could not read") as caught:
        load_dataset("svhn", root=str(tmp_path))
    assert str(tmp_path / "test_32x32.mat") in str(caught.value)


# --- the folder itself -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100", "svhn"])
def test_missing_root(tmp_path, name):
    root = tmp_path / "no_such_folder"
    with pytest.raises(ModaError, match="does not exist") as caught:
        load_dataset(name, root=str(root))
    assert str(root) in str(caught.value)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "svhn"])
def test_empty_root_lists_expected_files(tmp_path, name):
    with pytest.raises(ModaError, match="files missing in") as caught:
        load_dataset(name, root=str(tmp_path))
    assert str(tmp_path) in str(caught.value) and "--download" in str(caught.value)


# --- --download, with torchvision's network step replaced (the tests never go online) ----------

def _offline(*args, **kwargs):
    from urllib.error import URLError

    raise URLError("network is unreachable")


@pytest.mark.parametrize("name,module", [("mnist", "mnist"), ("cifar10", "cifar"), ("cifar100", "cifar")])
def test_download_failure_is_a_clear_error(tmp_path, monkeypatch, name, module):
    from moda_core._tv import import_torchvision

    monkeypatch.setattr(getattr(import_torchvision().datasets, module), "download_and_extract_archive", _offline)
    root = tmp_path / "new_folder"
    with pytest.raises(ModaError, match="could not download") as caught:
        load_dataset(name, root=str(root), download=True)
    assert str(root) in str(caught.value) and "network is unreachable" in str(caught.value)


def test_download_skipped_when_idx_files_present(tmp_path, monkeypatch):
    from moda_core._tv import import_torchvision

    monkeypatch.setattr(import_torchvision().datasets.mnist, "download_and_extract_archive", _offline)
    arrays = _write_idx_set(tmp_path, "MNIST")
    ds = load_dataset("mnist", root=str(tmp_path), download=True)
    np.testing.assert_array_equal(ds.test.labels.numpy(), arrays["t10k_labels"])


def test_svhn_download_fetches_each_split(tmp_path, monkeypatch):
    from moda_core._tv import import_torchvision

    fetched = []

    def fake_download_url(url, root, filename, md5):
        fetched.append((url.rsplit("/", 1)[-1], Path(root), filename, len(md5)))

    monkeypatch.setattr(import_torchvision().datasets.utils, "download_url", fake_download_url)
    expected = _write_svhn(tmp_path)
    ds = load_dataset("svhn", root=str(tmp_path), download=True)
    assert fetched == [("train_32x32.mat", tmp_path, "train_32x32.mat", 32),
                       ("test_32x32.mat", tmp_path, "test_32x32.mat", 32)]
    np.testing.assert_array_equal(ds.test.labels.numpy(), expected["test_digits"])

    monkeypatch.setattr(import_torchvision().datasets.utils, "download_url", _offline)
    with pytest.raises(ModaError, match="could not download SVHN"):
        load_dataset("svhn", root=str(tmp_path), download=True)
