"""A runs folder is untrusted input: whatever one run folder holds (a config of the wrong shape, a FIFO, NaN
weights, a corrupt history, a truncated checkpoint, a name no command can open) makes that folder *broken* with
one line, never a crash or a hang of the listing, and every command says what is wrong in one ``error:`` line.

The runs here are copies of the bundled ``swap-weak`` demo run (a small LeNet-5), so all but the subprocess and
page tests run in the fast lane. The fuzz test at the end corrupts a copy 200 times (hypothesis, reproducible)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from helpers import APP, DEMO, TIMEOUT, open_page
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import moda_core.io as store_io
from moda_core import cli, runs
from moda_core.errors import ModaError
from moda_core.models import build_model
from moda_core.runs import RunSummary, list_runs, load_run
from moda_core.store import checks

ROOT = Path(__file__).resolve().parent.parent
SOURCE = DEMO / "swap-weak"  # LeNet-5 on 6 classes of mnist5k, 40 epochs, checkpoints at epochs 8 and 16


def copy_run(runs_dir: Path, name: str, checkpoints: bool = False) -> Path:
    target = runs_dir / name
    shutil.copytree(SOURCE, target, ignore=None if checkpoints else shutil.ignore_patterns("checkpoints"))
    return target


def edit_config(run_dir: Path, change) -> None:
    config = json.loads((run_dir / runs.CONFIG).read_text())
    change(config)
    (run_dir / runs.CONFIG).write_text(json.dumps(config))


def rewrite_header(path: Path, change) -> None:
    """Change a safetensors file's JSON header in place (its tensor data stays as it is)."""
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    change(header)
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data[8 + size:])


def by_name(runs_dir: Path) -> dict[str, RunSummary]:
    return {s.name: s for s in list_runs(runs_dir)}


