"""Command line: ``moda SUBCOMMAND …``, the same as ``python -m moda_core SUBCOMMAND …`` (``--help`` on each).

User errors (``ModaError``) end with one ``error: …`` line on stderr and exit code 2, no traceback.
Ctrl-C during ``train`` ends it after the current step: one ``interrupted: …`` line naming the run to
resume, exit code 130 (a second Ctrl-C stops at once).
With ``--json`` the last stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import TYPE_CHECKING, Any, Sequence

from moda_core.commands import COMMANDS, check_output_file, emit  # noqa: F401  (emit: the commands' output)
from moda_core.config import DEFAULT_TAU, TrainSettings, cli_options
from moda_core.data import DATASETS
from moda_core.errors import ModaError, TrainingStopped
from moda_core.import_policy import granted
from moda_core.methods import METHODS
from moda_core.methods.base import WEIGHT_SLOTS
from moda_core.models import MODELS

if TYPE_CHECKING:  # imported lazily at run time: `moda --help` needs no torch import
    pass

def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="moda", description="MODA Studio: modular training, "
                                   "decomposition, composition and repair of DNNs.")
    sub = main.add_subparsers(dest="command", required=True)
    allow = argparse.ArgumentParser(add_help=False)
    allow.add_argument("--models", action="append", default=[], metavar="PKG",
                       help="allow runs of models of your own built by package PKG's code to be opened (repeat for "
                            "several; also $MODA_MODELS); nothing is imported from a runs folder otherwise")

    def add(name: str, **kwargs: Any) -> argparse.ArgumentParser:  # every command takes --models
        return sub.add_parser(name, parents=[allow], **kwargs)

    train = add("train", help="train a standard or MODA model into the run store")
    own: dict[str, dict[str, Any]] = {  # what the schema's help cannot know: the registries, and --epochs with --resume
        "--model": dict(help=f"one of {', '.join(MODELS)}, or your own builder package.module:function, called as "
                             "function(num_classes=, in_channels=, image_size=) (default lenet5)"),
        "--dataset": dict(help=f"one of {', '.join(DATASETS)} (default mnist5k)"),
        "--method": dict(choices=list(METHODS)),
        "--epochs": dict(default=None, help="epochs to train (default 10); with --resume: the run's own count, or "
                                            "more to extend it"),
        **{f"--{slot}": dict(help=_weight_help(slot)) for slot in WEIGHT_SLOTS},
    }
    for flag, keywords in cli_options(TrainSettings):  # every setting's flag, default and help: moda_core.config
        train.add_argument(flag, **{**keywords, **own.get(flag, {})})
    train.add_argument("--standard", action="store_true", help="the old spelling of --method standard")
    train.add_argument("--no-augment", action="store_true", help="no crop/flip even for RGB data sets")
    train.add_argument("--runs-dir", default="runs")
    train.add_argument("--name", help="run folder name: letters, digits, '.', '_', '-' "
                                      "(default: model-dataset-method-timestamp)")
    train.add_argument("--resume", action="store_true", help="continue the run named --name from its last epoch")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the run named --name (refused while it is training)")
    train.add_argument("--json", action="store_true")

    decompose = add("decompose", help="activation rates → per-class module masks of a run")
    decompose.add_argument("run", help="run folder, or RUN@EPOCH for a periodic checkpoint")
    decompose.add_argument("--tau", type=float, default=DEFAULT_TAU, help="activation-rate threshold")
    decompose.add_argument("--recompute", action="store_true", help="ignore a stored decomposition")
    decompose.add_argument("--json", action="store_true")

    compose = add("compose", help="compose a smaller sub-task model from class modules")
    compose.add_argument("run")
    compose.add_argument("--classes", type=int, nargs="+", required=True)
    compose.add_argument("--tau", type=float, default=DEFAULT_TAU)
    compose.add_argument("--out", help="also export the composed module to this .pt2 file")
    compose.add_argument("--json", action="store_true")

    subtasks = add("subtasks", help="compose and measure many class subsets")
    subtasks.add_argument("run")
    subtasks.add_argument("--sizes", type=int, nargs="+", default=[2])
    subtasks.add_argument("--samples", type=int, default=50,
                          help="subsets per size when there are more than this many (seeded sample)")
    subtasks.add_argument("--seed", type=int, default=0)
    subtasks.add_argument("--tau", type=float, default=DEFAULT_TAU)
    subtasks.add_argument("--reference", help="a standard run of the same model to compare on the same classes")
    subtasks.add_argument("--csv", help="also write the table to this CSV file")
    subtasks.add_argument("--json", action="store_true")

    replace = add("replace", help="repair a weak model's class with a strong model's module")
    replace.add_argument("--weak", required=True, help="the weak run, RUN or RUN@EPOCH")
    replace.add_argument("--strong", required=True, help="the strong (MODA-trained) run, RUN or RUN@EPOCH")
    replace.add_argument("--weak-class", type=int,
                         help="the class to repair, as an index into the weak model's logits")
    replace.add_argument("--strong-class", type=int,
                         help="the module to use, as an index into the strong model's logits")
    replace.add_argument("--class-id", type=int,
                         help="original class id learnt by both runs (instead of the two indices)")
    replace.add_argument("--strategy", default="calibrate", metavar="calibrate|normalize|affine",
                         help="calibrate: train a Linear(K,K) calibration layer (MODA); normalize: min-max "
                              "normalised module output, no training (CNNSplitter-style baseline); affine: only "
                              "the target's logit changes, to a fitted a·s + c·w + b (ours)")
    replace.add_argument("--epochs", type=int, default=5, help="calibration epochs")
    replace.add_argument("--lr", type=float, default=0.01, help="calibration learning rate (Adam)")
    replace.add_argument("--seed", type=int, default=0)
    replace.add_argument("--tau", type=float, default=DEFAULT_TAU, help="decomposition threshold of the strong run")
    replace.add_argument("--out", help="also export the repaired model to this .pt2 file")
    replace.add_argument("--json", action="store_true")

    listing = add("runs", help="list the runs in a runs folder")
    listing.add_argument("--runs-dir", default="runs")
    listing.add_argument("--json", action="store_true")
    return main



def _weight_help(slot: str) -> str:
    """What a weight slot means for each method that uses it, from the methods' own ``Weights``."""
    meanings = []
    for method in METHODS.values():
        for field in method.Weights.__dataclass_fields__.values():
            if field.metadata.get("slot") == slot:
                meanings.append(f"{method.label}: {field.metadata['label']} (default {field.default:g})")
    unused = [m.label for m in METHODS.values() if slot not in m.Weights.slots()]
    return "; ".join(meanings) + (f"; {', '.join(unused)}: none" if unused else "")


