"""Shared test helpers (plain functions and constants; fixtures live in conftest.py): randomised zoo models,
random class masks, the masked full model, brute-force overlap, headless dashboard pages, served dashboards,
torchrun."""
from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from bench.browser import CHROMIUM, CHROMIUM_ARGS, free_port, stop_process  # noqa: F401 - the browser tests' too
from moda_core.activations import masked_model, modular_points, run_with_cache
from moda_core.compose import compose_module
from moda_core.models import build_model

if TYPE_CHECKING:
    from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
DEMO = ROOT / "assets" / "demo"
TIMEOUT = 120  # seconds an AppTest run may take

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


def random_masks(model, density, seed, classes=None):
    """Random class×unit masks with at least one unit per class per point (``classes``: the model's, or
    NUM_CLASSES for a model that does not say)."""
    classes = classes or getattr(model, "arch", {}).get("num_classes", NUM_CLASSES)
    generator = torch.Generator().manual_seed(seed)
    _, cache = run_with_cache(model, torch.zeros(1, *model.input_shape, dtype=next(model.parameters()).dtype))
    masks = {}
    for point in modular_points(model):
        units = cache[point].shape[1]
        mask = torch.rand(classes, units, generator=generator) < density
        mask[torch.arange(classes), torch.randint(0, units, (classes,), generator=generator)] = True
        masks[point] = mask
    return masks


def masked_logits(model, masks, classes, x):
    union = {p: m[classes].any(0) for p, m in masks.items()}
    with torch.no_grad():
        return masked_model(model, union)(x)[:, classes]


def brute_force_overlap(model, masks):
    """Give every weight a unique id, compose each single-class module, count shared ids."""
    model = model.double()
    with torch.no_grad():
        next_id = 1.0
        for param in model.parameters():
            param.copy_(torch.arange(next_id, next_id + param.numel(), dtype=torch.float64).view_as(param))
            next_id += param.numel()
    kept = []
    for c in range(len(next(iter(masks.values())))):
        composed = compose_module(model, masks, [c])
        ids = torch.cat([p.detach().flatten() for p in composed.parameters()]).long()
        assert len(ids.unique()) == len(ids)
        held = torch.zeros(int(next_id), dtype=torch.bool)
        held[ids] = True
        kept.append(held)
    return torch.tensor([[int((a & b).sum()) for b in kept] for a in kept], dtype=torch.float64)




# a hand-made bench/compare.py table: two models × standard, MODA and MwT
COMPARE_CSV_EXAMPLE = """model,width,method,epochs,seed,test_accuracy,seconds_per_epoch,time_ratio_vs_standard,\
mean_module_size,mean_overlap,pair_params_fraction,pair_composed_accuracy,pair_standard_accuracy
lenet5,1.0,standard,15,0,0.976,0.42,1.0,0.60,0.50,0.70,0.994,0.995
lenet5,1.0,moda,15,0,0.979,0.51,1.22,0.09,0.04,0.14,0.996,0.995
lenet5,1.0,mwt,15,0,0.970,0.47,1.12,0.30,0.20,0.45,0.990,0.995
vgg11,0.25,standard,15,0,0.988,2.27,1.0,0.81,0.71,0.94,0.997,0.997
vgg11,0.25,moda,15,0,0.986,17.98,7.92,0.37,0.23,0.59,0.996,0.997
vgg11,0.25,mwt,15,0,0.981,2.90,1.28,0.42,0.30,0.60,0.993,0.997
"""


