"""Op rules: how units flow through each op of a network's graph (docs/design.md, The graph).

A tensor's *unit axis* holds its features: it starts at the layer that produces them (a convolution's output
channels, dim 1; a linear layer's outputs, the last dim) and moves with permutes, reshapes, slices and reductions;
norms and elementwise ops keep it. One ``OpRule`` per kind of op says, each in a short method, where its output's
units are (``classify`` → ``Op``), which can be non-zero in the masked full model (``support``, K mask rows at
once), which units of its inputs it needs (``demand``), how its composed copy reads only what its inputs hold
(``rewrite``) and, for a layer with weights, which rows and columns of each parameter a copy keeps (``uses``).
An op no rule knows is kept whole: exact, only not smaller, and reported with the reason. ``register_op`` adds a
rule for module classes, functions or method names; a module class outside torch that gets a rule is one op of the
graph (tracing does not enter it: MwT's gate, docs/extending.md's example).

The rules live by op family: ``base`` (``Op``, the ``OpRule`` interface and its default, an op kept whole; nodes
without units; ``Carry``), ``elementwise`` (ops that keep the shape: activations, points, norms, ``+ - * /``),
``layers`` (convolutions, linear layers, batch norm: the ops with weights), ``shapes`` (pooling, reductions,
permutes, reshapes, slicing, split and concatenation) and ``registry`` (which rule an op gets; the built-in ones).
"""
from moda_core.oprules.base import (
    ATTR,
    INPUT,
    META,
    OUTPUT,
    WHOLE,
    Carry,
    Op,
    OpRule,
    Untracked,
    argument,
    describe,
    first,
    full_size,
    pick,
    scatter_any,
    target_name,
)
from moda_core.oprules.elementwise import PER_UNIT, POINT, Binary, Norm, PerUnit, Point
from moda_core.oprules.layers import BatchNorm, Conv, Linear
from moda_core.oprules.registry import (
    FUNCTION_RULES,
    METHOD_RULES,
    MODULE_RULES,
    NAMED_RULES,
    acting,
    leaf_modules,
    register_op,
    rule_for,
)
from moda_core.oprules.shapes import (
    GETITEM,
    PIECE,
    SPLIT,
    Cat,
    Getitem,
    Permute,
    Piece,
    Pool,
    Reduce,
    Reshape,
    Split,
    dim_groups,
    index_entries,
    regroup,
)

# the extension API (docs/extending.md) first, then every name this module held before it became a package
__all__ = ["Op", "OpRule", "acting", "first", "leaf_modules", "register_op", "rule_for",
           "ATTR", "FUNCTION_RULES", "GETITEM", "INPUT", "META", "METHOD_RULES", "MODULE_RULES", "NAMED_RULES",
           "OUTPUT", "PER_UNIT", "PIECE", "POINT", "SPLIT", "WHOLE",
           "BatchNorm", "Binary", "Carry", "Cat", "Conv", "Getitem", "Linear", "Norm", "PerUnit", "Permute", "Piece",
           "Point", "Pool", "Reduce", "Reshape", "Split", "Untracked",
           "argument", "describe", "dim_groups", "full_size", "index_entries", "pick", "regroup", "scatter_any",
           "target_name"]
