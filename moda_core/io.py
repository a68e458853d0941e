"""Atomic file writes and the readers/writers of the run store's JSON and safetensors files.

Every file is written to a temporary name in the same folder and renamed into place, so a crash
never leaves a half-written file under its real name; weights are safetensors and metadata is JSON,
so reading never unpickles code. All writes go through :func:`atomic_write_bytes` or
:func:`atomic_write_with` (tests inject failures there). A write into a run folder names that folder
(``inside=``): it then never leaves it (no symbolic link is followed, see :func:`check_write_target`)
and never creates the folder itself, only subfolders in it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from moda_core.errors import ModaError


def _plain_file_mode() -> int:
    """The mode a plainly created file gets under this process's umask (mkstemp's files are 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _plain_file_mode()  # read once at import: os.umask is process-wide, not thread-safe


def _refuse_link(path: Path, inside: Path) -> ModaError:
    return ModaError(f"{path} is a symbolic link: run folders must hold plain files "
                     f"(nothing is written through it, so nothing outside {inside} changes)")


def check_write_target(path: str | Path, inside: str | Path) -> Path:
    """Make ``path`` ready to be written without leaving the folder ``inside`` (a run folder); returns it.

    ``inside`` must exist and be a plain folder (not a symbolic link): it is never created, so a writer never
    recreates a run folder that was moved or deleted. Subfolders between it and ``path`` are created one by
    one (``checkpoints/`` …) and none of them, nor ``path`` itself, may be a symbolic link or resolve outside
    ``inside``. A ``ModaError`` says what is wrong."""
    path, inside = Path(path), Path(inside)
    try:
        parts = path.relative_to(inside).parts
    except ValueError:
        parts = ()
    if not parts or ".." in parts:
        raise ModaError(f"refusing to write {path}: it is not a file inside {inside}")
    try:
        mode = os.lstat(inside).st_mode
    except FileNotFoundError:
        raise ModaError(f"run folder {inside} no longer exists (moved or deleted?): {path.name} was not "
                        "written") from None
    if stat.S_ISLNK(mode):
        raise _refuse_link(inside, inside)
    if not stat.S_ISDIR(mode):
        raise ModaError(f"run folder {inside} is not a folder: {path.name} was not written")
    folder = inside
    for part in parts[:-1]:
        folder = folder / part
        try:
            os.mkdir(folder)
        except FileExistsError:
            pass
        mode = os.lstat(folder).st_mode
        if stat.S_ISLNK(mode):
            raise _refuse_link(folder, inside)
        if not stat.S_ISDIR(mode):
            raise ModaError(f"{folder} is not a folder: {path.name} was not written")
    if os.path.islink(path):
        raise _refuse_link(path, inside)
    if not Path(os.path.realpath(path.parent)).is_relative_to(os.path.realpath(inside)):
        raise ModaError(f"refusing to write {path}: it resolves outside {inside}")
    return path


def _prepare(path: str | Path, inside: str | Path | None) -> Path:
    path = Path(path)
    check_replaceable(path)
    if inside is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
    return check_write_target(path, inside)


def check_replaceable(path: str | Path, what: str = "") -> None:
    """A ``ModaError`` when ``path`` exists and is not a regular file (a device, a FIFO, a socket, a folder) or is
    a link to one: an atomic write would put a file in its place. A regular file (or a link to one, or nothing)
    may be replaced."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode  # through a link: what it points at
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as error:
        raise ModaError(f"{what}{path}: {error.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        link = " (through a symbolic link)" if os.path.islink(path) else ""
        raise ModaError(f"{what}{path} is {kind}{link}, not a regular file: it is not replaced")


def _name_the_file(error: OSError, path: Path) -> None:
    """An OSError without a file name (a full disk while writing) names the file it was writing."""
    if error.filename is None:
        error.filename = str(path)


def atomic_write_bytes(path: str | Path, data: bytes, inside: str | Path | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.

    ``inside``: the run folder ``path`` belongs to; the write then stays in it (:func:`check_write_target`)."""
    path = _prepare(path, inside)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            _name_the_file(error, path)
        raise


