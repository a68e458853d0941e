"""Widgets shared by several pages: the runs-folder and run pickers, the empty / broken-run messages,
and the page guard that turns an error into a short message (no traceback, no server path)."""
from __future__ import annotations

import contextlib
import functools
import logging
import math
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import streamlit as st

from dashboard import folders
from dashboard.lazy import LazyModule
from dashboard.plain_text import code, plain
from moda_core.config import DEFAULT_TAU
from moda_core.errors import ModaError
from moda_core.store.names import MODEL, RunRef
from moda_core.store.summary import RunStatus, RunSummary

# imported on first use, so the landing page does not wait for torch
engine = LazyModule("dashboard.engine")
run_store = LazyModule("moda_core.runs")

if TYPE_CHECKING:
    from streamlit.delta_generator import DeltaGenerator
    from streamlit.navigation.page import StreamlitPage

    from moda_core.runs import Run

LOG = logging.getLogger("moda.dashboard")
HOW_TO_TRAIN = ("Train one on the **Runs & training** page, or from a terminal: "
                "`moda train --model lenet5 --epochs 5 --runs-dir runs`. "
                "The bundled demo runs ship with the package (a checkout rebuilds them with "
                "`.venv/bin/python assets/make_demo.py`).")
# the start of the message a page shows instead of a traceback (tests look for it)
PAGE_STOPPED = "This page stopped"


def runs_folder_picker() -> None:
    """The sidebar's choice among the runs folders the server was started with (no typed paths)."""
    choices = folders.folder_choices()
    if len(choices) > 1:
        st.selectbox("Runs folder", choices, key="runs_folder",
                     help="The folders this server was started with (MODA_RUNS_DIR); every page lists the runs "
                          "in the folder picked here.")
    else:
        st.caption(f"Runs folder: {code(choices[0])}")
    for problem in folders.runs_dir_problems():
        st.warning(problem)  # labels as code spans (folders.runs_dir_problems)


LIGHT_PAGES = ("", "how")  # pages drawn without torch (the landing page)


def run_page(page: StreamlitPage) -> None:
    """Run a page; an error becomes one short message (the traceback goes to the server's terminal only)."""
    where = getattr(page, "url_path", "?")
    with _guarded(where):
        if where not in LIGHT_PAGES:
            engine_with_words()
        page.run()


def engine_with_words() -> None:
    """Import the engine (and torch under it) with a line that says so while it loads: the first visit after the
    server starts would otherwise see an empty page for seconds."""
    import sys

    module = sys.modules.get("dashboard.engine")
    if module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False):
        return  # imported already (a module still being imported, by the warm-up thread, is waited for below)
    box = st.empty()
    box.info("Starting the engine: loading PyTorch (the first visit after the server starts takes a few "
             "seconds)…", icon="⏳")
    engine.module()
    box.empty()


@contextlib.contextmanager
def _guarded(where: str) -> Iterator[None]:
    try:
        yield
    except ModaError as error:
        LOG.warning("page %s stopped: %s", where, error)
        st.error(f"{PAGE_STOPPED}: {plain(folders.public(str(error)))}")
    except Exception:  # noqa: BLE001 - visitors get a short message; the terminal gets the details
        LOG.exception("page %s stopped on an unexpected error", where)
        st.error(f"{PAGE_STOPPED} on an unexpected error; the details are in the server's terminal. "
                 "Pick another run, or reload the page.")


def fragment(function: Callable[..., None]) -> Callable[..., None]:
    """``st.fragment`` for the part of a page a slider redraws on its own (a widget inside reruns only that part,
    not the sidebar, the run pickers and what comes before), with ``run_page``'s guard: a fragment's rerun runs
    outside the page's, and an error there must also become one short message, never a traceback."""
    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> None:
        with _guarded(f"fragment {function.__name__}"):
            function(*args, **kwargs)
    return st.fragment(guarded)


