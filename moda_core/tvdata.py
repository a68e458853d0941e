"""The torchvision-format data sets (MNIST, Fashion-MNIST, CIFAR-10/100, SVHN) read from a local folder.

``load_arrays`` returns whole splits as uint8 N×C×H×W arrays and int64 labels (``RawData``), taken
from the arrays the files hold rather than from per-sample PIL images. The folder layout is the
one torchvision uses, so a folder filled by torchvision (or by ``--download``) works as it is:

* ``<root>/MNIST/raw/`` and ``<root>/FashionMNIST/raw/``: the four extracted IDX files;
* ``<root>/cifar-10-batches-py/`` and ``<root>/cifar-100-python/``: the python pickle batches;
* ``<root>/train_32x32.mat`` and ``<root>/test_32x32.mat``: SVHN.

Every problem with the folder or its files is raised as a ``ModaError`` naming the path and what
was expected there.
"""
from __future__ import annotations

import codecs
import functools
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from moda_core.errors import ModaError
from moda_core.rawdata import DIGITS, RawData

_np_multiarray: Any  # numpy's array pickling helpers: private, so not in its type stubs
_np_numeric: Any
try:  # numpy >= 2 moved the array pickling helpers to numpy._core
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _np_multiarray
    from numpy.core import numeric as _np_numeric


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _torchvision_datasets() -> Any:
    from moda_core._tv import import_torchvision

    try:
        return import_torchvision().datasets
    except ImportError as error:
        raise ModaError(f"this data set is read through torchvision, which could not be imported "
                        f"({_describe(error)}): install the torchvision listed in requirements.txt") from error


def _fetch(label: str, folder: Path, fetch: Callable[[], object]) -> None:
    """Run a torchvision download step; it skips files that are already there and intact."""
    try:
        fetch()
    except Exception as error:  # network, disk and checksum failures all end up here
        raise ModaError(f"could not download {label} into {folder}: {_describe(error)} "
                        f"(check the network, or copy the files there by hand)") from error


def _missing(label: str, where: Path, missing: list[str], expected: list[str], hint: str = "") -> ModaError:
    found = "" if len(missing) == len(expected) else f"{', '.join(missing)} (of {', '.join(expected)})"
    return ModaError(f"{label} files missing in {where}: "
                     f"{found or 'expected ' + ', '.join(expected)}; "
                     f"{hint or 'add --download to fetch them there'}")


def _check_labels(labels: np.ndarray, count: int, num_classes: int, what: str) -> None:
    if labels.shape != (count,):
        raise ModaError(f"{what}: {labels.size} labels for {count} images (expected one label per image)")
    if count and not (0 <= labels.min() and labels.max() < num_classes):
        raise ModaError(f"{what}: labels outside 0..{num_classes - 1} "
                        f"(found {int(labels.min())}..{int(labels.max())})")


# --- MNIST and Fashion-MNIST: torchvision's own classes -------------------------------------------
# These read the extracted IDX files without checksums, so torchvision's classes are used to read
# them as well as to download them; their .data and .targets are whole-split tensors.

_IDX_FILES = {
    "train": ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"],
    "test": ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
}


def _load_idx(label: str, class_name: str, folder: Path, download: bool) -> RawData:
    dataset_class = getattr(_torchvision_datasets(), class_name)
    raw = folder / class_name / "raw"
    processed = folder / class_name / "processed"
    expected = _IDX_FILES["train"] + _IDX_FILES["test"]

    def legacy() -> bool:
        # torchvision reads processed/*.pt instead of raw/, when its old versions left both there
        return all((processed / name).is_file() for name in ("training.pt", "test.pt"))

    def missing_files() -> list[str]:
        return [] if legacy() else [name for name in expected if not (raw / name).is_file()]

    if download and missing_files():
        # only when something is missing: torchvision does not re-fetch files that exist anyway,
        # and constructing it on present but corrupt files would fail as a "download" error
        _fetch(label, folder, lambda: dataset_class(str(folder), train=True, download=True))
    missing = missing_files()
    if missing:
        archives = [name + ".gz" for name in missing if (raw / (name + ".gz")).is_file()]
        hint = ""
        if archives:
            hint = (f"found {', '.join(archives)} but not the extracted files: gunzip them there, or "
                    f"add --download, which extracts intact archives without fetching them again")
        raise _missing(label, raw, missing, expected, hint)

    arrays = []
    for split, train in (("train", True), ("test", False)):
        where = (f"{processed / ('training.pt' if train else 'test.pt')}" if legacy()
                 else f"{raw} ({', '.join(_IDX_FILES[split])})")
        try:
            dataset = dataset_class(str(folder), train=train)
        except Exception as error:  # torchvision's IDX parser asserts and raises many kinds
            raise ModaError(f"could not read the {label} {split} split from {where}: {_describe(error)} "
                            f"(expected IDX files of uint8 images N×28×28 and labels; "
                            f"delete them and add --download to fetch them again)") from error
        images = dataset.data.numpy()
        labels = dataset.targets.numpy().astype(np.int64)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ModaError(f"{label} {split} images in {where} have shape {images.shape} and type "
                            f"{images.dtype}: expected uint8 N×28×28")
        _check_labels(labels, len(images), 10, f"{label} {split} split in {where}")
        arrays += [images[:, None], labels]  # N×1×28×28
    return RawData(arrays[0], arrays[1], arrays[2], arrays[3], [str(name) for name in dataset_class.classes])


