"""Which op rule a node gets (``moda_core.oprules``): the rules by module class (along its MRO), function, method
name and, for functions of optional packages, "module.function"; ``register_op`` adds to them, ``rule_for`` reads
them, and the built-in rules are registered here, once, when the package is imported."""
from __future__ import annotations

import builtins
import operator
from typing import Callable, cast

import torch
import torch.nn.functional as F
from torch import fx, nn

from moda_core.oprules.base import ATTR, INPUT, META, OUTPUT, WHOLE, Op, OpRule, Untracked, describe, target_name
from moda_core.oprules.elementwise import PER_UNIT, Binary, Norm
from moda_core.oprules.layers import BatchNorm, Conv, Linear
from moda_core.oprules.shapes import GETITEM, SPLIT, Cat, Permute, Pool, Reduce, Reshape

MODULE_RULES: dict[type, OpRule] = {}
FUNCTION_RULES: dict[Callable, OpRule] = {}
METHOD_RULES: dict[str, OpRule] = {}
NAMED_RULES: dict[str, OpRule] = {}  # functions of optional packages, as "module.function" (nothing imported)


def register_op(rule: OpRule, *targets: type | Callable | str) -> OpRule:
    """Use ``rule`` for these module classes (and subclasses), functions, method names and functions named
    ``"package.module.function"``. A module class outside torch becomes one op of the graph."""
    for target in targets:
        if isinstance(target, str):
            (NAMED_RULES if "." in target else METHOD_RULES)[target] = rule
        elif isinstance(target, type) and issubclass(target, nn.Module):
            MODULE_RULES[target] = rule
        else:
            FUNCTION_RULES[target] = rule
    return rule


def rule_for(node: fx.Node, module: nn.Module | None = None) -> OpRule:
    """The rule of one node (``module``: what a ``call_module`` node calls)."""
    if node.op in ("placeholder", "get_attr", "output"):
        return {"placeholder": INPUT, "get_attr": ATTR, "output": OUTPUT}[node.op]
    if node.op == "call_module":
        return next((MODULE_RULES[cls] for cls in type(module).__mro__ if cls in MODULE_RULES), WHOLE)
    if node.op == "call_method":
        return METHOD_RULES.get(target_name(node), WHOLE)
    try:
        found = FUNCTION_RULES.get(cast(Callable, node.target))  # call_function: a callable
    except TypeError:  # an unhashable target
        return WHOLE
    return found or NAMED_RULES.get(f"{getattr(node.target, '__module__', '')}.{describe(node)}", WHOLE)


def acting(op: Op) -> OpRule:
    """The rule that walks and rewrites a node: its own, or, for an op kept whole or a tensor without known units,
    the whole-op rule (it reads its inputs whole and is copied as it is)."""
    return op.rule if op.axis is not None and not op.whole or isinstance(op.rule, Untracked) else WHOLE


def leaf_modules() -> list[type]:
    """Module classes outside torch with a rule of their own: tracing keeps each of them one op."""
    return [cls for cls in MODULE_RULES if not cls.__module__.startswith("torch.")]


# the built-in rules
register_op(PER_UNIT, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
            nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Softplus, nn.Softsign, nn.Tanhshrink,
            nn.Hardshrink, nn.Softshrink, nn.Threshold, nn.LogSigmoid, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
            nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.Identity,
            F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardswish,
            F.hardsigmoid, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.hardtanh, F.softplus, F.softsign,
            F.tanhshrink, F.hardshrink, F.softshrink, F.threshold, F.logsigmoid, F.dropout, F.dropout1d, F.dropout2d,
            F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout, torch.clamp, torch.clip, torch.clamp_min,
            torch.clamp_max, torch.abs, torch.neg, operator.neg, torch.exp, torch.square, torch.sqrt,
            "relu", "sigmoid", "tanh", "clamp", "clip", "clamp_min", "clamp_max", "abs", "neg", "exp", "square",
            "sqrt", "contiguous", "clone", "detach", "float", "double", "half", "bfloat16", "to", "type",
            "torchvision.ops.stochastic_depth.stochastic_depth")
register_op(Binary("add"), operator.add, operator.sub, torch.add, torch.sub, "add", "sub")
register_op(Binary("mul"), operator.mul, torch.mul, "mul")
register_op(Binary("div"), operator.truediv, torch.div, torch.true_divide, "div", "true_divide")
register_op(Conv(), nn.Conv1d, nn.Conv2d, nn.Conv3d)
register_op(Linear(), nn.Linear)
register_op(BatchNorm(), nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_RMS_NORM: list[type | Callable] = [nn.RMSNorm, F.rms_norm] if hasattr(nn, "RMSNorm") else []  # torch 2.4 on
register_op(Norm("layer norm normalises over the units"), nn.LayerNorm, F.layer_norm, *_RMS_NORM)
register_op(Norm("group norm normalises over groups of units"), nn.GroupNorm, F.group_norm)
register_op(Norm("instance norm"), nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LocalResponseNorm)
register_op(Norm("softmax over the units"), nn.Softmax, nn.LogSoftmax, F.softmax, F.log_softmax, torch.softmax,
            "softmax", "log_softmax")
register_op(Norm("normalisation over the units"), F.normalize)
register_op(Pool(), nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
            nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
            nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d,
            F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
            F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d)
register_op(Reduce(), torch.mean, torch.sum, torch.amax, torch.amin, "mean", "sum", "amax", "amin")
register_op(Permute(), torch.transpose, torch.permute, torch.movedim, torch.swapaxes, "transpose", "permute",
            "movedim", "swapaxes", "swapdims")
register_op(Reshape(), nn.Flatten, nn.Unflatten, torch.reshape, torch.flatten, torch.squeeze, torch.unsqueeze,
            torch.unflatten, "view", "reshape", "flatten", "squeeze", "unsqueeze", "unflatten")
register_op(GETITEM, operator.getitem, torch.narrow, "narrow")
register_op(SPLIT, torch.chunk, torch.split, "chunk", "split")
register_op(Cat(), torch.cat, torch.concat, torch.concatenate)
register_op(META, builtins.getattr, "size", "dim", "numel")
