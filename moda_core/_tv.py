"""Import torchvision even when its compiled operators cannot be loaded.

The pinned torchvision wheel may be built against a different torch (here a CUDA build next to a
CPU-only torch). Its ``_C`` extension then fails to load, which torchvision tolerates, except that
``torchvision/_meta_registrations.py`` registers fake (meta) kernels for ``torchvision::nms`` and
``torchvision::qnms`` unconditionally at import time, and registering a fake kernel for an operator
whose schema was never defined raises ``RuntimeError: operator torchvision::nms does not exist``.
The other import-time registrations (roi_align, roi_pool, ps_roi_*, deform_conv2d and their
``_backward`` ops, in ``_meta_registrations.py`` and ``_autograd_registrations.py``) are skipped
when ``torchvision.extension._has_ops()`` is false, so they need no schema.

MODA only uses ``torchvision.datasets`` (pure Python). So when the plain import fails that way, we
define just the schemas the import needs, with no kernels, and import again; calling
``torchvision.ops.nms`` still fails with torchvision's own "Couldn't load custom C++ ops" error.
This workaround lives in this one file so that it can be dropped once the wheels match.
"""
from __future__ import annotations

import importlib
import sys
from types import ModuleType

import torch

# Operator schemas that torchvision 0.28 registers fake kernels for whether or not its C++ ops
# loaded; signatures as in torchvision's C++ sources (csrc/ops/nms.cpp and the quantized qnms).
_IMPORT_TIME_SCHEMAS = {
    "nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


def _is_missing_op_error(error: BaseException) -> bool:
    return isinstance(error, RuntimeError) and "torchvision::" in str(error) and "does not exist" in str(error)


def _forget_partial_import() -> None:
    # A failed import leaves successfully imported submodules behind (torchvision.extension, ...);
    # the retry must run the package's import-time code from the start.
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]


def _define_missing_schemas() -> None:
    namespace = torch.ops.torchvision
    for op_name, schema in _IMPORT_TIME_SCHEMAS.items():
        if not hasattr(namespace, op_name):
            # torch.library.define keeps its library object alive for the life of the process.
            torch.library.define(f"torchvision::{op_name}", schema)


def import_torchvision() -> ModuleType:
    """Return the ``torchvision`` module, defining missing operator schemas first if the wheel's
    compiled extension did not load (see the module docstring)."""
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as error:
        if not _is_missing_op_error(error):
            raise
    _forget_partial_import()
    _define_missing_schemas()
    return importlib.import_module("torchvision")