def os_error_line(error: OSError, what: str) -> str:
    """An OSError as one line: ``<file>: <reason>``, or ``<reason> (while <what>)`` when it names no file."""
    reason = error.strerror or str(error) or type(error).__name__
    if error.filename is not None:
        return f"{error.filename}: {reason}"
    return f"{reason} (while {what})"


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        check_output_file(getattr(args, "out", None), "--out")
        check_output_file(getattr(args, "csv", None), "--csv")
        with granted(args.models):  # what this command may import: --models, $MODA_MODELS, train's own --model
            COMMANDS[args.command](args)
    except TrainingStopped as error:  # Ctrl-C during a training: the run keeps its last committed epoch
        name, folder = error.path.name, error.path.parent
        print(f"interrupted: run {name} keeps epoch {error.epoch} of {error.epochs} (continue with "
              f"moda train --resume --name {shlex.quote(name)} --runs-dir {shlex.quote(str(folder))})", file=sys.stderr)
        return 130
    except ModaError as error:
        print(f"error: {error.with_hint()}", file=sys.stderr)
        return 2
    except OSError as error:  # the file system refused (permissions, a folder where a file goes, a full disk)
        print(f"error: {os_error_line(error, f'running moda {args.command}')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the run store keeps the last finished epoch (continue with --resume)", file=sys.stderr)
        return 130
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0