def needs_models_text(summaries: list[RunSummary]) -> str:
    """"N runs need moda-studio --models PKG …" for runs whose builder comes from a package nobody allowed ("")."""
    waiting = [s for s in summaries if s.status is RunStatus.NEEDS_MODELS]
    if not waiting:
        return ""
    packages = sorted({str(s.needs) for s in waiting})
    flags = " ".join(f"--models {p}" for p in packages)
    return (f"{len(waiting)} run{'s' if len(waiting) != 1 else ''} in {folders.folders_text()} "
            f"need{'s' if len(waiting) == 1 else ''} {code(flags)}: a model of your own is built by its package's "
            f"code, which this server runs only when started with {code('moda-studio ' + flags)}.")


def show_broken(summaries: list[RunSummary]) -> None:
    """List run folders that do not load, with their error, without stopping the page (runs waiting for
    ``--models`` are said apart: they are not broken)."""
    waiting = needs_models_text(summaries)
    if waiting:
        st.info(waiting)
    broken = [s for s in summaries if not folders.openable(s) and s.status is not RunStatus.NEEDS_MODELS]
    if broken:
        with st.expander(f"{len(broken)} run folder(s) could not be loaded", expanded=False):
            for s in broken:
                st.warning(f"{code(folders.run_label(str(s.ref)))} ({plain(s.status.value)}): "
                           f"{plain(folders.public(s.error or 'does not load'))}")


def pick_run(label: str, key: str, with_checkpoints: bool = False,
             prefer: Callable[[RunSummary], bool] | tuple[Callable[[RunSummary], bool], ...] | None = None,
             summaries: list[RunSummary] | None = None, help: str | None = None,
             prefer_spec: Callable[[str], bool] | None = None, shared: bool = True,
             url: str | None = None) -> str | None:
    """A select box of the runs a page can open; None (after a friendly message) when there are none.

    The default is a complete run: the first that ``prefer`` (a predicate on run summaries, or several
    tried in order) accepts, else the first complete one; ``prefer_spec`` (on run specs, checkpoints
    included) overrides it. Broken runs are not offered; interrupted or running ones never by default.

    A ``shared`` picker (the default) is *the* run of the session: every page's shared picker shows the run
    last chosen on any page (or named by the URL's ``?run=``, see ``run_token``), and the URL follows it.
    Pages with a second run (Swap's weak/strong, Modules' run B) pass ``shared=False`` for it, and ``url``, the
    query parameter that keeps that picker's run in the URL."""
    summaries = folders.list_runs() if summaries is None else summaries
    specs = folders.loadable_specs(summaries, with_checkpoints)
    if not specs:
        st.info(needs_models_text(summaries) or f"No runs yet in {folders.folders_text()}. {HOW_TO_TRAIN}")
        return None
    predicates = prefer if isinstance(prefer, tuple) else (prefer,) if prefer else ()
    runs = [s for s in summaries if folders.openable(s)]
    index = specs.index(str(runs[default_index(summaries, *predicates)].ref))
    if prefer_spec is not None:
        index = next((i for i, spec in enumerate(specs) if prefer_spec(spec) and _healthy(spec, runs)), index)
    if not shared:  # the page's own picker: in the URL under ``url`` when given
        if url:
            linked_choice(url, key, specs, lambda token: _resolve_token(token, specs), "run")
        if key in st.session_state and st.session_state[key] not in specs:
            del st.session_state[key]
        chosen_already = {} if key in st.session_state else {"index": index}
        spec = st.selectbox(label, specs, key=key, format_func=folders.run_label, help=help, **chosen_already)
        if url:
            link(url, run_token(spec))
        return spec
    wanted = _shared_run(folders.loadable_specs(summaries, with_checkpoints=True))
    chosen = _resolve_token(wanted, specs) if wanted else None
    if chosen is None and (key not in st.session_state or st.session_state[key] not in specs):
        chosen = specs[index]
    if chosen is not None:
        st.session_state[key] = chosen  # set before the widget exists: no index, or Streamlit warns
    spec = st.selectbox(label, specs, key=key, format_func=folders.run_label, help=help,
                        on_change=_remember, args=(key, SHARED_RUN, run_token))
    _set_url(RUN_PARAM, run_token(spec))
    return spec


