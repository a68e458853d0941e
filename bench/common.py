"""Helpers every benchmark shares: one command line (``BenchParser``: ``--quick``, ``--json``, ``--out`` and the rule
for writing results), printing a result (``log``, ``show``), writing the result file (``write_result``), the method
table (standard, MODA, MwT; unset weights take the method's defaults from ``moda_core.methods`` through
``TrainConfig``), the median epoch time of a run, and a device's name.

The rule for files: a bench writes a file only when ``--out PATH`` names it. The committed results (under
``bench/results/`` and ``assets/results/``) are refreshed by naming them, e.g. ``--out bench/results/vit.csv``;
``--quick`` (small, fast settings) refuses to write there, so a quick run never replaces a committed result.
``--json`` prints the result as one JSON document on stdout and nothing else there (progress goes to stderr).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:  # torch and moda_core are imported where used: the browser benches need neither
    import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
COMMITTED = (RESULTS, ROOT / "assets" / "results")  # result folders under version control

# Benchmark name → TrainConfig keyword arguments. Standard training is MODA's trainer with α=β=γ=0.
METHODS: dict[str, dict[str, Any]] = {"standard": dict(alpha=0.0, beta=0.0, gamma=0.0), "moda": dict(),
                                      "mwt": dict(method="mwt")}


def committed(path: str | Path) -> bool:
    """Whether ``path`` lies in a committed result folder (``COMMITTED``)."""
    resolved = Path(path).resolve()
    return any(resolved.is_relative_to(folder.resolve()) for folder in COMMITTED)


class BenchParser(argparse.ArgumentParser):
    """A bench's command line: its own options plus the three every bench shares.

    ``quick`` maps option destinations to the values ``--quick`` uses instead of their defaults (an option given
    on the command line keeps its value); ``out`` says what ``--out`` writes. ``parse_args`` refuses ``--quick``
    with an ``--out`` in a committed result folder."""

    def __init__(self, doc: str, quick: Mapping[str, Any], out: str) -> None:
        super().__init__(description=doc.split("\n\n")[0].strip(), formatter_class=argparse.RawDescriptionHelpFormatter)
        self.quick = dict(quick)
        shared = self.add_argument_group("options every bench shares")
        self.quick_action = shared.add_argument("--quick", action="store_true")
        shared.add_argument("--json", action="store_true",
                            help="print the result as one JSON document on stdout (progress goes to stderr)")
        shared.add_argument("--out", type=Path, metavar="PATH",
                            help=f"{out}; nothing is written without it (a committed result only when named here)")

    def quick_settings(self) -> str:
        """What ``--quick`` sets, as the options one would type."""
        actions = {action.dest: action for action in self._actions}
        unknown = set(self.quick) - set(actions)
        assert not unknown, f"--quick sets options this bench does not have: {sorted(unknown)}"
        words = []
        for dest, value in self.quick.items():
            action = actions[dest]
            if isinstance(value, bool):  # a switch: the option that gives this value
                words.append(action.option_strings[0] if value == action.const else f"not {action.option_strings[0]}")
            else:
                shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
                words.append(f"{action.option_strings[0]} {shown}")
        return ", ".join(words)

    def format_help(self) -> str:
        self.quick_action.help = (f"small, fast settings ({self.quick_settings()}; options given keep their values); "
                                  "never writes into bench/results/ or assets/results/")
        return super().format_help()

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        parsed = super().parse_args(args, namespace)
        if parsed.quick:
            self.quick_settings()  # every option it names exists
            self.set_defaults(**self.quick)
            parsed = super().parse_args(args, namespace)
            if parsed.out is not None and committed(parsed.out):
                self.error(f"--quick never writes a committed result, and --out {parsed.out} is in one of "
                           f"{', '.join(str(f.relative_to(ROOT)) + '/' for f in COMMITTED)} (drop --quick to "
                           "refresh it, or write elsewhere)")
        return parsed


def log(message: str) -> None:
    """Progress for a person watching: on stderr, so that stdout holds only the result."""
    print(message, file=sys.stderr, flush=True)


def _plain(value: Any) -> Any:
    """A JSON-ready form of what ``json`` does not know (numpy and torch scalars, paths)."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def show(args: argparse.Namespace, result: Any, text: str) -> None:
    """The result on stdout: as JSON with ``--json`` (nothing else goes there), else ``text``."""
    print(json.dumps(result, default=_plain) if args.json else text, flush=True)


def write_result(path: str | Path, content: str | bytes) -> Path:
    """Write one result file atomically (its folder made if needed) and say so on stderr."""
    from moda_core.io import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, content.encode() if isinstance(content, str) else content)
    log(f"wrote {path}")
    return path


def median_epoch_seconds(run) -> float:
    """Median training time per epoch of a run (no test pass); the first epoch is warm-up and is left
    out when there are others."""
    return statistics.median([h["train_seconds"] for h in run.history[1:]] or [run.history[0]["train_seconds"]])


def device_name(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
