"""One configuration: every training setting with its type, bounds, default and help, defined once.

``TrainSettings`` is the typed schema (pydantic, strict: a bool is not a number, 6.5 is not a whole number,
NaN and infinities are refused) of a training's settings: the model (``model``, ``width``, ``points``,
``threshold``), its data (``dataset``, ``classes``, ``train_fraction``, ``class_fractions``, ``augment``,
``data_root``, ``download``) and its training (``method`` and its weights, ``epochs``, ``batch_size``, ``lr``,
``momentum``, ``seed``, ``checkpoint_every``, ``device``, ``compile``, ``track_modular_terms``).
``moda_core.train.TrainConfig`` adds the method's defaults and the checks that need the registries; it checks
itself when it is built (a ``ModaError`` naming the setting, its bounds and the value). The same schema checks
the ``train`` record of every stored run (``moda_core.run_config.check_config``, with "corrupt config …"
messages), the command line's ``moda train`` arguments and defaults come from it (:func:`cli_options`), and the
dashboard's browser limits are a second, stricter check of a ``TrainConfig`` (``dashboard.training.LIMITS``).

Importing this module imports no torch (the dashboard's first page and ``moda --help`` read it).
"""
from __future__ import annotations

from typing import Annotated, Any, Callable, Iterator

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from moda_core.errors import ModaError

DEFAULT_TAU = 0.9  # the activation-rate threshold of decomposition (docs/design.md, Decomposition)

MAX_IN_CHANNELS, MAX_IMAGE_SIZE, MAX_CLASSES, MAX_WIDTH = 4096, 4096, 100_000, 8.0  # width: as build_model
MAX_SEED = 2**32 - 1  # the trainer seeds with (seed·100003 + epoch)·1009 + rank, which must stay an int64
MAX_EPOCHS, MAX_BATCH = 100_000, 1_000_000  # beyond any real training; a stored count past them is corrupt
MAX_THRESHOLD = 1e6

STRICT = ConfigDict(strict=True, allow_inf_nan=False, validate_assignment=True, extra="forbid")

ClassId = Annotated[int, Field(ge=0, lt=MAX_CLASSES)]
ClassIds = Annotated[list[ClassId], Field(max_length=MAX_CLASSES)]


def setting(default: Any, help: str = "", title: str | None = None, flag: bool = True, expected: str | None = None,
            **bounds: Any) -> Any:
    """A setting: its default, its help (the command line's), the words errors call it by (``title``), whether
    ``moda train`` takes it as a flag, and its bounds (``ge``, ``gt``, ``le``, ``lt``)."""
    return Field(default=default, description=help, title=title,
                 json_schema_extra={"flag": flag, **({"expected": expected} if expected else {})}, **bounds)


class TrainSettings(BaseModel):
    """The typed settings of one training (see the module's docstring). Field order is the order of ``--help``."""

    model_config = STRICT

    # ----- the model
    model: str = setting("lenet5", "a zoo model, or your own builder package.module:function, called as "
                                   "function(num_classes=, in_channels=, image_size=)")
    width: float = setting(1.0, "channel width multiplier (zoo models)", "width multiplier", gt=0.0, le=MAX_WIDTH)
    points: str = setting("relu", "your own model: which activation calls are points (relu; gelu, silu or e.g. "
                                  "relu,gelu opt in)")
    threshold: float = setting(0.0, "your own model: a unit fires where its activation is above this",
                               "firing threshold", ge=-MAX_THRESHOLD, le=MAX_THRESHOLD)
    # ----- the data
    dataset: str = setting("mnist5k", "the data set")
    classes: ClassIds | None = setting(None, "learn only these class ids (default: all)",
                                       expected=f"a list of class ids (whole numbers from 0 to {MAX_CLASSES - 1:,})")
    train_fraction: float = setting(1.0, "stratified share of the training data", "train fraction", gt=0.0, le=1.0)
    # original class id -> share of that class's training data, overriding train_fraction for the classes it names
    # (e.g. {3: 0.02}: the scarce-target weak runs: docs/design.md, Module replacement); checked with the data set
    class_fractions: dict[Any, Any] | None = setting(None, flag=False)
    augment: bool | None = setting(None, "crop and flip (default: the data set's own: on for RGB sets)", flag=False)
    data_root: str | None = setting(None, "local folder of torchvision data sets")
    download: bool = setting(False, "download the data set into the data root")
    # ----- the training
    method: str = setting("moda", "moda (activation terms), mwt (the mask-based MwT baseline) or standard "
                                  "(cross-entropy only)")
    # the method's loss weights, in generic slots (each method names its own: moda_core.methods.base.Weights, e.g.
    # MODA's affinity, dispersion and compactness weights); None: the method's default (MODA 1, 1, 0.3)
    alpha: float | None = setting(None, ge=0.0)
    beta: float | None = setting(None, ge=0.0)
    gamma: float | None = setting(None, ge=0.0)
    epochs: int = setting(10, "epochs to train", ge=1, le=MAX_EPOCHS)
    batch_size: int = setting(128, "batch size (at least 2: the modular terms compare pairs)", "batch size",
                              ge=2, le=MAX_BATCH)
    lr: float = setting(0.05, "peak learning rate of the cosine schedule", "learning rate", gt=0.0)
    momentum: float = setting(0.9, "Nesterov momentum", ge=0.0, flag=False)
    seed: int = setting(0, "seed of the initial weights, the data's order and its subsets", ge=0, le=MAX_SEED)
    checkpoint_every: int = setting(0, "also keep weights every N epochs (RUN@EPOCH); 0: only the last",
                                    "checkpoint interval", ge=0, le=MAX_EPOCHS)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    compile: bool = setting(False, "torch.compile the model (worth it on a GPU)")
    track_modular_terms: bool = setting(True, "log the modular terms of standard runs too (detached)", flag=False)

    @field_validator("model", mode="before")
    @classmethod
    def _builder_path(cls, value: Any) -> Any:
        """A builder function stands for its import path."""
        if callable(value):
            from moda_core.models.user import import_path_of
            return import_path_of(value)
        return value

    @field_validator("data_root", mode="before")
    @classmethod
    def _folder(cls, value: Any) -> Any:
        return str(value) if hasattr(value, "__fspath__") else value

    def __init__(self, **settings: Any) -> None:
        try:
            super().__init__(**settings)
        except ValidationError as error:
            raise ModaError(describe(error, type(self), settings)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as error:
            raise ModaError(describe(error, type(self), {name: value})) from None

    @classmethod
    def check_record(cls, record: dict[str, Any], where: str) -> None:
        """Check a stored ``train`` record (config.json): each setting it holds has this schema's type and bounds;
        settings it lacks (older runs) and keys it has beyond them are left alone. A ``ModaError`` "corrupt config
        WHERE: train.KEY must be …" names the first wrong one."""
        known = {key: value for key, value in record.items() if key in TrainSettings.model_fields}
        check_fields(TrainSettings, known, where, "train")


_RECORDS: dict[type[BaseModel], type[BaseModel]] = {}


def check_fields(schema: type[BaseModel], record: dict[str, Any], where: str, section: str) -> None:
    """Validate ``record`` (fields left out: their defaults, not checked) against ``schema``'s fields alone (the
    types and bounds, none of the schema's own code); a ``ModaError`` "corrupt config WHERE: SECTION.KEY must be …"."""
    if schema not in _RECORDS:
        fields: dict[str, Any] = {name: (f.annotation, f) for name, f in schema.model_fields.items()}
        _RECORDS[schema] = create_model(f"{schema.__name__}Record", __config__=STRICT, **fields)
    try:
        _RECORDS[schema].model_validate(record)
    except ValidationError as error:
        raise ModaError(f"corrupt config {where}: {describe(error, schema, record, section + '.', titles=False)}") \
            from None


def shown(value: Any) -> str:
    """A value as an error message shows it: numbers and null as they are, a string quoted (cut at 40
    characters), anything else by its kind ("a list")."""
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "…")
    if isinstance(value, (int, float, bool)) or value is None:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
            return f"a {len(str(abs(value)))}-digit number"
        return repr(value)
    return f"a {kind_of(value)}"