# ----- one run and one τ for the whole session, mirrored in the URL ----------------------------------

SHARED_RUN = "shared_run"  # session key: the session's run as a run token (public, never a path)
SHARED_TAU = "shared_tau"  # session key: the session's τ
RUN_PARAM, TAU_PARAM = "run", "tau"  # the URL's query parameters (?run=demo/vgg11-moda&tau=0.90)
TAU_MIN, TAU_MAX, TAU_STEP = 0.5, 1.0, 0.01


def run_token(spec: str) -> str:
    """How the URL names a run: ``FOLDER/RUN`` or ``FOLDER/RUN@EPOCH`` with the folder's public label (the
    bundled demo is ``demo``); never a server path. Links are resolved only against the offered runs."""
    ref = RunRef.parse(spec)
    name = folders.run_label(str(ref.path))  # FOLDER/RUN, the folder by its public label
    demo = next((f.label for f in folders.configured_folders() if f.bundled), None)
    if demo and name.startswith(demo + "/"):
        name = "demo" + name[len(demo):]
    return name if ref.epoch is None else f"{name}@{ref.epoch}"


def _token_parts(token: str) -> tuple[str, str | None]:
    """A run token from a URL, ``FOLDER/RUN`` or ``FOLDER/RUN@EPOCH``, as its run and the epoch as typed (None: no
    epoch). Unlike ``RunRef.parse`` it takes any text after the '@': a link with a bad epoch still names its run."""
    run, at, epoch = token.rpartition("@")
    return (run, epoch) if at and "/" not in epoch else (token, None)


def _resolve_token(token: str, specs: list[str]) -> str | None:
    """The offered spec a token names; a checkpoint token falls back to its run on pages without checkpoints."""
    by_token = {run_token(s): s for s in specs}
    return by_token.get(token) or by_token.get(_token_parts(token)[0])


def _remember(key: str, shared: str, convert: Callable[[Any], Any] = lambda value: value) -> None:
    """A shared picker's on_change: the widget's value (``convert``ed) becomes the session's choice."""
    st.session_state[shared] = convert(st.session_state[key])
    st.session_state.pop(_FROM_URL + shared, None)


def _from_url_once(param: str) -> str | None:
    """The URL's value of ``param`` the first time a session asks (a fresh tab, a reload, a bookmark); later
    the session's own choice wins and the URL only follows it."""
    flag = f"url_read_{param}"
    if st.session_state.get(flag):
        return None
    st.session_state[flag] = True
    value = st.query_params.get(param)
    return None if value is None else str(value)


def url_int(text: str, limit: int = 10**6) -> int | None:
    """A whole number from the URL: ASCII digits only (not "²" or "１"), at most ``limit``; None otherwise."""
    text = str(text).strip()
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(limit)):
        return None
    value = int(text)
    return value if value <= limit else None


def _note(message: str) -> None:
    """Say (once, where the widget is) that the URL named something this server cannot show."""
    st.info(message)


def _quoted(value: str) -> str:
    """A value from the URL as a code span it cannot leave (see ``plain_text.code``), of bounded length."""
    value = value.strip()
    return code(value if len(value) <= 60 else value[:57] + "...")


def _shared_run(all_specs: list[str]) -> str | None:
    """The session's run token: chosen on some page, else named by the URL (checked against every offered
    run and checkpoint; an unknown one gives a gentle note and the page's default)."""
    token = _from_url_once(RUN_PARAM)
    if token is not None and SHARED_RUN not in st.session_state:
        base, epoch = _token_parts(token)
        if epoch is not None and url_int(epoch) is not None:  # RUN@0020 is RUN@20
            token = f"{base}@{url_int(epoch)}"
        spec = _resolve_token(token, all_specs)
        if spec is None:
            _note(f"The link names the run {_quoted(token)}, which this server does not offer (any more); "
                  "showing the default run instead.")
        else:
            if run_token(spec) != token and not _final_epoch(spec, epoch):  # RUN@EPOCH, EPOCH not a checkpoint
                _note(f"The link's epoch {_quoted(epoch)} is not a saved checkpoint of {_quoted(base)}; showing its "
                      "final weights instead.")
            st.session_state[SHARED_RUN] = run_token(spec)  # the URL follows (sync_url_state)
    return st.session_state.get(SHARED_RUN)


