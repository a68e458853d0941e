"""Atomic file writes and the readers/writers of the run store's JSON and safetensors files.

Every file is written to a temporary name in the same folder and renamed into place, so a crash
never leaves a half-written file under its real name; weights are safetensors and metadata is JSON,
so reading never unpickles code. All writes go through :func:`atomic_write_bytes` or
:func:`atomic_write_with` (tests inject failures there).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from moda_core.errors import ModaError


def _plain_file_mode() -> int:
    """The mode a plainly created file gets under this process's umask (mkstemp's files are 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _plain_file_mode()  # read once at import: os.umask is process-wide, not thread-safe


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Let ``writer`` write a temporary file next to ``path``, then rename it into place.

    The temporary name keeps ``path``'s suffix, for writers that insist on one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        writer(Path(tmp))
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_bytes(obj: Any) -> bytes:
    """How every JSON file of a run is written: indented, keys sorted, a final newline."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise ModaError(f"missing file {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModaError(f"corrupt JSON file {path}: {error}") from None


def tensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> bytes:
    """The safetensors encoding of ``tensors`` (moved to CPU) with string-valued ``metadata``."""
    tensors = {key: value.detach().cpu().contiguous() for key, value in tensors.items()}
    return save(tensors, metadata={k: str(v) for k, v in (metadata or {}).items()})


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
    atomic_write_bytes(path, tensors_bytes(tensors, metadata))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; a missing or corrupt file is a ``ModaError``."""
    path = Path(path)
    if not path.exists():
        raise ModaError(f"missing tensor file {path}")
    metadata = read_tensor_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ModaError(f"corrupt tensor file {path}: {error}") from None
    return tensors, metadata


def read_tensor_header(path: str | Path) -> dict[str, Any]:
    """The whole JSON header of a safetensors file (tensor names, dtypes, shapes, offsets and
    ``__metadata__``), checked against the file's size; cheap: no tensor data is read."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            header_size = int.from_bytes(handle.read(8), "little")
            if not 2 <= header_size <= min(100_000_000, size - 8):
                raise ValueError(f"header size {header_size} does not fit the file")
            header = json.loads(handle.read(header_size))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        data_size = size - 8 - header_size
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if not isinstance(info, dict) or not isinstance(info.get("data_offsets"), list):
                raise ValueError(f"tensor {name!r} has no data offsets")
            end = info["data_offsets"][1]
            if not isinstance(end, int) or end > data_size:
                raise ValueError(f"tensor {name!r} ends at byte {end} but the file holds {data_size} "
                                 "bytes of data (truncated?)")
    except (OSError, ValueError, UnicodeDecodeError, IndexError) as error:
        raise ModaError(f"corrupt tensor file {path}: {error}") from None
    return header


def read_tensor_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors file from its JSON header alone (cheap: no tensor data is read)."""
    return read_tensor_header(path).get("__metadata__") or {}