class ServedDashboard:
    """``python -m dashboard.serve`` (what ``make run`` starts) in a subprocess: started on a free port,
    waited for until its health check answers, stopped on exit. ``output`` holds what it printed."""

    def __init__(self, env: dict, args: tuple = (), start_timeout: float = 90, command: list | None = None,
                 cwd: str | Path | None = None, port_flag: str = "--port") -> None:
        """``command`` replaces ``python -m dashboard.serve`` (e.g. an installed ``moda-studio``, or a bare
        ``streamlit run dashboard/app.py`` with ``port_flag="--server.port"``), ``cwd`` the checkout as the folder
        it starts in."""
        self.port, self.env, self.args, self.start_timeout = free_port(), env, list(args), start_timeout
        self.port_flag = port_flag
        self.url = f"http://127.0.0.1:{self.port}"
        self.root = Path(__file__).resolve().parent.parent
        self.command = command or [sys.executable, "-m", "dashboard.serve"]
        self.cwd = cwd or self.root
        self.output = ""

    def __enter__(self) -> "ServedDashboard":
        import subprocess
        import time
        import urllib.request

        import pytest

        self.started = time.perf_counter()
        self.process = subprocess.Popen([*self.command, self.port_flag, str(self.port), *self.args], cwd=self.cwd,
                                        env=self.env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                pytest.fail(f"the dashboard did not start on {self.url}:\n{self.output[-3000:]}")
            time.sleep(0.2)

    def __exit__(self, *_exc) -> None:
        stop_process(self.process)
        if self.process.stdout:
            self.output = self.process.stdout.read().decode(errors="replace")


def assert_runs_without_moda_core(program: Path, x: torch.Tensor, y: torch.Tensor, folder: Path) -> None:
    """Load an exported .pt2 in a fresh interpreter that never imports moda_core, and check that it maps
    ``x`` to ``y`` at the full batch and at batch 1 (the batch dimension is dynamic)."""
    torch.save(x, folder / "x.pt")
    torch.save(y, folder / "y.pt")
    script = (
        "import sys, torch\n"
        f"p = torch.export.load({str(program)!r}).module()\n"
        f"x = torch.load({str(folder / 'x.pt')!r})\n"
        f"y = torch.load({str(folder / 'y.pt')!r})\n"
        "torch.testing.assert_close(p(x), y)\n"
        "torch.testing.assert_close(p(x[:1]), y[:1])\n"
        "assert not any(m.startswith('moda_core') for m in sys.modules)\n"
        "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=folder, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr


def open_page(page: str | None = None, app: AppTest | None = None, stopped_ok: bool = False) -> AppTest:
    """Open the dashboard headless (through app.py) and switch to ``page``; fail on an exception, and on a
    stopped page unless ``stopped_ok`` (tests of the stopped-page message itself)."""
    from streamlit.testing.v1 import AppTest

    from dashboard.ui import PAGE_STOPPED

    if app is None:
        app = AppTest.from_file(APP, default_timeout=TIMEOUT)
        app.run()
    if page:
        app.switch_page(f"views/{page}.py")
        app.run()
    assert not app.exception, [e.value for e in app.exception]
    assert stopped_ok or not [e.value for e in app.error if e.value.startswith(PAGE_STOPPED)]
    return app


def charts(app: AppTest) -> dict[int, dict]:
    """Plotly figures on the page, by position (the figure JSON streamlit sends)."""
    return {i: json.loads(element.proto.spec) for i, element in enumerate(app.get("plotly_chart"))}


def shown(markdown: str) -> str:
    """A Markdown body as a reader sees its characters: without the backslashes that escape names
    (``dashboard.plain_text.plain``) and the word joiners that keep them from becoming links."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace("\u2060", "")


def texts(app: AppTest) -> str:
    """Every text element on the page, one per line, as a reader sees it (see ``shown``)."""
    return "\n".join(shown(m.value) for m in [*app.markdown, *app.caption, *app.title, *app.info, *app.warning,
                                              *app.error, *app.success, *app.subheader])


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    """``python -m moda_core ARGS`` under torchrun with ``nproc`` CPU processes (gloo on loopback); fails the
    test when it exits with an error."""
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "moda_core", *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


@contextlib.contextmanager
def board_occupied(kind: str, label: str, hold: float):
    """Every worker of the dashboard's board busy with work of ``kind`` (other visitors' heavy work) until the
    event this yields is set, or ``hold`` seconds; released and joined on exit."""
    from dashboard import jobs

    board, started, release = jobs.board(), threading.Event(), threading.Event()

    def occupy(progress):
        started.set()
        release.wait(hold)

    workers = [threading.Thread(target=board.run, args=(kind, k, occupy, label, 1)) for k in range(board.workers)]
    for worker in workers:
        worker.start()
    try:
        assert started.wait(10)
        yield release
    finally:
        release.set()
        for worker in workers:
            worker.join(10)


def train_from_form(app):
    """Press the Runs page's Train, and then Train anyway where the form warns that its settings take few
    optimisation steps (the tests train briefly on purpose); returns ``app``."""
    app.form_submit_button[0].click().run()
    anyway = [b for b in app.button if b.key == "train_anyway"]
    if anyway:
        anyway[0].click().run()
    return app