def _final_epoch(spec: str, epoch: str | None) -> bool:
    """Whether ``epoch`` (from a URL) is the epoch of the run's final weights (``spec``: the run)."""
    try:
        return url_int(str(epoch)) == run_store.weights_epoch(RunRef.parse(spec).path / MODEL)
    except (ModaError, OSError):
        return False


def parse_tau(value: str) -> float | None:
    """τ from a URL value: a number in [0.5, 1.0], rounded to the slider's step; None if it is not one."""
    try:
        tau = float(str(value).strip())
    except ValueError:
        return None
    if not math.isfinite(tau) or not TAU_MIN - 1e-9 <= tau <= TAU_MAX + 1e-9:
        return None
    return round(min(max(tau, TAU_MIN), TAU_MAX), 2)


def shared_tau() -> float:
    """The session's τ: chosen on some page, else the URL's ``?tau=`` if valid, else ``DEFAULT_TAU``."""
    value = _from_url_once(TAU_PARAM)
    if value is not None and SHARED_TAU not in st.session_state:
        tau = parse_tau(value)
        if tau is None:
            _note(f"The link's τ {_quoted(value)} is not a number between {TAU_MIN} and {TAU_MAX}; "
                  f"using τ = {DEFAULT_TAU:.2f}.")
        else:
            st.session_state[SHARED_TAU] = tau
    return float(st.session_state.get(SHARED_TAU, DEFAULT_TAU))


def sync_url_state(page: str = "") -> None:
    """Before every page (app.py; ``page``: its URL path): take the session's run and τ (and Activations' point
    and image) from the URL on a fresh session (a reload, a bookmark; an unknown run or an invalid τ gets a
    gentle note and the defaults) or after Back and Forward, and keep them in the URL on pages without their
    pickers, so a reload anywhere keeps them."""
    try:
        follow_browser()
        tau = shared_tau()
        if SHARED_TAU in st.session_state:
            _set_url(TAU_PARAM, f"{tau:.2f}")
        # a link that names a run: check it on the session's first run (a page with a run picker does too)
        if not st.session_state.get(f"url_read_{RUN_PARAM}") and RUN_PARAM in st.query_params:
            _shared_run(folders.loadable_specs(folders.list_runs(), with_checkpoints=True))
        if SHARED_RUN in st.session_state:
            _set_url(RUN_PARAM, st.session_state[SHARED_RUN])
        for param, key in ((POINT_PARAM, SHARED_POINT), (IMAGE_PARAM, SHARED_IMAGE)):
            value = _from_url_once(param)
            if value is not None and key not in st.session_state:
                st.session_state[key] = value[:200]  # checked by the page that shows it (point_picker, image_picker)
                st.session_state[_FROM_URL + key] = True
            if key in st.session_state:  # a linked value not checked yet (its page not shown yet) stays too
                _set_url(param, str(st.session_state[key]))
        if st.session_state.get(_URL_PAGE) != page:
            # a page switch empties the browser's address while the server's copy keeps the query string, which
            # Streamlit then sends only when it changes: send it once, so the new page's address holds it too
            st.session_state[_URL_PAGE] = page
            st.query_params.from_dict(st.query_params.to_dict())
    except Exception:  # noqa: BLE001 - the URL is a convenience: never stop a page over it
        LOG.exception("could not sync the run and τ with the URL")


# ----- Activations' point and test image: kept for the session and in the URL once chosen -------------

SHARED_POINT, SHARED_IMAGE = "shared_point", "shared_image"  # session keys (a point's name, an image index)
POINT_PARAM, IMAGE_PARAM = "point", "image"  # the URL's query parameters (&point=features.7.relu&image=42)
_FROM_URL = "from_url_"  # session flag: the value came from the URL and is not checked yet