def kind_of(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def expected(field: Any) -> str:
    """What a field's values must be, in words, from its type and bounds: "a whole number from 1 to 100,000",
    "a finite number in (0, 1]", "a string", "true or false"."""
    extra = field.json_schema_extra or {}
    if "expected" in extra:
        return extra["expected"]
    kinds = {a for a in _types(field.annotation)} - {type(None)}
    low: Any = None  # the bounds' numbers
    high: Any = None
    low_open = high_open = False
    for bound in field.metadata:
        if isinstance(bound, Ge):
            low = bound.ge
        elif isinstance(bound, Gt):
            low, low_open = bound.gt, True
        elif isinstance(bound, Le):
            high = bound.le
        elif isinstance(bound, Lt):
            high, high_open = bound.lt, True
    if kinds == {int}:
        return f"a whole number from {low}" + (f" to {high:,}" if high is not None else "")
    if kinds == {float}:
        if low is None and high is None:
            return "a finite number"
        return (f"a finite number in {'(' if low_open else '['}{low:g}, "
                + ("∞)" if high is None else f"{high:g}{')' if high_open else ']'}"))
    if kinds == {bool}:
        return "true or false"
    if kinds == {str}:
        return "a string"
    if kinds == {dict}:
        return "an object"
    return "a list"


def _types(annotation: Any) -> Iterator[type]:
    from typing import get_args, get_origin
    origin = get_origin(annotation)
    if origin is Annotated:
        yield from _types(get_args(annotation)[0])
    elif origin is not None and origin not in (list, dict):
        for arg in get_args(annotation):
            yield from _types(arg)
    else:
        yield origin or annotation


def describe(error: ValidationError, schema: type[BaseModel], given: dict[str, Any], prefix: str = "",
             titles: bool = True) -> str:
    """The first problem of a ``ValidationError`` in our words: "SETTING must be EXPECTED, got VALUE"."""
    first = error.errors()[0]
    key = str(first["loc"][0]) if first["loc"] else ""
    field = schema.model_fields.get(key)
    if field is None:  # a setting the schema does not have
        return f"unknown setting {prefix}{key!r}: expected one of {', '.join(schema.model_fields)}"
    name = (field.title if titles and field.title else f"{prefix}{key}")
    return f"{name} must be {expected(field)}, got {shown(given.get(key, first.get('input')))}"


def cli_options(schema: type[BaseModel] = TrainSettings) -> list[tuple[str, dict[str, Any]]]:
    """``moda train``'s options from the schema: (flag, ``add_argument`` keywords) for every setting that is one,
    its default and help from the field (a bool setting off by default is a switch that turns it on)."""
    options = []
    for name, field in schema.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if not extra.get("flag", True):
            continue
        flag, kinds = f"--{name.replace('_', '-')}", set(_types(field.annotation)) - {type(None)}
        help_text = field.description or ""
        if kinds == {bool}:
            options.append((flag, dict(action="store_true", help=help_text)))
            continue
        kind: Callable[[str], Any] = int if kinds == {int} else float if kinds == {float} else str
        keywords: dict[str, Any] = dict(type=kind, default=field.default, help=help_text)
        if kinds == {list}:
            keywords.update(type=int, nargs="+")
        if field.default is not None and help_text:
            keywords["help"] = f"{help_text} (default {field.default})"
        options.append((flag, keywords))
    return options