def atomic_write_with(path: str | Path, writer: Callable[[Path], None], inside: str | Path | None = None) -> None:
    """Let ``writer`` write a temporary file next to ``path``, then rename it into place.

    The temporary name keeps ``path``'s suffix, for writers that insist on one. ``inside``: as for
    :func:`atomic_write_bytes`."""
    path = _prepare(path, inside)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.tmp-", suffix=path.suffix)
        os.close(fd)
        writer(Path(tmp))
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            _name_the_file(error, path)
        raise


def json_bytes(obj: Any) -> bytes:
    """How every JSON file of a run is written: indented, keys sorted, a final newline."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def write_json(path: str | Path, obj: Any, inside: str | Path | None = None) -> None:
    """``obj`` as a JSON file (:func:`json_bytes`), written atomically; ``inside`` as for :func:`atomic_write_bytes`."""
    if inside is None:
        atomic_write_bytes(path, json_bytes(obj))
    else:
        atomic_write_bytes(path, json_bytes(obj), inside=inside)


# ----- reading: a run folder's files are untrusted input ---------------------------------------------

MAX_JSON_BYTES = 1 << 20  # config.json, metrics.json, commit.json: a real one is a few kilobytes
MAX_HEADER_BYTES = 16 << 20  # a safetensors header: about 150 bytes per tensor
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _not_regular(path: Path, mode: int) -> ModaError:
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return ModaError(f"{path} is {kind}, not a regular file: it is not read")


def open_regular(path: str | Path, limit: int | None = None, missing: str = "missing file") -> int:
    """A file descriptor open for reading ``path``, only if it is a regular file (a FIFO or a device could block
    a reader or never end) of at most ``limit`` bytes; otherwise a ``ModaError`` (``missing`` names a file
    that does not exist). The type is checked before opening, and again on the open descriptor."""
    path = Path(path)
    try:
        before = os.stat(path)
    except FileNotFoundError:
        raise ModaError(f"{missing} {path}") from None
    except (OSError, ValueError) as error:  # permissions, a loop of links, a NUL in the name
        raise ModaError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    if not stat.S_ISREG(before.st_mode):
        raise _not_regular(path, before.st_mode)
    if limit is not None and before.st_size > limit:
        raise ModaError(f"{path} holds {before.st_size:,} bytes, more than the {limit:,} such a file may hold: "
                        "it is not read")
    try:
        fd = os.open(path, os.O_RDONLY | _NONBLOCK)
    except OSError as error:
        raise ModaError(f"cannot read {path}: {error.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):  # replaced between the check and the open
        os.close(fd)
        raise _not_regular(path, mode)
    return fd


def read_bounded(path: str | Path, limit: int, missing: str = "missing file") -> bytes:
    """The contents of the regular file ``path`` (:func:`open_regular`), at most ``limit`` bytes."""
    fd = open_regular(path, limit, missing)
    try:
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as error:
        raise ModaError(f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > limit:  # it grew after the check
        raise ModaError(f"{path} holds more than the {limit:,} bytes such a file may hold: it is not read")
    return data


def read_json(path: str | Path, limit: int = MAX_JSON_BYTES) -> Any:
    """A JSON file of at most ``limit`` bytes; missing, not a regular file, too large, not JSON or nested too
    deeply: a ``ModaError``."""
    path = Path(path)
    data = read_bounded(path, limit)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError, so is a 5,000-digit int
        raise ModaError(f"corrupt JSON file {path}: {error}") from None
    except RecursionError:
        raise ModaError(f"corrupt JSON file {path}: nested too deeply") from None


CHECKSUM = "moda_sha256"  # metadata key: the SHA-256 of the file's tensor data, checked when it is loaded


def _data_part(blob: bytes) -> memoryview:
    """The tensor data of a safetensors encoding (what follows its 8-byte length and JSON header)."""
    return memoryview(blob)[8 + int.from_bytes(blob[:8], "little"):]


def tensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> bytes:
    """The safetensors encoding of ``tensors`` (moved to CPU) with string-valued ``metadata`` and the checksum of
    the tensor data, so that a flipped bit anywhere in it is found when the file is loaded (``load_tensors``)."""
    tensors = {key: value.detach().cpu().contiguous() for key, value in tensors.items()}
    metadata = {k: str(v) for k, v in (metadata or {}).items() if k != CHECKSUM}
    metadata[CHECKSUM] = hashlib.sha256(_data_part(save(tensors, metadata=metadata))).hexdigest()
    return save(tensors, metadata=metadata)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None,
                 inside: str | Path | None = None) -> None:
    """``tensors`` as a safetensors file, written atomically; ``inside`` as for :func:`atomic_write_bytes`."""
    if inside is None:
        atomic_write_bytes(path, tensors_bytes(tensors, metadata))
    else:
        atomic_write_bytes(path, tensors_bytes(tensors, metadata), inside=inside)


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; a missing or corrupt file (its data not what its checksum says,
    for a file written with one) is a ``ModaError``."""
    path = Path(path)
    metadata = read_tensor_metadata(path)  # a regular file whose header fits it, or a ModaError
    try:
        blob = read_bounded(path, os.stat(path).st_size)
        if CHECKSUM in metadata and hashlib.sha256(_data_part(blob)).hexdigest() != metadata[CHECKSUM]:
            raise ValueError("its tensor data is not what its checksum says (changed or damaged)")
        tensors = load(blob)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ModaError(f"corrupt tensor file {path}: {error}") from None
    metadata = {k: v for k, v in metadata.items() if k != CHECKSUM}
    return tensors, metadata