def _checked_choice(shared: str, param: str, valid: Callable[[Any], Any], what: str, fallback: str) -> Any:
    """The session's choice for ``shared`` made valid for this page (``valid`` returns the value or None).
    A value the URL named that this run does not have gets a gentle note, once, and is forgotten; a choice
    made on another run (another model's points, say) is kept for when that run comes back."""
    if shared not in st.session_state:
        return None
    value = valid(st.session_state[shared])
    if st.session_state.pop(_FROM_URL + shared, None):
        if value is None:
            _note(f"The link's {what} {_quoted(str(st.session_state[shared]))} is not one of this run's; "
                  f"showing {fallback} instead.")
            del st.session_state[shared]
            _drop_url(param)
        else:
            st.session_state[shared] = value
    return value


def point_picker(container: DeltaGenerator, points: list[str], default: str, key: str, help: str | None = None) -> str:
    """Activations' point: the session's chosen point when this run has it, else the point last shown (when this
    run has it: two runs are compared at one layer), else ``default`` (the run's most class-specific point); a
    visitor's choice is kept across pages and reloads (``?point=``)."""
    chosen = _checked_choice(SHARED_POINT, POINT_PARAM, lambda p: p if p in points else None, "activation point",
                             "the run's most class-specific point")
    if chosen is None:
        chosen = st.session_state.get(key) if st.session_state.get(key) in points else default
    st.session_state[key] = chosen  # set before the widget exists: no index, or Streamlit warns
    point = container.selectbox("Activation point", points, key=key, help=help, on_change=_remember,
                                args=(key, SHARED_POINT))
    if st.session_state.get(SHARED_POINT) == point:
        _set_url(POINT_PARAM, point)
    elif POINT_PARAM in st.query_params:  # the session's point is another run's: the URL names none
        _drop_url(POINT_PARAM)
    return point


def parse_image(value: Any, count: int) -> int | None:
    """A test image index from the URL or the session: a whole number in [0, count); None if not one."""
    try:
        index = int(str(value).strip())
    except ValueError:
        return None
    return index if 0 <= index < count else None


def image_picker(label: str, count: int, key: str) -> int:
    """Activations' test image (0 … count−1): the session's chosen image, kept across pages and reloads
    (``?image=``); 0 until one is chosen."""
    chosen = _checked_choice(SHARED_IMAGE, IMAGE_PARAM, lambda v: parse_image(v, count), "test image", "image 0")
    if chosen is None:
        chosen = parse_image(st.session_state.get(key, 0), count) or 0
    st.session_state[key] = chosen
    index = int(st.number_input(label, min_value=0, max_value=count - 1, key=key, on_change=_remember,
                                args=(key, SHARED_IMAGE)))
    if SHARED_IMAGE in st.session_state and parse_image(st.session_state[SHARED_IMAGE], count) == index:
        _set_url(IMAGE_PARAM, str(index))
    return index


# ----- the URL: follows the visitor's choices, followed on Back and Forward ----------------------------

_URL_PAGE = "url_page"  # session key: the page the last run showed
# every query parameter a page keeps in the URL, with the session keys that hold the choice it names:
# after Back or Forward the URL's value wins again, as on a fresh visit
_URL_STATE: dict[str, tuple[str, ...]] = {}


def url_param(param: str, *session_keys: str) -> None:
    """Register a page's query parameter and the session keys its value lives in (see ``follow_browser``)."""
    _URL_STATE[param] = session_keys


def _set_url(param: str, value: str) -> None:
    if st.query_params.get(param) != value:
        st.query_params[param] = value  # the address changes in place (HISTORY_SCRIPT): no history entry


def _drop_url(param: str) -> None:
    if param in st.query_params:
        del st.query_params[param]


