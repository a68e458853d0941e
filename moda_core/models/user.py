"""Models of your own: a builder function named by its import path, ``package.module:function``.

The builder is called as ``fn(num_classes=…, in_channels=…, image_size=…)`` and returns an ``nn.Module`` whose
forward maps a batch ``[B, in_channels, image_size, image_size]`` to logits ``[B, num_classes]``. A run stores
the import path in its config.json (``arch.name``, with ``arch.points`` and ``arch.threshold``), and everything
that loads the run calls the builder again and loads the weights under the model's own ``state_dict`` keys.

``build_user_model`` checks the builder's result before anything uses it (each failure one ``ModaError``): the
import, the call, that it is a module, that its output is ``[batch, classes]``, and that it has an activation
point. A traceable model's points come from its graph (``moda_core.graph``; the builder may declare a point's unit
axis in a ``moda_points`` attribute, site name → axis); one fx cannot trace keeps its ``nn.ReLU``/``nn.ReLU6``
modules as points (trained and decomposed through hooks, each of which must run once per forward pass; not
composable).

Importing runs code, and a run folder is untrusted input, so it never chooses what is imported: a builder comes
only from a top-level package the person allowed (``moda_core.import_policy``: ``--models PKG``, ``MODA_MODELS``,
or the package of the model being trained), looked for in the current folder only then; it must be a function
defined in the module the path names (``pkg.mod:fn``: no attribute paths, nothing the module imported from
elsewhere); a namespace package (a folder without ``__init__.py``, such as a runs folder) is refused.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from typing import Any, Callable, TypeGuard

import torch
from torch import nn

from moda_core.errors import ModaError
from moda_core.graph import DEFAULT_THRESHOLD, KINDS, TraceError, graph_of
from moda_core.import_policy import allowed_packages, allowing, needs
from moda_core.model_attrs import set_attributes

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_IMPORT_PATH = re.compile(rf"{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}")
MAX_IMPORT_PATH = 200


def is_import_path(name: object) -> TypeGuard[str]:
    """Whether ``name`` is spelled as a builder's import path (``package.module:function``)."""
    return isinstance(name, str) and len(name) <= MAX_IMPORT_PATH and _IMPORT_PATH.fullmatch(name) is not None


def check_import_path(name: object) -> str:
    if not is_import_path(name):
        raise ModaError(f"model {name!r} is neither a zoo model nor an import path package.module:function "
                        f"(a function's plain name after the colon; letters, digits and _, at most {MAX_IMPORT_PATH} "
                        "characters)")
    return name


def import_path_of(builder: Callable[..., Any]) -> str:
    """The import path of a builder function, checked to import back to the same function."""
    module, qualname = getattr(builder, "__module__", None), getattr(builder, "__qualname__", None)
    if not module or not qualname or "<" in qualname or module == "__main__":
        raise ModaError(f"model builder {builder!r} cannot be found again by an import path: define it at the top "
                        "level of an importable module (not in __main__, not a lambda or nested function)")
    path = check_import_path(f"{module}:{qualname}")
    with allowing(module.split(".")[0]):  # the person handed over the function: its package is theirs to run
        found = load_builder(path)
    if found is not builder:
        raise ModaError(f"model builder {path} does not import back to the function given")
    return path


def package_of(path: str) -> str:
    """The top-level package a builder's import path names."""
    return path.partition(":")[0].split(".")[0]


def load_builder(path: str) -> Callable[..., Any]:
    """The function an import path names, imported only from an allowed package; a ``ModaError`` says why not."""
    check_import_path(path)
    module_name, _, function = path.partition(":")
    top = package_of(path)
    if top not in allowed_packages():
        raise ModaError(f"model {path} is not imported: {needs(top)}")
    here = os.getcwd()
    added = here not in sys.path
    if added:  # the current folder, for this allowed package only
        sys.path.append(here)
    try:
        spec = importlib.util.find_spec(top)
        if spec is None:
            raise ModaError(f"cannot import model {path}: no module named {top!r} (install it or run from the folder "
                            "that holds it)")
        if spec.origin in (None, "namespace") and spec.submodule_search_locations is not None:
            raise ModaError(f"cannot import model {path}: {top!r} is a folder without __init__.py (a namespace "
                            "package); model code must come from a regular package or module")
        module = importlib.import_module(module_name)
        target = getattr(module, function)
    except ModaError:
        raise
    except Exception as error:  # ImportError, SyntaxError, AttributeError, anything its import raises
        raise ModaError(f"cannot import model {path}: {type(error).__name__}: {' '.join(str(error).split())}") \
            from None
    finally:
        if added and here in sys.path:
            sys.path.remove(here)
    if not callable(target):
        raise ModaError(f"model {path} is a {type(target).__name__}, not a function that builds a model")
    if getattr(target, "__module__", None) != module_name:
        raise ModaError(f"model {path} is not a function defined in {module_name} (it comes from "
                        f"{getattr(target, '__module__', None) or 'elsewhere'}): name the builder where it is defined")
    return target


