"""The ``moda`` commands (``moda_core.cli`` parses the command line and calls them; each registers itself with
``@command``): train, decompose, compose, subtasks, replace, runs. Each returns its result as a dict and prints
it through ``emit`` (text, or one JSON line with ``--json``)."""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from moda_core.config import TrainSettings
from moda_core.errors import ModaError
from moda_core.io import check_replaceable
from moda_core.methods.base import WEIGHT_SLOTS

if TYPE_CHECKING:  # imported when a command runs: `moda --help` needs no torch import
    from moda_core.decompose import Decomposition
    from moda_core.runs import Run
    from moda_core.train import Progress


Command = Callable[[argparse.Namespace], Any]
COMMANDS: dict[str, Command] = {}  # name → the function that runs it (moda_core.cli.main dispatches here)


def command(name: str) -> Callable[[Command], Command]:
    def register(function: Command) -> Command:
        COMMANDS[name] = function
        return function
    return register


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) turned into None, so it is valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def emit(args: argparse.Namespace, result: dict[str, Any], text: str) -> None:
    """Print the result (under torchrun: on rank 0 only); ``--json`` never prints NaN (null instead)."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(json_safe(result), allow_nan=False) if args.json else text)


def check_output_file(path: str | None, flag: str) -> None:
    """Refuse an output path that cannot be a file (empty, a folder, or under a file) before any work is done."""
    if path is None:
        return
    if not path.strip():
        raise ModaError(f"{flag} is empty: give a file name")
    target = Path(path)
    if target.is_dir():
        raise ModaError(f"{flag} {path} is a folder: give a file name")
    check_replaceable(target, f"{flag} ")
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ModaError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ModaError(f"{flag} {path}: folder {parent} is not writable")


def one_spelling(args: argparse.Namespace) -> str | None:
    """Standard training has one spelling, ``--method standard``: the others set it and say so (the note)."""
    if args.standard and args.method not in ("moda", "standard"):
        raise ModaError("--standard trains without modular terms: it cannot be combined with --method mwt")
    if args.standard:
        args.method = "standard"
        return "--standard is the old spelling of --method standard"
    if args.method == "moda" and all(getattr(args, slot) == 0 for slot in WEIGHT_SLOTS):
        args.method = "standard"
        return "MODA with --alpha 0 --beta 0 --gamma 0 is standard training: training with --method standard"
    return None

@command("train")
def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    from moda_core.runs import check_run_name
    from moda_core.train import TrainConfig, train

    if args.name is not None:
        check_run_name(args.name)  # before any work: the one rule for run names
    note = one_spelling(args)
    if note:
        print(f"note: {note}", file=sys.stderr)
    if args.resume and args.name:
        stored = _stored_epochs(Path(args.runs_dir) / args.name)
        if args.epochs is not None and stored is not None and args.epochs > stored:
            print(f"extending {args.name} from {stored} to {args.epochs} epochs", file=sys.stderr)
    given = {key: getattr(args, key) for key in TrainSettings.model_fields if hasattr(args, key)}
    config = TrainConfig(**{**given, "epochs": args.epochs or TrainSettings.model_fields["epochs"].default,
                            "augment": False if args.no_augment else None})
    if args.resume and not args.name:
        raise ModaError("--resume needs --name: the run to continue")
    if args.overwrite and not args.name:
        raise ModaError("--overwrite needs --name: the run to replace")
    if args.overwrite and args.resume:
        raise ModaError("--resume continues a run and --overwrite replaces it: give one of them")
    bar = tqdm(total=None, unit="batch", file=sys.stderr, dynamic_ncols=True,
               disable=None if int(os.environ.get("RANK", "0")) == 0 else True)

    def progress(event: Progress) -> None:
        if bar.total is None:
            bar.reset(total=event.epochs * event.steps)
        if event.stage == "batch":
            bar.n = (event.epoch - 1) * event.steps + event.step
            bar.set_description(f"epoch {event.epoch}/{event.epochs}")
            bar.refresh()
        else:
            bar.set_postfix(ce=f"{event.record['ce']:.3f}", test_acc=f"{event.record['test_accuracy']:.3f}")

    stop, handled = threading.Event(), _graceful_interrupt()
    if handled:  # the first Ctrl-C ends the training after its current step; a second one at once
        def first_interrupt(signum: int, frame: Any) -> None:
            stop.set()
            signal.signal(signal.SIGINT, signal.default_int_handler)

        signal.signal(signal.SIGINT, first_interrupt)
    try:
        run = train(config, args.runs_dir, args.name, progress=progress, resume=args.resume,
                    overwrite=args.overwrite, stop=stop if handled else None,
                    epochs=args.epochs if args.resume else None)
    finally:
        if handled:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        bar.close()
    result = {"run": str(run.path), "test_accuracy": run.metrics["test_accuracy"],
              "train_accuracy": run.metrics["train_accuracy"], "epochs": run.epoch,
              "seconds": run.metrics["seconds"], "seconds_per_epoch": run.metrics["seconds_per_epoch"],
              "device": run.metrics["device"], "notes": graph_notes(run.model)}
    epochs = f"{run.epoch} epoch{'s' if run.epoch != 1 else ''}"
    emit(args, result, f"run {run.path}: test accuracy {result['test_accuracy']:.4f} after {epochs} "
                       f"({result['seconds']:.1f} s on {result['device']})"
                       + "".join(f"\nnote: {note}" for note in result["notes"]))
    return result


def _graceful_interrupt() -> bool:
    """Whether Ctrl-C may stop a training after its current step: one process (under torchrun the ranks would
    stop at different steps), the main thread, and Ctrl-C not ignored (a background job)."""
    return (int(os.environ.get("WORLD_SIZE", "1")) <= 1 and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)


def _stored_epochs(path: Path) -> int | None:
    """The epoch count a run was created with (its config.json, read as data), None when it does not say."""
    from moda_core.runs import read_config

    try:
        epochs = read_config(path).get("train", {}).get("epochs")
    except ModaError:
        return None
    return epochs if isinstance(epochs, int) else None


def tqdm_progress(description: str) -> Callable[[int, int], None]:
    """A (done, total) callback that drives a tqdm bar on stderr."""
    from tqdm import tqdm

    bar = tqdm(total=None, desc=description, file=sys.stderr, dynamic_ncols=True, leave=False,
               disable=None if int(os.environ.get("RANK", "0")) == 0 else True)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.reset(total=total)
        bar.n = done
        bar.refresh()
        if done == total:
            bar.close()

    return update


def load_decomposed(spec: str, tau: float, recompute: bool = False) -> tuple[Run, Decomposition]:
    from moda_core.decompose import decompose
    from moda_core.runs import load_run

    run = load_run(spec)
    decomposition = decompose(run, tau, progress=tqdm_progress("decomposing"), recompute=recompute)
    if decomposition.note and int(os.environ.get("RANK", "0")) == 0:
        print(f"info: {decomposition.note}", file=sys.stderr)
    return run, decomposition


def graph_notes(model: Any) -> list[str]:
    """What composition cannot do for the model, one line each (``moda_core.compose.limits``)."""
    from moda_core.compose import limits

    return limits(model)


@command("decompose")
def cmd_decompose(args: argparse.Namespace) -> dict[str, Any]:
    from moda_core.compose import composition_blocker
    from moda_core.summary import module_summary

    run, decomposition = load_decomposed(args.run, args.tau, args.recompute)
    notes = graph_notes(run.model)
    result = {"run": run.spec, "tau": decomposition.tau, "points": decomposition.points,
              "kept_units": decomposition.kept_units(), "notes": notes}
    lines = [f"run {run.spec}, tau {decomposition.tau:g}: {len(decomposition.points)} points"]
    if composition_blocker(run.model) is None:
        summary = module_summary(run.model, decomposition.masks)
        sizes = summary.sizes
        names = run.config.get("data", {}).get("class_names") or [str(c) for c in range(len(sizes))]
        result.update({"module_size": {str(c): s for c, s in enumerate(sizes)}, "mean_module_size": summary.mean_size,
                       "overlap": summary.overlap.tolist(), "mean_overlap": summary.mean_overlap,
                       "mean_overlap_by_layer": summary.mean_overlap_by_layer})
        lines += [*(f"  class {c} ({names[c]}): module size {s:.1%}" for c, s in enumerate(sizes)),
                  f"mean module size {summary.mean_size:.1%}, mean pairwise overlap {summary.mean_overlap:.1%}"]
    else:
        kept = decomposition.kept_units()
        lines += [f"  {point}: units kept per class {units}" for point, units in kept.items()]
    emit(args, result, "\n".join(lines + [f"note: {note}" for note in notes]))
    return result


@command("compose")
def cmd_compose(args: argparse.Namespace) -> dict[str, Any]:
    from moda_core.compose import compose_module
    from moda_core.export import export_module
    from moda_core.metrics import compose_report
    from moda_core.runs import run_dataset

    run, decomposition = load_decomposed(args.run, args.tau)
    report = compose_report(run.model, decomposition.masks, args.classes, run_dataset(run).test)
    result = {"run": run.spec, "tau": decomposition.tau, **report, "notes": graph_notes(run.model)}
    if args.out:
        result["out"] = str(export_module(compose_module(run.model, decomposition.masks, args.classes), args.out))
    emit(args, result, f"classes {report['classes']}: {report['params']:,} of {report['full_params']:,} parameters "
                       f"({report['params_fraction']:.1%}), {report['flops']:,} of {report['full_flops']:,} FLOPs, "
                       f"accuracy {report['accuracy']:.4f} "
                       f"(full model on the same classes {report['full_accuracy']:.4f})"
                       + (f"; exported to {result['out']}" if args.out else "")
                       + "".join(f"\nnote: {note}" for note in result["notes"]))
    return result


def check_reference(reference: Run, run: Run, spec: str) -> Run:
    """``reference`` when it can be compared with ``run`` on the same sub-tasks: the same input shape and the
    same classes in the same logit order; else a ``ModaError`` saying how they differ."""
    from moda_core.model_attrs import arch_of, input_shape_of
    from moda_core.replace import run_classes

    shape, wanted = input_shape_of(reference.model), input_shape_of(run.model)
    if shape != wanted:
        raise ModaError(f"reference run {spec} takes inputs of shape {shape} but this run takes {wanted}: "
                        "give a run trained on the same data")
    classes, wanted_classes = arch_of(reference.model)["num_classes"], arch_of(run.model)["num_classes"]
    if classes != wanted_classes:
        raise ModaError(f"reference run {spec} has {classes} classes, this run has {wanted_classes}")
    if run_classes(reference) != run_classes(run):
        raise ModaError(f"reference run {spec} learnt classes {run_classes(reference)} but this run learnt "
                        f"{run_classes(run)}: give a run trained on the same classes")
    return reference


@command("subtasks")
def cmd_subtasks(args: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd

    from moda_core.io import atomic_write_bytes
    from moda_core.metrics import subtask_sets, subtask_sweep
    from moda_core.runs import load_run, run_dataset

    run, decomposition = load_decomposed(args.run, args.tau)
    num_classes = decomposition.num_classes
    bad = [s for s in args.sizes if not 1 <= s <= num_classes]
    if bad:
        raise ModaError(f"sub-task size(s) {bad} out of range: this run has {num_classes} classes")
    if args.samples < 1:
        raise ModaError(f"--samples must be at least 1, got {args.samples}")
    reference = check_reference(load_run(args.reference), run, args.reference).model if args.reference else None
    subsets = subtask_sets(num_classes, args.sizes, args.samples, args.seed)
    rows = subtask_sweep(run.model, decomposition.masks, run_dataset(run).test, subsets, reference,
                         progress=tqdm_progress("composing"))
    table = pd.DataFrame(rows)
    table["classes"] = table["classes"].map(lambda c: " ".join(map(str, c)))
    if args.csv:
        atomic_write_bytes(args.csv, table.to_csv(index=False).encode())
    summary = table.groupby("size")[[c for c in ("params_fraction", "flops_fraction", "accuracy", "full_accuracy",
                                                  "reference_accuracy") if c in table]].mean()
    result = {"run": run.spec, "tau": decomposition.tau, "rows": rows,
              "summary": {int(k): v for k, v in summary.to_dict(orient="index").items()}}
    emit(args, result, table.to_string(index=False) + "\n\nmeans by size:\n" + summary.to_string())
    return result


@command("replace")
def cmd_replace(args: argparse.Namespace) -> dict[str, Any]:
    from moda_core.export import export_module
    from moda_core.replace import class_index, repair
    from moda_core.runs import load_run

    weak, strong = load_run(args.weak), load_run(args.strong)
    if args.class_id is not None:
        if args.weak_class is not None or args.strong_class is not None:
            raise ModaError("give either --class-id or --weak-class with --strong-class, not both")
        args.weak_class, args.strong_class = class_index(weak, args.class_id), class_index(strong, args.class_id)
    elif args.weak_class is None or args.strong_class is None:
        raise ModaError("say which class to repair: --weak-class K --strong-class C (logit indices), or --class-id ID")
    result = repair(weak, strong, args.weak_class, args.strong_class, args.strategy, epochs=args.epochs,
                    tau=args.tau, lr=args.lr, seed=args.seed, progress=tqdm_progress("decomposing the strong run"))
    report = result.report
    if args.out:
        report["out"] = str(export_module(result.model, args.out))
    target = str(report["target_class"])
    lines = [f"{report['strategy']}: class {target} of {report['weak']} repaired with the module of class "
             f"{report['strong_class_id']} of {report['strong']} "
             f"({report['module_params_fraction']:.1%} of its weights)",
             *(f"  class {c}: {report['before'][c]:.4f} -> {report['after'][c]:.4f}"
               + ("  (target)" if c == target else "") for c in report["before"]),
             f"target class {target}: {report['target_before']:.4f} -> {report['target_after']:.4f} "
             f"({report['target_gain'] * 100:+.2f} points); mean of the other classes: "
             f"{report['other_mean_before']:.4f} -> {report['other_mean_after']:.4f} "
             f"({report['other_mean_change'] * 100:+.2f} points)",
             f"largest drop on another class {report['other_max_drop'] * 100:.2f} points (largest change "
             f"{report['other_max_change'] * 100:.2f}); accuracy {report['accuracy_before']:.4f} -> "
             f"{report['accuracy_after']:.4f} ({report['accuracy_change'] * 100:+.2f} points)"
             + (f"; exported to {report['out']}" if args.out else "")]
    emit(args, report, "\n".join(lines))
    return report


@command("runs")
def cmd_runs(args: argparse.Namespace) -> dict[str, Any]:
    from moda_core.runs import RunStatus, list_runs

    if os.path.exists(args.runs_dir) and not os.path.isdir(args.runs_dir):
        raise ModaError(f"runs folder {args.runs_dir} is a file, not a folder")
    summaries = list_runs(args.runs_dir)
    lines = []
    for s in summaries:
        if s.status is RunStatus.BROKEN:  # a folder name that is not a run name may hold anything: shown escaped
            name = s.name if s.name.isprintable() else ascii(s.name)
            lines.append(f"{name}: broken: {s.error}")
        elif s.status is RunStatus.NEEDS_MODELS:
            lines.append(f"{s.name}: {s.model} on {s.dataset}, {s.error}")
        elif s.error:
            resume = " (continue with train --resume, or --overwrite)" if s.status is RunStatus.INTERRUPTED else ""
            lines.append(f"{s.name}: {s.status}, {s.error}{resume}")
        else:
            acc = "-" if s.test_accuracy is None else f"{s.test_accuracy:.4f}"
            planned = f"/{s.epochs}" if s.epochs is not None else ""
            lines.append(f"{s.name}: {s.model} on {s.dataset} α={s.alpha} β={s.beta} γ={s.gamma} "
                         f"{s.status} epochs={s.epochs_done}{planned} test_acc={acc}")
    result = {"runs_dir": args.runs_dir, "runs": [s.row() for s in summaries]}
    emit(args, result, "\n".join(lines) or f"no runs in {args.runs_dir}")
    return result