_URL_STATE.update({RUN_PARAM: (SHARED_RUN,), TAU_PARAM: (SHARED_TAU,), POINT_PARAM: (SHARED_POINT,),
                   IMAGE_PARAM: (SHARED_IMAGE,)})


def linked_choice(param: str, key: str, options: Sequence[Any], parse: Callable[[str], Any], what: str) -> None:
    """Before a page's widget ``key``: the value the URL names under ``param`` (on a fresh visit, or after Back
    or Forward) becomes the widget's choice when ``parse`` makes it one of ``options``; else a gentle note."""
    url_param(param, key)
    value = _from_url_once(param)
    if value is None:
        return
    chosen = parse(value)
    if chosen is not None and chosen in options:
        st.session_state[key] = chosen
    else:
        _note(f"The link's {what} {_quoted(value)} is not one this page offers; showing the default instead.")


def linked_value(param: str, key: str, *more_keys: str) -> str | None:
    """The URL's value under ``param`` when a page should take it (a fresh visit, Back or Forward), for the
    page to check and put in its widget ``key``'s state (and ``more_keys``', when it names several); None
    otherwise."""
    url_param(param, key, *more_keys)
    return _from_url_once(param)


def linked_classes(param: str, key: str, count: int, most: int) -> list[int] | None:
    """The classes the URL's ``param`` names (``?classes=0,3``: logit positions, each below ``count``; the first
    ``most`` entries, in order, without repeats) when a page should take them (``linked_value``, for its widget
    ``key``); a note and None when it names none of this run's; None without a link."""
    linked = linked_value(param, key)
    if linked is None:
        return None
    picked = list(dict.fromkeys(c for c in (url_int(text) for text in linked.split(",")[:most])
                                if c is not None and c < count))
    if not picked:
        st.info(f"The link's classes {code(linked[:40])} are not this run's; showing the first two instead.")
    return picked or None


def link(param: str, value: str) -> None:
    """Keep a page's choice in the URL under ``param``."""
    _set_url(param, value)


# The browser's history holds one entry per page visited: a change of the query string alone (a τ, a run,
# classes) replaces the current entry instead of adding one, so Back returns to the previous page as the
# visitor left it. Streamlit's front end adds an entry for every change of the address; this script (ours,
# constant, no visitor input) makes an address change within the same page a replacement.
HISTORY_SCRIPT = """<script>
(() => {
  const w = window.parent && window.parent.history ? window.parent : window;
  if (w.__modaHistory) return;
  w.__modaHistory = true;
  const push = w.history.pushState.bind(w.history);
  w.history.pushState = (state, title, url) => {
    const next = new URL(url, w.location.href);
    return next.pathname === w.location.pathname ? w.history.replaceState(state, title, url)
                                                 : push(state, title, url);
  };
})();
</script>"""


def one_history_entry_per_page() -> None:
    """Install ``HISTORY_SCRIPT`` in the visitor's page (once per page load; invisible)."""
    st.html(HISTORY_SCRIPT, unsafe_allow_javascript=True)


def _history_navigation() -> bool:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return bool(getattr(ctx, "is_history_navigation", False))


def follow_browser() -> None:
    """Before the page: after Back or Forward, what the address names wins again, as on a fresh visit (a page
    switch by the sidebar empties the address: that is not a choice, and the session's choices stay)."""
    if not _history_navigation():
        return
    for param, keys in _URL_STATE.items():
        st.session_state.pop(f"url_read_{param}", None)  # _from_url_once reads it again
        for key in keys:
            st.session_state.pop(key, None)


def _healthy(spec: str, runs: list[RunSummary]) -> bool:
    path = RunRef.parse(spec).path
    return any(s.path == path and s.status is folders.HEALTHY for s in runs)


def load_or_stop(spec: str) -> Run:
    """Load a run or show why it does not load (no server paths) and stop the page."""
    run, error = engine.try_load(spec)
    if error:
        st.error(f"This run does not load: {plain(error)}")
        st.stop()
    return run