def check_points(points: Any) -> str | dict[str, int | None]:
    """``points``: activation kinds, comma-separated (``relu``, ``gelu``, ``silu``), or site name → unit axis."""
    if isinstance(points, dict):
        bad = [k for k, v in points.items() if not isinstance(k, str) or not (v is None or type(v) is int)]
        if bad or not points:
            raise ModaError(f"declared points must map site names to a unit axis (an int) or None, got {points!r}")
        return dict(points)
    kinds = [k.strip() for k in str(points).split(",")]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ModaError(f"unknown activation kind(s) {unknown} in points {points!r}: expected some of "
                        f"{', '.join(KINDS)}, comma-separated")
    return ",".join(kinds)


def build_user_model(path: str, in_channels: int, image_size: int, num_classes: int, points: Any = "relu",
                     threshold: float = DEFAULT_THRESHOLD, check: bool = True) -> nn.Module:
    """Call the builder at ``path`` and check what it returns; returns the model with ``arch`` and
    ``input_shape`` set, its graph read (``moda_core.graph.graph_of``; an untraceable model is marked
    ``arch["traced"] = False``). ``check=False`` returns the built model unchecked (for its ``state_dict`` shapes,
    e.g. built on the meta device)."""
    builder = load_builder(path)
    try:
        model = builder(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    except Exception as error:
        raise ModaError(f"model builder {path} raised {type(error).__name__}: {' '.join(str(error).split())} "
                        f"(called as {path.partition(':')[2]}(num_classes={num_classes}, in_channels={in_channels}, "
                        f"image_size={image_size}))") from None
    if not isinstance(model, nn.Module):
        raise ModaError(f"model builder {path} returned a {type(model).__name__}, not a torch.nn.Module")
    declared = getattr(model, "moda_points", None)
    arch = {"name": path, "in_channels": in_channels, "image_size": image_size, "num_classes": num_classes,
            "width": 1.0, "points": check_points(declared if declared is not None and points == "relu" else points),
            "threshold": float(threshold)}
    if not check:
        return model
    example = torch.zeros(2, in_channels, image_size, image_size)
    _check_output(model, example, path, num_classes)
    set_attributes(model, arch=arch, input_shape=(in_channels, image_size, image_size))
    try:
        graph = graph_of(model)
    except TraceError as error:
        if arch["points"] != "relu" or not any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in model.modules()):
            raise ModaError(f"{error}; without a traceable forward MODA hooks nn.ReLU modules, and {path} has "
                            "none") from None
        arch["traced"] = False  # points: its nn.ReLU modules, through hooks
        from moda_core.activations import point_units

        point_units(model)  # each ReLU module must run once per forward pass
        return model
    if not graph.points:
        kinds = arch["points"] if isinstance(arch["points"], str) else "declared"
        raise ModaError(f"{path} has no activation point: no {kinds} call in its forward pass (MODA's objectives act "
                        "on ReLU activations; GELU or SiLU count only with --points gelu/silu)")
    return model


def _check_output(model: nn.Module, example: torch.Tensor, path: str, num_classes: int) -> None:
    from moda_core.graph import module_view

    try:
        with torch.no_grad():
            output = module_view(model)(example)
    except Exception as error:
        raise ModaError(f"model {path} fails on a batch of {tuple(example.shape)} inputs: {type(error).__name__}: "
                        f"{' '.join(str(error).split())}") from None
    shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
    if shape != (example.shape[0], num_classes):
        got = f"shape {list(shape)}" if shape is not None else f"a {type(output).__name__}"
        raise ModaError(f"model {path} returns {got} for a batch of {tuple(example.shape)} inputs; MODA needs "
                        f"logits [batch, classes] = [{example.shape[0]}, {num_classes}]")
