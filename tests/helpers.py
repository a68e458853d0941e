"""Shared test helpers: randomised zoo models, random class masks, the masked full model, brute-force overlap."""
import torch
from torch import nn

from moda_core.activations import mask_points, modular_points, run_with_cache
from moda_core.compose import compose_module
from moda_core.models import build_model

NUM_CLASSES = 6


def randomised(name, channels, size, seed=0, dtype=torch.float32, transform=None):
    """A zoo model with batch-norm statistics from random data and random affine terms, in eval mode."""
    torch.manual_seed(seed)
    width = 1.0 if name in ("mlp", "lenet5") else 0.25  # keep the small ones from dying out under masks
    model = build_model(name, channels, size, NUM_CLASSES, width=width)
    if transform is not None:  # e.g. add the MwT baseline's gates
        model = transform(model)
    model = model.to(dtype)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the calibration batches
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.4)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(16, channels, size, size, dtype=dtype))
    return model.eval()


def random_masks(model, density, seed):
    """Random class×unit masks with at least one unit per class per point."""
    generator = torch.Generator().manual_seed(seed)
    _, cache = run_with_cache(model, torch.zeros(1, *model.input_shape, dtype=next(model.parameters()).dtype))
    masks = {}
    for point in modular_points(model):
        units = cache[point].shape[1]
        mask = torch.rand(NUM_CLASSES, units, generator=generator) < density
        mask[torch.arange(NUM_CLASSES), torch.randint(0, units, (NUM_CLASSES,), generator=generator)] = True
        masks[point] = mask
    return masks


def masked_logits(model, masks, classes, x):
    union = {p: m[classes].any(0) for p, m in masks.items()}
    with torch.no_grad(), mask_points(model, union):
        return model(x)[:, classes]


def brute_force_overlap(model, masks):
    """Give every weight a unique id, compose each single-class module, count shared ids."""
    model = model.double()
    with torch.no_grad():
        next_id = 1.0
        for param in model.parameters():
            param.copy_(torch.arange(next_id, next_id + param.numel(), dtype=torch.float64).view_as(param))
            next_id += param.numel()
    kept = []
    for c in range(NUM_CLASSES):
        composed = compose_module(model, masks, [c])
        ids = torch.cat([p.detach().flatten() for p in composed.parameters()])
        assert len(ids.unique()) == len(ids)
        kept.append(set(ids.long().tolist()))
    return torch.tensor([[len(a & b) for b in kept] for a in kept], dtype=torch.float64)