def composable_or_stop(spec: str) -> None:
    """Stop the page, saying why, when a run's model cannot be composed (e.g. a forward fx cannot trace)."""
    reason = engine.composition_blocker(spec)
    if reason:
        st.info(f"Run {code(folders.run_label(spec))} trains and decomposes, but cannot be composed: "
                f"{plain(reason)}. Its activations are on the Activations page.")
        st.stop()
    sentence = limits_sentence(engine.graph_limits(spec))
    if sentence:
        st.caption(sentence)


def limits_sentence(limits: dict) -> str:
    """One sentence on what composition keeps whole (by reason, with counts) and on points that reach the logits
    directly; empty when there is nothing to say."""
    reasons: dict[str, int] = {}
    for _, reason in limits.get("kept_whole", []):
        reasons[reason] = reasons.get(reason, 0) + 1
    parts = []
    if reasons:
        listed = "; ".join(f"{count} × {plain(reason)}" for reason, count in reasons.items())
        parts.append(f"Every module of this model keeps some operations whole ({listed}): exact, only not smaller "
                     "there.")
    if limits.get("logit_points"):
        names = ", ".join(code(p) for p in limits["logit_points"])
        parts.append(f"Point {names} reaches the logits with no weights between, so a module can drop its own "
                     "class's logit.")
    return " ".join(parts)


def tau_slider(key: str = "tau") -> float:
    """The τ slider; every page's slider shows the session's one τ (see ``shared_tau``), and the URL follows."""
    st.session_state[key] = shared_tau()  # set before the widget exists: no value argument, or Streamlit warns
    meaning = "a unit joins a class module when it fires on at least τ of the class's samples"
    # on a projector the slider shares its row with the run's picker (``controls_row``): the meaning in its help
    label, help_text = ("Threshold τ", meaning.capitalize() + ".") if presenting() else \
        (f"Threshold τ ({meaning})", None)
    tau = st.slider(label, min_value=TAU_MIN, max_value=TAU_MAX, step=TAU_STEP, key=key, on_change=_remember,
                    args=(key, SHARED_TAU, float), help=help_text)
    _set_url(TAU_PARAM, f"{tau:.2f}")
    return float(tau)


def controls_row(count: int = 2) -> list[Any]:
    """Places for a page's first controls (the run's picker, the τ slider, …): side by side in projector mode, so
    the page's key chart keeps its room on the first screen, one under another otherwise."""
    if presenting():
        return list(st.columns(count, vertical_alignment="bottom"))
    return [st.container() for _ in range(count)]


def is_modular(summary: RunSummary) -> bool:
    """Whether a listed run was trained to come apart into modules (MODA or MwT, not standard training)."""
    return summary.modular


def default_index(summaries: list[RunSummary], *predicates: Callable[[RunSummary], bool]) -> int:
    """Position (among the runs a page can open) of the default run: the first complete run matching the
    first predicate that any complete run matches, else the first complete run, else 0. Broken,
    interrupted and running runs are never the default."""
    runs = [s for s in summaries if folders.openable(s)]
    healthy = [i for i, s in enumerate(runs) if s.status is folders.HEALTHY]
    for predicate in predicates:
        index = next((i for i in healthy if predicate(runs[i])), None)
        if index is not None:
            return index
    return healthy[0] if healthy else 0


def modular_demo_first(summary: RunSummary) -> bool:
    """Default pick for pages about one MODA run: the bundled ``vgg11-moda``."""
    return summary.name == "vgg11-moda"


# ----- projector mode: large chart text, legends on top, compact headers; kept across pages and in the URL ----