def error_line(capsys, argv: list[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging) when the block takes longer than ``seconds``."""
    def expire(*_):
        raise TimeoutError(f"took longer than {seconds} s: a reader blocked")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ----- a malformed config.json breaks its folder, never the listing ----------------------------------

def _set(path: str, value):
    def change(config):
        *parents, key = path.split(".")
        record = config
        for parent in parents:
            record = record[parent]
        record[key] = value
    return change


MALFORMED = {  # name → (how config.json is changed, what the one-line error says)
    "list": ("[1, 2, 3]", "expected a JSON object, got list"),
    "null": ("null", "expected a JSON object, got null"),
    "string": ('"hello"', "expected a JSON object, got str"),
    "deep": ("[" * 200_000, "nested too deeply"),
    "long-int": ("{\"arch\": " + "9" * 5000 + "}", "corrupt JSON"),
    "data-list": (_set("data", [1]), "data must be an object"),
    "train-null": (_set("train", None), "train must be an object"),
    "arch-string": (_set("arch", "lenet5"), "arch (the model) must be an object"),
    "negative-channels": (_set("arch.in_channels", -1), "arch.in_channels must be a whole number"),
    "bool-channels": (_set("arch.in_channels", True), "arch.in_channels must be a whole number"),
    "huge-image": (_set("arch.image_size", 10**12), "arch.image_size must be a whole number"),
    "other-image": (_set("arch.image_size", 4000), "the model takes 1×4000×4000 inputs"),
    "float-classes": (_set("arch.num_classes", 6.5), "arch.num_classes must be a whole number"),
    "nan-width": (_set("arch.width", float("nan")), "arch.width must be a finite number"),
    "huge-width": (_set("arch.width", 10**400), "arch.width must be a finite number"),
    "unknown-model": (_set("arch.name", ["lenet5"]), "arch.name must be a known model"),
    "method-list": (_set("train.method", [1]), "train.method must be a string"),
    "unknown-method": (_set("train.method", "magic"), "unknown training method"),
    "epochs-string": (_set("train.epochs", "forty"), "train.epochs must be a whole number"),
    "negative-seed": (_set("train.seed", -1), "train.seed must be a whole number from 0"),
    "alpha-negative": (_set("train.alpha", -3), "train.alpha must be a finite number"),
    "classes-nested": (_set("data.classes", [[3]]), "data.classes must be a list of class ids"),
    "names-short": (_set("data.class_names", ["3"]), "data.class_names lists 1 classes"),
    "names-numbers": (_set("data.class_names", [1, 2, 3, 4, 5, 6]), "data.class_names must be a list of class names"),
}


def _write_malformed(run_dir: Path, how) -> None:
    if isinstance(how, str):
        (run_dir / runs.CONFIG).write_text(how)
    else:
        edit_config(run_dir, how)


def test_a_malformed_config_makes_only_its_folder_broken_with_one_line(tmp_path, capsys):
    good = copy_run(tmp_path, "good")
    for name, (how, _) in MALFORMED.items():
        _write_malformed(copy_run(tmp_path, name), how)
    listed = by_name(tmp_path)
    assert listed["good"].status == "complete" and listed["good"].loadable
    for name, (_, says) in MALFORMED.items():
        entry = listed[name]
        assert entry.status == "broken" and not entry.loadable, (name, entry)
        assert says in entry.error and "\n" not in entry.error and len(entry.error) <= 300, (name, entry)
    # the command line lists them all too, one line each
    assert cli.main(["runs", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == len(MALFORMED) + 1 and "good: lenet5 on mnist5k" in out[[*sorted(listed)].index("good")]
    # and the same check guards loading and every command that opens a run: one error line each
    for name, (_, says) in MALFORMED.items():
        with pytest.raises(ModaError) as raised:
            load_run(tmp_path / name)
        assert says in str(raised.value), name
        assert says in error_line(capsys, ["decompose", str(tmp_path / name)]), name
    assert load_run(good).epoch == 40


def test_read_json_reads_only_bounded_regular_files(tmp_path):
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"pad": "x" * (store_io.MAX_JSON_BYTES + 1)}))
    with pytest.raises(ModaError, match="more than the"):
        store_io.read_json(big)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000)
    with pytest.raises(ModaError, match="nested too deeply"):
        store_io.read_json(deep)
    with pytest.raises(ModaError, match="is a folder, not a regular file"):
        store_io.read_json(tmp_path)
    with pytest.raises(ModaError, match="missing file"):
        store_io.read_json(tmp_path / "absent.json")


def test_a_config_describing_a_huge_model_is_refused_before_anything_is_allocated(tmp_path):
    run_dir = copy_run(tmp_path, "huge")
    # no data set to compare with: only the parameter bound stops a 4096-channel, 4096-pixel MLP
    edit_config(run_dir, lambda c: (c["arch"].update(name="mlp", in_channels=4096, image_size=4096, width=8.0),
                                    c["train"].update(dataset="elsewhere"), c["data"].update(name="elsewhere")))
    with pytest.raises(ModaError, match="more than the .* a run may hold"):
        load_run(run_dir)
    assert by_name(tmp_path)["huge"].status == "broken"


# ----- NaN or infinite weights, a corrupt history --------------------------------------------------

def _poison_weights(run_dir: Path, value: float) -> None:
    tensors, meta = store_io.load_tensors(run_dir / runs.MODEL)
    first = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[first] = tensors[first].clone()
    tensors[first].view(-1)[3] = value
    store_io.save_tensors(run_dir / runs.MODEL, tensors, meta)


def _edit_history(run_dir: Path, change) -> None:
    lines = (run_dir / runs.HISTORY).read_text().splitlines()
    (run_dir / runs.HISTORY).write_text("\n".join(change(lines)) + "\n")


def test_non_finite_weights_and_a_corrupt_history_are_broken_and_never_offered(tmp_path, monkeypatch):
    from dashboard import folders

    copy_run(tmp_path, "good")
    _poison_weights(copy_run(tmp_path, "nan"), float("nan"))
    _poison_weights(copy_run(tmp_path, "inf"), float("-inf"))
    _edit_history(copy_run(tmp_path, "row-missing"), lambda lines: lines[:5] + lines[6:])
    _edit_history(copy_run(tmp_path, "garbage"), lambda lines: [*lines[:3], "not,a,row,of,numbers", *lines[3:]])
    _edit_history(copy_run(tmp_path, "cell-too-many"), lambda lines: [*lines[:3], lines[3] + ",1", *lines[4:]])
    _edit_history(copy_run(tmp_path, "no-epoch"), lambda lines: [lines[0].replace("epoch", "epoxy", 1), *lines[1:]])
    _edit_history(copy_run(tmp_path, "binary"), lambda lines: ["\x00\xff" * 10])
    listed = by_name(tmp_path)
    assert listed["good"].status == "complete"
    for name in ("nan", "inf"):
        assert listed[name].status == "broken" and "non-finite" in listed[name].error, listed[name]
    for name in ("row-missing", "garbage", "cell-too-many", "no-epoch", "binary"):
        assert listed[name].status == "broken" and "corrupt history" in listed[name].error, listed[name]
    for name in ("garbage", "cell-too-many", "no-epoch"):  # loading needs a history that parses
        with pytest.raises(ModaError, match="corrupt history"):
            load_run(tmp_path / name)
    # the dashboard offers only the good run, and picks it by default
    monkeypatch.setenv("MODA_RUNS_DIR", str(tmp_path))
    summaries = folders.list_runs()
    assert folders.loadable_specs(summaries, with_checkpoints=True) == [str(tmp_path / "good")]


def test_the_weights_check_is_done_once_per_version_of_the_file(tmp_path, monkeypatch):
    run_dir = copy_run(tmp_path, "run")
    assert by_name(tmp_path)["run"].status == "complete"
    reads = []
    real = checks.load_tensors
    monkeypatch.setattr(checks, "load_tensors", lambda path: reads.append(path) or real(path))
    assert by_name(tmp_path)["run"].status == "complete" and reads == []  # cached: nothing read again
    time.sleep(0.01)
    _poison_weights(run_dir, float("nan"))  # a new version of the file: checked again
    assert by_name(tmp_path)["run"].status == "broken" and reads == [run_dir / runs.MODEL]


# ----- FIFOs and devices are never read ----------------------------------------------------------

def test_a_fifo_or_a_device_in_place_of_a_file_is_refused_at_once(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    zero = tmp_path / "zero"
    zero.symlink_to("/dev/zero")
    with deadline(20):
        for path, kind in ((fifo, "a FIFO"), (zero, "a character device")):
            for read in (store_io.read_json, store_io.read_tensor_header, runs.read_history):
                with pytest.raises(ModaError, match=f"is {kind}, not a regular file"):
                    read(path)


@pytest.mark.slow
def test_moda_runs_neither_hangs_nor_fills_memory_on_fifos_and_dev_zero(tmp_path):
    copy_run(tmp_path, "good")
    for name in (runs.CONFIG, runs.MODEL, runs.HISTORY, runs.METRICS, runs.COMMIT, runs.LOCK):
        run_dir = copy_run(tmp_path, f"fifo-{name.strip('.').split('.')[0]}")
        (run_dir / name).unlink(missing_ok=True)
        os.mkfifo(run_dir / name)
    zero = copy_run(tmp_path, "zero")
    (zero / runs.CONFIG).unlink()
    (zero / runs.CONFIG).symlink_to("/dev/zero")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "moda_core", "runs", "--runs-dir", str(tmp_path), "--json"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    listed = {s["name"]: s for s in json.loads(result.stdout.strip().splitlines()[-1])["runs"]}
    assert listed.pop("good")["status"] == "complete"
    fifo_lock = listed.pop("fifo-lock")  # a FIFO as the lock file hides nothing else: the run itself is whole
    assert fifo_lock["status"] in ("complete", "broken")
    assert all(s["status"] == "broken" for s in listed.values()), listed
    assert "FIFO" in listed["fifo-config"]["error"] and time.monotonic() - started < 100


# ----- one error line for bad values -------------------------------------------------------------

def _reference_run(runs_dir: Path, name: str) -> Path:
    """An untrained LeNet-5 for 3×32×32 inputs (the synthetic data set), saved as a one-epoch run."""
    run_dir = runs_dir / name
    run_dir.mkdir()
    model = build_model("lenet5", 3, 32, 6)
    classes = [3, 5, 6, 7, 8, 9]
    store_io.write_json(run_dir / runs.CONFIG, {
        "arch": model.arch, "data": {"name": "synthetic", "classes": classes, "class_names": [str(c) for c in classes]},
        "train": {"dataset": "synthetic", "method": "moda", "alpha": 0.0, "beta": 0.0, "gamma": 0.0, "epochs": 1,
                  "classes": classes}})
    store_io.save_tensors(run_dir / runs.MODEL, model.state_dict(), {"epoch": 1})
    (run_dir / runs.HISTORY).write_bytes(runs.history_bytes([{"epoch": 1, "ce": 1.0, "test_accuracy": 0.1}]))
    return run_dir


def test_one_error_line_for_bad_values(tmp_path, capsys):
    good = copy_run(tmp_path, "good")
    assert "seed must be a whole number from 0" in error_line(
        capsys, ["train", "--runs-dir", str(tmp_path / "new"), "--seed", "-1"])
    assert "seed must be a whole number from 0" in error_line(
        capsys, ["train", "--runs-dir", str(tmp_path / "new"), "--seed", str(10**14)])
    assert "not a plain folder name" in error_line(
        capsys, ["train", "--runs-dir", str(tmp_path / "new"), "--name", "x" * 300])
    assert not (tmp_path / "new").exists()  # nothing half-made
    assert "--out is empty" in error_line(capsys, ["compose", str(good), "--classes", "0", "1", "--out", ""])
    assert "--csv is empty" in error_line(capsys, ["subtasks", str(good), "--csv", " "])
    reference = _reference_run(tmp_path, "rgb")
    assert by_name(tmp_path)["rgb"].status == "complete"
    assert "takes inputs of shape (3, 32, 32) but this run takes (1, 28, 28)" in error_line(
        capsys, ["subtasks", str(good), "--reference", str(reference)])


def test_decompose_says_in_one_line_why_a_broken_folder_cannot_be_opened(tmp_path, capsys):
    listed_metadata = copy_run(tmp_path, "metadata-list")
    rewrite_header(listed_metadata / runs.MODEL, lambda h: h.update(__metadata__=["epoch", "40"]))
    wrong_channels = copy_run(tmp_path, "channels")
    edit_config(wrong_channels, _set("arch.in_channels", 3))
    huge_image = copy_run(tmp_path, "image")
    edit_config(huge_image, _set("arch.image_size", 2**40))
    offsets = copy_run(tmp_path, "offsets")
    rewrite_header(offsets / runs.MODEL, lambda h: next(v for k, v in h.items() if k != "__metadata__").update(
        data_offsets=[0, "end"]))
    listed = by_name(tmp_path)
    for folder, says in ((listed_metadata, "metadata is not a map of strings"),
                         (wrong_channels, "the model takes 3×28×28 inputs"),
                         (huge_image, "arch.image_size must be a whole number"),
                         (offsets, "data offsets")):
        assert listed[folder.name].status == "broken" and says in listed[folder.name].error
        assert says in error_line(capsys, ["decompose", str(folder)])


# ----- entries that cannot be opened are not offered -------------------------------------------------

def test_a_folder_whose_name_no_command_can_open_is_broken(tmp_path, capsys):
    names = ("exp@2024", "-flag", "two\nlines", "x" * 101)
    for name in names:
        copy_run(tmp_path, name)
    listed = by_name(tmp_path)
    for name in names:
        assert listed[name].status == "broken" and "not a valid run name" in listed[name].error
        with pytest.raises(ModaError):
            load_run(f"{tmp_path / name}")
    assert cli.main(["runs", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == len(names) and all(": broken: not a valid run name" in line for line in out), out


def test_a_truncated_or_corrupt_checkpoint_is_not_offered(tmp_path, monkeypatch):
    from dashboard import folders

    run_dir = copy_run(tmp_path, "run", checkpoints=True)
    assert runs.list_checkpoints(run_dir) == [8, 16]
    early = runs.checkpoint_path(run_dir, 8)
    early.write_bytes(early.read_bytes()[:-1000])
    late = runs.checkpoint_path(run_dir, 16)
    rewrite_header(late, lambda h: h.update({"extra": {"dtype": "F32", "shape": [10**6], "data_offsets": [0, 4]}}))
    assert runs.list_checkpoints(run_dir) == []
    other = copy_run(tmp_path, "other", checkpoints=True)
    tensors, meta = store_io.load_tensors(runs.checkpoint_path(other, 16))
    tensors = {k: v.clone().fill_(float("nan")) if v.is_floating_point() else v for k, v in tensors.items()}
    store_io.save_tensors(runs.checkpoint_path(other, 16), tensors, meta)
    assert runs.list_checkpoints(other) == [8]  # NaN weights are not offered either
    shutil.rmtree(other)
    entry = by_name(tmp_path)["run"]
    assert entry.status == "complete" and entry.checkpoints == ()
    with pytest.raises(ModaError, match="truncated"):
        load_run(f"{run_dir}@8")
    monkeypatch.setenv("MODA_RUNS_DIR", str(tmp_path))
    assert folders.loadable_specs(folders.list_runs(), with_checkpoints=True) == [str(run_dir)]


# ----- fuzz: randomly corrupted copies of a real run (hypothesis: reproducible, and a failure shrinks) ---------

FUZZ_CASES = 200
STORED_FILES = ("rates.safetensors", "masks-tau0.90.safetensors", "evolution-rates.safetensors")
FUZZ_FILES = (runs.CONFIG, runs.METRICS, runs.HISTORY, runs.MODEL, "checkpoints/epoch-0008.safetensors",
              "checkpoints/epoch-0016.safetensors", *STORED_FILES)
DEEP = "DEEP"  # a JSON value replaced by 100,000 nested lists in the file's text
JSON_VALUES = st.one_of(
    st.lists(st.integers(-5, 5), max_size=3), st.none(), st.integers(1, 399).map(lambda k: 10 ** k),
    st.integers(-10**6, -1), st.text(alphabet="ab@/`*\n", max_size=3),
    st.text(alphabet="ab@/`*\n", min_size=1, max_size=20).map(lambda t: (t * 20_000)[:20_000]),
    st.just({"nested": [[{"x": [1]}]]}), st.sampled_from((float("nan"), float("inf"), -0.0, 1e308, 0.5)),
    st.booleans(), st.just(DEEP))


class FuzzSource(tuple):
    """(the good run's folder, its rates, its evolution), shown by its folder alone in a failure's report."""

    def __repr__(self) -> str:
        return f"FuzzSource({self[0]})"


@pytest.fixture(scope="module")
def fuzz_source(tmp_path_factory) -> FuzzSource:
    """The swap-weak demo run as this version writes runs (every tensor file with its checksum), with its stored
    decomposition and recorded evolution; and its rates and evolution, for comparison."""
    from moda_core.decompose import decompose
    from moda_core.studies import load_evolution_rates, measure_states, save_evolution_rates

    source = tmp_path_factory.mktemp("fuzz") / "source"
    shutil.copytree(SOURCE, source)
    for path in [source / runs.MODEL, *sorted((source / "checkpoints").iterdir())]:
        tensors, meta = store_io.load_tensors(path)
        path.write_bytes(store_io.tensors_bytes(tensors, meta))
    run = load_run(source)
    rates = decompose(run, save=True).rates
    states = [(epoch, f"{source}@{epoch}") for epoch in runs.list_checkpoints(source)] + [(run.epoch, str(source))]
    save_evolution_rates(source, {epoch: record for epoch, _, record in measure_states(states, run)})
    return FuzzSource((source, rates, load_evolution_rates(run)))


def _json_paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _json_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _json_paths(item, (*prefix, index))


def _replace_json_value(path: Path, data: bytes, draw) -> str:
    """Write ``data`` (a JSON document) to ``path`` with one drawn value, or the whole document, replaced."""
    document = json.loads(data)
    value = draw(JSON_VALUES)
    where = draw(st.sampled_from(list(_json_paths(document))))
    if where:
        parent = document
        for key in where[:-1]:
            parent = parent[key]
        parent[where[-1]] = value
    else:
        document = value
    text = json.dumps(document)
    if value == DEEP:
        text = text.replace(f'"{DEEP}"', "[" * 100_000 + "]" * 100_000)
    path.write_text(text)
    return f"{path.name}:{'.'.join(map(str, where))}={str(value)[:20]!r}"


def _corrupt(run_dir: Path, draw) -> str:
    """One drawn corruption of a copied run (``draw``: hypothesis's). The copy's files are hard links to the good
    run's, so a file is removed and written anew, never changed in place."""
    name = draw(st.sampled_from(FUZZ_FILES))
    path = run_dir / name
    how = draw(st.sampled_from(("truncate", "flip", "json", "delete")))
    data = bytearray(path.read_bytes())
    path.unlink()
    if how == "json" and name in (runs.CONFIG, runs.METRICS):
        return _replace_json_value(path, bytes(data), draw)
    if how == "delete":
        return f"{name} deleted"
    if how in ("truncate", "json"):  # "json" on a tensor or history file: cut it
        cut = draw(st.integers(0, len(data) - 1))
        path.write_bytes(bytes(data[:cut]))
        return f"{name} cut at {cut}"
    spots = draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 7)), min_size=1, max_size=20))
    for spot, bit in spots:
        data[spot] ^= 1 << bit
    path.write_bytes(bytes(data))
    return f"{name} flipped at {spots[:3]}"


