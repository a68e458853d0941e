"""Two context managers: ``hooks`` (register forward hooks, always remove them) and ``eval_mode`` (switch a
model to eval mode, restore every module's mode afterwards; a model already in eval mode is not touched)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

from torch import nn

Hook = Callable[..., object]


@contextmanager
def hooks(forward: Iterable[tuple[nn.Module, Hook]] = (),
          pre: Iterable[tuple[nn.Module, Hook]] = ()) -> Iterator[None]:
    """Register ``forward`` hooks ``(module, hook(module, inputs, output))`` and ``pre`` hooks
    ``(module, hook(module, inputs))`` for the duration of the block; they are removed even on error."""
    handles = []
    try:
        handles += [module.register_forward_pre_hook(hook) for module, hook in pre]
        handles += [module.register_forward_hook(hook) for module, hook in forward]
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; every module's mode is restored afterwards. A model already in
    eval mode (one shared by many callers) is not touched at all."""
    modes = [(module, module.training) for module in model.modules()]
    if not any(training for _, training in modes):
        yield model
        return
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