PRESENTING = "presenting"  # session key (the sidebar toggle's)
PRESENT_PARAM = "present"  # the URL's query parameter (?present=1)
_URL_STATE[PRESENT_PARAM] = (PRESENTING,)
# compact headers and readable body text, so a page's key chart and its control fit on a 1280×800 projector; the
# paragraph under each page's title (what the lecturer says aloud) is left out
PROJECTOR_CSS = """<style>
[data-testid="stMainBlockContainer"] { padding-top: 3rem; padding-bottom: 1rem; }
[data-testid="stElementContainer"]:has(h1) + [data-testid="stElementContainer"]:has([data-testid="stCaptionContainer"])
  { display: none; }
[data-testid="stMainBlockContainer"] h1 { font-size: 2rem; }
[data-testid="stMainBlockContainer"] h2, [data-testid="stMainBlockContainer"] h3 { font-size: 1.4rem;
  padding: 0.5rem 0 0.25rem 0; }
[data-testid="stMainBlockContainer"] p, [data-testid="stMainBlockContainer"] li { font-size: 1.1rem; }
[data-testid="stCaptionContainer"], [data-testid="stCaptionContainer"] p { font-size: 1rem; }
[data-testid="stVerticalBlock"] { gap: 0.4rem; }
[data-testid="stMainBlockContainer"] [data-testid="stMetricValue"],
[data-testid="stMainBlockContainer"] [data-testid="stMetricValue"] p { font-size: 2.25rem; }
[data-testid="stMainBlockContainer"] :is([data-testid="stSelectbox"], [data-testid="stMultiSelect"])
  :is(input, [data-tag] span),
[role="listbox"] [role="option"], [role="listbox"] [role="option"] *, [data-testid="stSliderThumbValue"],
[data-testid="stMainBlockContainer"] [data-testid="stTable"] :is(th, td), [data-testid="stMainBlockContainer"] input
  { font-size: 1.15rem; }
[data-testid="stMainBlockContainer"] [data-testid="stMetricDelta"] div,
[data-testid="stMainBlockContainer"] [data-testid="stMetricDelta"] p
  { white-space: normal; overflow: visible; text-overflow: clip; }
</style>"""


def presenting() -> bool:
    """Whether this session shows the dashboard in projector mode."""
    return bool(st.session_state.get(PRESENTING))


def projector_toggle() -> None:
    """The sidebar's projector-mode switch: from the URL (``?present=1``) on a fresh visit, then the visitor's;
    kept across pages and reloads."""
    value = _from_url_once(PRESENT_PARAM)
    if value is not None and PRESENTING not in st.session_state:
        st.session_state[PRESENTING] = value.strip().lower() in ("1", "true", "yes", "on")
    st.toggle("Projector mode", key=PRESENTING,
              help="Larger chart text, legends above the curves and compact headers, for a lecture hall.")
    if presenting():
        _set_url(PRESENT_PARAM, "1")
        st.html(PROJECTOR_CSS)
    else:
        _drop_url(PRESENT_PARAM)


def table(data: Any, column_config: dict[str, Any] | None = None, formats: dict[str, str] | None = None,
          where: Any = None, **options: Any) -> Any:
    """Show a table (in ``where``; default the page): a data grid (sortable; point at a column's name for
    ``column_config``'s help), or in projector mode a plain table of the same rows, whose text the projector's
    style makes large (a grid draws its text on a canvas, at its own small size). ``formats``: column → printf
    format of its numbers in the plain table (the grid's ``column_config`` formats them there)."""
    if not presenting():
        return (where or st).dataframe(data, column_config=column_config, **options)
    import pandas as pd

    frame = pd.DataFrame(data)
    for column, pattern in (formats or {}).items():
        frame[column] = ["—" if value is None or value != value else pattern % value for value in frame[column]]
    return (where or st).table(frame, hide_index=options.get("hide_index"))


def chart(fig: Any, key: str, where: Any = None, **options: Any) -> Any:
    """Show a plotly figure (in ``where``, a column or container; default the page), made for a projector when
    the session is in projector mode (``figures.style.for_projector``). ``options`` go to ``plotly_chart``."""
    from dashboard.figures.style import fit_for_page, for_projector

    # a column is narrower than the page: titles and legends wrap sooner; in projector mode the sidebar starts
    # closed, and the page is wider
    if presenting():
        fig = for_projector(fig, width=540 if where is not None else 1100)
    else:
        fig = fit_for_page(fig, width=380 if where is not None else 860)
    return (where or st).plotly_chart(fig, key=key, **options)
