"""Twins: runs of the same experiment trained by other methods (MODA, standard training, MwT), the runs the
dashboard draws side by side. Two runs are the same experiment when they trained the same model on the same data
(``SAME_EXPERIMENT``, read from what each run's config.json says was built and loaded); how they trained (the method
and its weights, the epochs, the optimiser, the seed) may differ."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from moda_core.errors import ModaError
from moda_core.store.records import read_config
from moda_core.store.summary import RunStatus, RunSummary

# (config.json record, key): the model and width built, the data set, its classes and the shares of its images used,
# and which activations count as units (a model of one's own)
SAME_EXPERIMENT = (("arch", "name"), ("arch", "width"), ("data", "name"), ("data", "classes"),
                   ("data", "train_fraction"), ("data", "class_fractions"), ("train", "points"),
                   ("train", "threshold"))
METHODS = ("moda", "standard", "mwt")


def experiment(run_dir: str | Path) -> tuple | None:
    """What makes ``run_dir`` the experiment it is (``SAME_EXPERIMENT``'s values), None when its config does not
    read."""
    try:
        config = read_config(run_dir)
    except ModaError:
        return None
    return tuple(repr(config.get(record, {}).get(key)) for record, key in SAME_EXPERIMENT)


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