# --- CIFAR-10 and CIFAR-100: our own reader, torchvision only to download -------------------------
# torchvision's CIFAR classes verify the md5 sum of every file on each load, even with
# download=False, so they reject any file but the official ones and answer every problem with the
# same "not found or corrupted". We read the python batches ourselves, with an unpickler that can
# build nothing but plain containers and numpy arrays (a pickle may otherwise run arbitrary code),
# and use torchvision's class only to fetch (and md5-check) the archive when --download is given.

@dataclass(frozen=True)
class _CifarLayout:
    label: str
    torchvision_class: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    labels_key: str
    names_key: str
    num_classes: int


_CIFAR10 = _CifarLayout("CIFAR-10", "CIFAR10", "cifar-10-batches-py",
                        tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta",
                        "labels", "label_names", 10)
_CIFAR100 = _CifarLayout("CIFAR-100", "CIFAR100", "cifar-100-python", ("train",), ("test",), "meta",
                         "fine_labels", "fine_label_names", 100)


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    # Python 3 pickles bytes at protocols < 3 as _codecs.encode(text, "latin1"); nothing else is allowed
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


# The only globals a CIFAR batch refers to: numpy's array reconstruction helpers (under both the
# numpy 1 and numpy 2 module names, since the official files predate numpy 2) and bytes at old protocols.
_PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _np_numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _np_numeric._frombuffer,
    ("_codecs", "encode"): _latin1_bytes,
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data and "
                                         f"numpy arrays are allowed") from None


def _read_pickled_dict(path: Path, label: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            # latin1 is how numpy arrays pickled by Python 2 (the official files) are decoded
            content = _ArrayUnpickler(file, encoding="latin1").load()
    except Exception as error:  # truncated, not a pickle, or a forbidden global
        raise ModaError(f"could not read {path}: {_describe(error)} (expected a {label} python batch, "
                        f"a pickled dict; delete it and add --download to fetch it again)") from error
    if not isinstance(content, dict):
        raise ModaError(f"{path} holds a pickled {type(content).__name__}: expected a {label} python "
                        f"batch, a pickled dict")
    # Python 2 keys come back as str, keys pickled from Python 3 bytes as bytes
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in content.items()}


def _read_cifar_batch(path: Path, layout: _CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    batch = _read_pickled_dict(path, layout.label)
    data, labels = batch.get("data"), batch.get(layout.labels_key)
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3 * 32 * 32):
        found = (f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__)
        raise ModaError(f"{path}: 'data' is {found}, expected a uint8 array N×3072")
    labels = np.asarray(labels) if isinstance(labels, (list, tuple, np.ndarray)) else None
    if labels is None or (labels.size and labels.dtype.kind not in "iu"):
        raise ModaError(f"{path}: '{layout.labels_key}' missing or not a list of integers")
    labels = labels.astype(np.int64).reshape(-1)
    _check_labels(labels, len(data), layout.num_classes, str(path))
    # each row is the red plane, then green, then blue, each 32×32 row-major: already C×H×W
    return data.reshape(-1, 3, 32, 32), labels


def _read_cifar_names(path: Path, layout: _CifarLayout) -> list[str]:
    names = _read_pickled_dict(path, layout.label).get(layout.names_key)
    if not (isinstance(names, (list, tuple)) and len(names) == layout.num_classes
            and all(isinstance(n, (str, bytes)) for n in names)):
        raise ModaError(f"{path}: '{layout.names_key}' missing or not a list of {layout.num_classes} names")
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


