"""A small vision transformer (Dosovitskiy et al. 2021) whose MLP hidden layers are MODA points.

Layout (a ``ZooNet``, so ``arch``/``input_shape`` work as for the CNNs)::

    embed   PatchEmbed      image → B×T×D tokens (non-overlapping patches + learnt positions)
    blocks  Sequential      ViTBlock × DEPTH, pre-norm: x + attn(norm1(x)), then x + mlp(norm2(x))
    norm    LayerNorm       final norm of the residual stream
    pool    TokenMean       mean over the tokens → B×D
    head    Linear          the logits

The only ``nn.ReLU`` modules are the MLP hidden activations ``blocks.<i>.mlp.relu`` (one per block,
each its own instance); attention, norms and embeddings have no ReLU and no GELU. ``TokenMLP`` lays its
hidden activation out channels-first (B×H×T) around the ReLU, so every engine path that treats dim 1
as the unit axis and reduces the rest (modular losses, firing rates, masks) sees H units whose
per-sample value is mean |a| over the tokens — exactly as a conv channel over H,W (docs/design.md, Transformers).

Sizes are fixed functions of the zoo arguments, so a run's config rebuilds the model exactly:
patches of 7 pixels for 28×28 inputs (16 tokens) and of 4 for 32×32 (64 tokens), embedding width
``64 × width`` (4 heads), MLP hidden width ``MLP_RATIO ×`` embedding width, ``DEPTH`` blocks.

Composition reads the model's graph like any other: each block's MLP is sliced to the kept hidden units
(``fc1`` rows and bias, ``fc2`` columns); attention, norms and embeddings act on the residual stream and are kept
whole. With the defaults at width 1, the parts every module keeps are 52% of the parameters: the floor on a ViT
module's size.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from moda_core.models.base import ZooNet, scaled

DEPTH = 4
HEADS = 4
HEAD_DIM = 16  # at width 1: embedding width HEADS × HEAD_DIM = 64
MLP_RATIO = 2
TARGET_GRID = 8  # patches per side for sizes other than multiples of 7 (≤ 28) or 4 (≤ 32)


def patch_size(image_size: int) -> int:
    """Patch side: 7 for 28×28 (4×4 grid), 4 for 32×32 (8×8 grid); about 8 patches per side otherwise."""
    for patch in (7, 4):
        if image_size % patch == 0 and image_size // patch <= TARGET_GRID:
            return patch
    return max(2, math.ceil(image_size / TARGET_GRID))


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch``×``patch`` patches → linear embedding + learnt position embedding.

    An image side that is not a multiple of the patch is zero-padded at the bottom/right.
    """

    def __init__(self, in_channels: int, image_size: int, patch: int, dim: int) -> None:
        super().__init__()
        self.patch = patch
        self.grid = math.ceil(image_size / patch)
        self.pad = self.grid * patch - image_size
        self.proj = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.position = nn.Parameter(torch.zeros(1, self.grid * self.grid, dim))
        nn.init.trunc_normal_(self.position, std=0.02)

    @property
    def tokens(self) -> int:
        return self.grid * self.grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = F.pad(x, (0, self.pad, 0, self.pad))
        return self.proj(x).flatten(2).transpose(1, 2) + self.position

    def extra_repr(self) -> str:
        return f"patch={self.patch}, grid={self.grid}x{self.grid}, pad={self.pad}"


class SelfAttention(nn.Module):
    """Multi-head self-attention: ``qkv`` (D → 3D, laid out [q | k | v], each head-major) and ``proj``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding width {dim} is not a multiple of {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # B×heads×T×head_dim
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class TokenMLP(nn.Module):
    """``fc1`` → ReLU (the activation point, on B×H×T: units on dim 1) → ``fc2``, token-wise."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.relu(self.fc1(x).transpose(1, 2))  # B×H×T
        return self.fc2(hidden.transpose(1, 2))


class ViTBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``+ mlp(norm2(x))``.

    Composition keeps ``norm1``, ``attn``, ``norm2`` and the residual stream whole and slices only
    ``mlp.fc1`` rows (and bias) / ``mlp.fc2`` columns to the kept units of point ``<name>.mlp.relu``.
    """

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = TokenMLP(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TokenMean(nn.Module):
    """B×T×D tokens → B×D, the mean over the tokens."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1)


def vit(in_channels: int, image_size: int, num_classes: int, width: float = 1.0) -> ZooNet:
    dim = HEADS * scaled(HEAD_DIM, width)
    hidden = MLP_RATIO * dim
    # PyTorch's default initialisation, not the usual ViT truncated normal (std 0.02): with the trainer's
    # plain SGD the small weights learn far slower (mnist5k, 5 epochs: 78% vs 58% test accuracy)
    return ZooNet(OrderedDict(
        embed=PatchEmbed(in_channels, image_size, patch_size(image_size), dim),
        blocks=nn.Sequential(*[ViTBlock(dim, HEADS, hidden) for _ in range(DEPTH)]),
        norm=nn.LayerNorm(dim),
        pool=TokenMean(),
        head=nn.Linear(dim, num_classes),
    ))