def _linked_copy(target: Path, source: Path = SOURCE) -> None:
    shutil.copytree(source, target, copy_function=os.link)


@pytest.mark.slow
@settings(max_examples=FUZZ_CASES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_a_corrupted_copy_of_a_run_is_listed_broken_in_one_line_or_loads_as_the_good_run(fuzz_source, data,
                                                                                        tmp_path_factory):
    """Whatever one corruption does to one file of a run, listing it never fails: it is broken (one line, not
    loadable) or it loads, its weights finite, its checkpoints loading, and a damaged stored result is never
    taken for a result (read when whole, else recomputed: the same rates)."""
    from moda_core.decompose import decompose
    from moda_core.studies import load_evolution_rates

    source, good_rates, good_evolution = fuzz_source
    runs_dir = tmp_path_factory.mktemp("copy")
    copy = runs_dir / "fuzzed"
    _linked_copy(copy, source)
    damage = _corrupt(copy, data.draw)
    (entry,) = list_runs(runs_dir)
    event(f"{damage.split()[0].split(':')[0]} → {entry.status}")  # --hypothesis-show-statistics: what it did
    assert entry.status in ("broken", "complete", "interrupted"), (damage, entry)
    if entry.status == "broken":
        assert entry.error and "\n" not in entry.error and not entry.loadable, (damage, entry)
        shutil.rmtree(runs_dir)
        return
    # the damage left it usable (a flipped digit in a loss, a deleted metrics.json …): it loads
    assert entry.loadable, (damage, entry)
    run = load_run(copy)
    assert not runs.non_finite(run.model.state_dict()), damage
    for epoch in entry.checkpoints:
        load_run(f"{copy}@{epoch}")
    if any(damage.startswith(stored) for stored in STORED_FILES):
        rates = decompose(run, save=False).rates
        assert all(torch.equal(rates[p], good_rates[p]) for p in good_rates), damage
        try:
            evolution = load_evolution_rates(run)
        except ModaError as error:
            assert "\n" not in str(error), damage
        else:  # whole, or not there at all (a deleted file: nothing recorded)
            assert evolution == {} or evolution.keys() == good_evolution.keys() and all(
                evolution[e][1] == good_evolution[e][1] and all(
                    torch.equal(evolution[e][0][p], good_evolution[e][0][p]) for p in good_evolution[e][0])
                for e in evolution), damage
    shutil.rmtree(runs_dir)


@pytest.mark.slow
def test_the_listing_and_the_pages_keep_the_good_run_among_broken_copies(tmp_path, monkeypatch, fuzz_source):
    """Every file of a run cut short and deleted, one copy each, next to a good run: `moda runs` lists them all in
    one line each, and the pages that list runs open on the good run (named by the link, as a bookmark would)."""
    from streamlit.testing.v1 import AppTest

    from dashboard import folders

    source = fuzz_source[0]
    runs_dir = tmp_path / "runs"
    good = runs_dir / "aaa-good"
    shutil.copytree(source, good)
    for number, name in enumerate(FUZZ_FILES):
        for how in ("cut", "deleted"):
            copy = runs_dir / f"broken-{number}-{how}"
            _linked_copy(copy, source)
            data = (copy / name).read_bytes()
            (copy / name).unlink()
            if how == "cut":
                (copy / name).write_bytes(data[:len(data) // 2])
    result = subprocess.run([sys.executable, "-m", "moda_core", "runs", "--runs-dir", str(runs_dir), "--json"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    listed = {s["name"]: s for s in json.loads(result.stdout.strip().splitlines()[-1])["runs"]}
    assert len(listed) == 2 * len(FUZZ_FILES) + 1
    assert listed["aaa-good"]["status"] == "complete" and listed["aaa-good"]["checkpoints"] == [8, 16]
    assert all("\n" not in (entry.get("error") or "") for entry in listed.values())
    monkeypatch.setenv("MODA_RUNS_DIR", str(runs_dir))
    monkeypatch.setenv("MODA_TRAINING", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # decompositions of the good run go there
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.query_params["run"] = folders.run_label(str(good))
    app.run()
    for page, key in (("runs", "runs_run"), ("activations", "act_run"), ("compose", "comp_run")):
        app = open_page(page, app)
        assert app.selectbox(key=key).value == str(good), page