def _load_cifar(layout: _CifarLayout, folder: Path, download: bool) -> RawData:
    base = folder / layout.folder
    if download:
        # the test split is the smaller one to construct; either makes torchvision fetch the archive
        dataset_class = getattr(_torchvision_datasets(), layout.torchvision_class)
        _fetch(layout.label, folder, lambda: dataset_class(str(folder), train=False, download=True))
    expected = [*layout.train_files, *layout.test_files, layout.meta_file]
    missing = [name for name in expected if not (base / name).is_file()]
    if missing:
        raise _missing(layout.label, base, missing, expected)
    class_names = _read_cifar_names(base / layout.meta_file, layout)
    arrays = []
    for files in (layout.train_files, layout.test_files):
        batches = [_read_cifar_batch(base / name, layout) for name in files]
        arrays += [np.concatenate([images for images, _ in batches]),
                   np.concatenate([labels for _, labels in batches])]
    return RawData(arrays[0], arrays[1], arrays[2], arrays[3], class_names)


# --- SVHN: our own reader, torchvision only to download -------------------------------------------
# torchvision's SVHN class md5-checks the .mat files on every load too, so (as for CIFAR) we read
# them with scipy ourselves and use torchvision's file list and downloader for --download.

_SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def _read_svhn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        import scipy.io
    except ImportError as error:
        raise ModaError(f"reading SVHN needs scipy ({_describe(error)}): install the scipy listed in "
                        f"requirements.txt") from error
    try:
        mat = scipy.io.loadmat(str(path), variable_names=("X", "y"))
    except Exception as error:  # not a MAT file, truncated, or MATLAB 7.3 (HDF5)
        raise ModaError(f"could not read {path}: {_describe(error)} (expected an SVHN MATLAB file with "
                        f"'X' and 'y'; delete it and add --download to fetch it again)") from error
    images, labels = mat.get("X"), mat.get("y")
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
            and images.shape[:3] == (32, 32, 3)):
        found = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else "missing"
        raise ModaError(f"{path}: 'X' is {found}, expected uint8 32×32×3×N")
    if not isinstance(labels, np.ndarray) or (labels.size and labels.dtype.kind not in "iuf"):
        raise ModaError(f"{path}: 'y' missing or not numeric, expected labels N×1")
    labels = labels.reshape(-1).astype(np.int64)
    _check_labels(labels, images.shape[3], 11, str(path))
    labels[labels == 10] = 0  # SVHN writes digit 0 as class 10
    return np.ascontiguousarray(images.transpose(3, 2, 0, 1)), labels  # H×W×C×N -> N×C×H×W


def _load_svhn(folder: Path, download: bool) -> RawData:
    if download:
        datasets = _torchvision_datasets()
        for split in _SVHN_FILES:
            url, filename, md5 = datasets.SVHN.split_list[split]
            _fetch("SVHN", folder, functools.partial(datasets.utils.download_url, url, str(folder), filename, md5))
    expected = list(_SVHN_FILES.values())
    missing = [name for name in expected if not (folder / name).is_file()]
    if missing:
        raise _missing("SVHN", folder, missing, expected)
    train_images, train_labels = _read_svhn(folder / _SVHN_FILES["train"])
    test_images, test_labels = _read_svhn(folder / _SVHN_FILES["test"])
    return RawData(train_images, train_labels, test_images, test_labels, list(DIGITS))


_LOADERS: dict[str, Callable[[Path, bool], RawData]] = {
    "mnist": functools.partial(_load_idx, "MNIST", "MNIST"),
    "fashion_mnist": functools.partial(_load_idx, "Fashion-MNIST", "FashionMNIST"),
    "cifar10": functools.partial(_load_cifar, _CIFAR10),
    "cifar100": functools.partial(_load_cifar, _CIFAR100),
    "svhn": _load_svhn,
}


def load_arrays(name: str, root: str | None, download: bool) -> RawData:
    """Read data set ``name`` from the torchvision-layout folder ``root``, first fetching what is
    missing there when ``download`` is true."""
    if name not in _LOADERS:
        raise ModaError(f"unknown torchvision data set {name!r}: expected one of {', '.join(_LOADERS)}")
    if not root:
        raise ModaError(f"data set {name!r} needs a local folder", hint="pass --data-root DIR")
    folder = Path(root).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ModaError(f"data folder {folder} is not a folder: expected a directory holding {name}")
    if not download and not folder.is_dir():
        raise ModaError(f"data folder {folder} does not exist: create it with the {name} files inside, "
                        f"or add --download to fetch them there")
    return _LOADERS[name](folder, download)