# bytes per element of the safetensors dtypes
DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_header(header: Any, data_size: int) -> None:
    """A ``ValueError`` unless ``header`` is a safetensors header whose tensors lie inside ``data_size`` bytes."""
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    metadata = header.get("__metadata__")
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(v, str) for v in metadata.values())):
        raise ValueError("its metadata is not a map of strings")
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or not isinstance(info.get("data_offsets"), list):
            raise ValueError(f"tensor {name!r} has no data offsets")
        offsets, shape, dtype = info["data_offsets"], info.get("shape"), info.get("dtype")
        if not (len(offsets) == 2 and all(_is_count(v) for v in offsets) and offsets[0] <= offsets[1]):
            raise ValueError(f"tensor {name!r} has data offsets {str(offsets)[:80]}, not [begin, end]")
        if not (isinstance(shape, list) and all(_is_count(v) for v in shape)) or not isinstance(dtype, str):
            raise ValueError(f"tensor {name!r} has no valid shape and dtype")
        begin, end = offsets
        if end > data_size:
            raise ValueError(f"tensor {name!r} ends at byte {end} but the file holds {data_size} "
                             "bytes of data (truncated?)")
        if dtype in DTYPE_SIZES and math.prod(shape) * DTYPE_SIZES[dtype] != end - begin:
            raise ValueError(f"tensor {name!r} of shape {shape} ({dtype}) does not take {end - begin} bytes")


def read_tensor_header(path: str | Path) -> dict[str, Any]:
    """The whole JSON header of a safetensors file (tensor names, dtypes, shapes, offsets and
    ``__metadata__``), checked against the file's size; cheap: no tensor data is read. Only a regular file
    is opened (:func:`open_regular`); a header that does not fit the file is a ``ModaError``."""
    path = Path(path)
    fd = open_regular(path, missing="missing tensor file")
    try:
        with os.fdopen(fd, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            header_size = int.from_bytes(handle.read(8), "little")
            if not 2 <= header_size <= min(MAX_HEADER_BYTES, size - 8):
                raise ValueError(f"header size {header_size} does not fit the file")
            header = json.loads(handle.read(header_size))
        _check_header(header, size - 8 - header_size)
    except (OSError, ValueError, UnicodeDecodeError, IndexError, TypeError) as error:
        raise ModaError(f"corrupt tensor file {path}: {error}") from None
    except RecursionError:
        raise ModaError(f"corrupt tensor file {path}: its header is nested too deeply") from None
    return header


def read_tensor_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors file from its JSON header alone (cheap: no tensor data is read)."""
    return read_tensor_header(path).get("__metadata__") or {}
