"""Twins: runs of the same experiment trained by other methods (MODA, standard training, MwT), the runs the
dashboard draws side by side. Two runs are the same experiment when they trained the same model on the same data
(``SAME_EXPERIMENT``, read from what each run's config.json says was built and loaded); how they trained (the method
and its weights, the epochs, the optimiser, the seed) may differ.

Pages look for a run's twins on every view, among every listed run: what a settled config.json says is kept per
state of the file (``experiment``), as the listing keeps what it read of a settled folder, so a page view reads no
config.json that the last one read.
"""
from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

from moda_core.errors import ModaError
from moda_core.store.names import CONFIG
from moda_core.store.records import read_config
from moda_core.store.summary import RunStatus, RunSummary

# (config.json record, key): the model and width built, the data set, its classes and the shares of its images used,
# and which activations count as units (a model of one's own)
SAME_EXPERIMENT = (("arch", "name"), ("arch", "width"), ("data", "name"), ("data", "classes"),
                   ("data", "train_fraction"), ("data", "class_fractions"), ("train", "points"),
                   ("train", "threshold"))
METHODS = ("moda", "standard", "mwt")
SETTLED_NS = 2_000_000_000  # a config.json changed less than this long ago is read afresh (as the listing does)
_KNOWN: OrderedDict[tuple[str, int, int, int, int, int], tuple[str, ...]] = OrderedDict()  # file state → experiment
_KNOWN_MAX = 1024
_KNOWN_LOCK = threading.Lock()


def _settled_state(config: Path) -> tuple[str, int, int, int, int, int] | None:
    """A config.json's identity, size and modification and change times: any write changes them (a file replaced
    by a rename is another file). None while it changed in the last ``SETTLED_NS`` (a rewrite in place within the
    clock's granularity can keep its times) or when it cannot be looked at."""
    try:
        info = os.stat(config)
    except OSError:
        return None
    if time.time_ns() - max(info.st_mtime_ns, info.st_ctime_ns) < SETTLED_NS:
        return None
    return str(config), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def experiment(run_dir: str | Path) -> tuple[str, ...] | None:
    """What makes ``run_dir`` the experiment it is (``SAME_EXPERIMENT``'s values), None when its config does not
    read. Kept per state of a settled config.json (``_settled_state``): read again only once it changes."""
    key = _settled_state(Path(run_dir) / CONFIG)
    if key is not None:
        with _KNOWN_LOCK:
            known = _KNOWN.get(key)
            if known is not None:
                _KNOWN.move_to_end(key)
                return known
    try:
        config = read_config(run_dir)
    except ModaError:
        return None
    signature = tuple(repr(config.get(record, {}).get(name)) for record, name in SAME_EXPERIMENT)
    if key is not None:
        with _KNOWN_LOCK:
            _KNOWN[key] = signature
            while len(_KNOWN) > _KNOWN_MAX:
                _KNOWN.popitem(last=False)
    return signature


def partner(method: str) -> str:
    """The method a run is compared with: standard training for a modular method (MODA, MwT), MODA for standard
    training."""
    return "moda" if method == "standard" else "standard"


def twins(summaries: Sequence[RunSummary], run_dir: str | Path) -> dict[str, Path]:
    """``run_dir``'s method → ``run_dir``, then one run per other method of the same experiment among ``summaries``
    (``list_runs`` entries the caller can open): method → run folder. Among several of one method, a run in the
    same folder, with as many epochs done, and complete is preferred. Empty when ``run_dir`` is not listed."""
    run_dir = Path(run_dir)
    listed = {s.path.resolve(): s for s in summaries}
    chosen = listed.get(run_dir.resolve())
    if chosen is None:
        return {}
    signature = experiment(run_dir)
    found = {str(chosen.method): run_dir}
    others = sorted((s for path, s in listed.items() if path != run_dir.resolve()),
                    key=lambda s: (s.path.parent.resolve() != run_dir.parent.resolve(),
                                   s.epochs_done != chosen.epochs_done, s.status is not RunStatus.COMPLETE))
    for summary in others:
        method = str(summary.method)
        if method not in found and signature is not None and experiment(summary.path) == signature:
            found[method] = summary.path
    return found


def twin(summaries: Sequence[RunSummary], run_dir: str | Path) -> tuple[str, Path] | None:
    """``run_dir``'s partner run (``partner`` of its method) among its ``twins``: (method, run folder), or None."""
    group = twins(summaries, run_dir)
    if not group:
        return None
    other = partner(next(iter(group)))
    return (other, group[other]) if other in group else None
