"""The student's seat: every lesson notebook run in a real JupyterLab, in headless Chromium.

For each ``notebooks/NN_*.ipynb`` (copied into a temporary folder; the
repository's notebooks are never touched) the test opens the notebook in
JupyterLab, runs all cells in the ``smoke`` profile with live widgets, waits for
the kernel, and fails on any red box: an error or anything written on stderr
(JupyterLab renders both with the mime type ``application/vnd.jupyter.stderr``).
In a notebook with a slider widget (01 and 06 must have one) it drags the first
slider with the mouse and checks that the widget's text and picture change.
A screenshot of every notebook's end (and of each moved widget) is saved in
``$BUSI_BROWSER_OUT`` (default: pytest's temporary folder).

Needs Chromium and the ``playwright`` Python package (not its downloaded
browsers: ``playwright install`` is not used, the system Chromium is)::

    apt-get install chromium        # Debian/Ubuntu; or set BUSI_CHROMIUM=/path/to/chrome
    pip install playwright          # part of the [dev] extra

Settings: ``BUSI_BROWSER_NOTEBOOKS`` (a glob, default ``notebooks/[0-9][0-9]_*.ipynb``),
``BUSI_BROWSER_TIMEOUT`` (seconds per notebook, default 300).
The default suite runs 01 this way (the data lesson and its slider; every notebook also runs under nbval);
``pytest -m extended`` (and CI) runs all seven in file order in one output folder,
as a student would run them: a later notebook reads the results of the earlier ones.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PATTERN = os.environ.get("BUSI_BROWSER_NOTEBOOKS", str(ROOT / "notebooks" / "[0-9][0-9]_*.ipynb"))
NOTEBOOKS = sorted(Path(p) for p in __import__("glob").glob(PATTERN))
TIMEOUT = float(os.environ.get("BUSI_BROWSER_TIMEOUT", "300"))
NEEDS_SLIDER = ("01_", "06_")  # notebooks whose widgets the test must move
# The default suite runs one notebook in the browser: every notebook already runs under nbval, and the
# browser adds the front end (widgets, red boxes, figure sizes), which 01 has all of in its first minute.
# `-m extended` (CI) runs all seven in order, training notebooks included.
QUICK_PREFIXES = ("01_",)
QUICK = [p for p in NOTEBOOKS if p.name.startswith(QUICK_PREFIXES)]
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI containers run as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# JupyterLab user settings for the test: every cell stays in the DOM (the default windowing leaves
# off-screen cells out, so their red boxes could not be seen), and no news/update pop-up covers the page.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": '{"windowingMode": "none"}',
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": '{"fetchNews": "false", '
    '"checkForUpdates": false}',
}


def _chromium() -> str:
    for c in (
        os.environ.get("BUSI_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        shutil.which("google-chrome"),
    ):
        if c and Path(c).exists():
            return c
    pytest.skip("Chromium not found: install it (Debian/Ubuntu: apt-get install chromium) or set BUSI_CHROMIUM")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workdir(module_tmp) -> Path:
    (module_tmp / "jupyterlab").mkdir()
    return module_tmp / "jupyterlab"


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    out = os.environ.get("BUSI_BROWSER_OUT")
    path = Path(out) if out else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def lab(workdir):
    """A JupyterLab server on a free local port with a token; yields its base URL and token."""
    pytest.importorskip("jupyterlab", reason="pip install jupyterlab")
    home = workdir / "home"
    for name, text in LAB_SETTINGS.items():
        f = home / "lab-settings" / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    (workdir / "notebooks").mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        # BUSI_DATA_DIR stays: on CI the student's seat is tested on the real BUSI
        if k not in ("MPLBACKEND", "BUSI_STATIC_WIDGETS", "PYTHONWARNINGS", "JPY_SESSION_NAME")
    }
    env.update(
        BUSI_PROFILE="smoke",  # given to the server, so every kernel it starts inherits it
        BUSI_RUNS_DIR=str(workdir / "runs"),
        JUPYTERLAB_SETTINGS_DIR=str(home / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        IPYTHONDIR=str(home / "ipython"),
    )
    env.setdefault("OMP_NUM_THREADS", "1")
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={workdir}",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run commands as the menus do
        "--LabApp.extension_manager=readonly",  # no PyPI queries from the extension manager
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers run as root
    log = (workdir / "jupyterlab.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"JupyterLab did not start; its log:\n{(workdir / 'jupyterlab.log').read_text()[-3000:]}")
        time.sleep(0.5)
    yield {"url": url, "token": token, "dir": workdir / "notebooks", "log": workdir / "jupyterlab.log"}
    proc.terminate()  # the server shuts its kernels down on SIGTERM
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    chromium = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download needed)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


# --- JavaScript run in the page ------------------------------------------------------------------
JS_NOTEBOOK = (
    "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
    " return !!(w && w.content && w.sessionContext); }"
)
JS_READY = (
    "async () => { const w = window.jupyterapp.shell.currentWidget; await w.context.ready;"
    " await w.sessionContext.ready; return w.sessionContext.session.kernel.status; }"
)
JS_RUN_ALL = """() => {
  window.__busiRun = 'running';
  window.jupyterapp.commands.execute('notebook:run-all-cells').then(
    r => { window.__busiRun = 'done'; }, e => { window.__busiRun = 'failed: ' + e; });
}"""
JS_STATE = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')]
    .map(p => p.textContent.trim());
  return {run: window.__busiRun, kernel: kernel ? kernel.status : 'none', prompts};
}"""
JS_RED_BOXES = """() => {
  const cells = [...document.querySelectorAll('.jp-Notebook .jp-Cell')];
  const bad = [...document.querySelectorAll(
      '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')];
  const broken = [...document.querySelectorAll('.jp-OutputArea-output')]
      .filter(o => /Error displaying widget|IProgress not found/.test(o.textContent));
  return [...new Set([...bad, ...broken])].map(o => ({
    cell: cells.findIndex(c => c.contains(o)),
    text: o.textContent.slice(0, 1500),
  }));
}"""
JS_IMAGES = """() => {
  const cells = [...document.querySelectorAll('.jp-Notebook .jp-Cell')];
  return [...document.querySelectorAll('.jp-OutputArea-output img')].map(i => ({
    cell: cells.findIndex(c => c.contains(i)), width: i.getBoundingClientRect().width, natural: i.naturalWidth,
  }));
}"""
MIN_FIGURE_PX = 250  # narrower than this, a figure's labels are too small to read

JS_SCROLL_END = (
    "() => { const c = document.querySelectorAll('.jp-Notebook .jp-Cell');"
    " c[c.length - 1].scrollIntoView({block: 'end'}); }"
)
JS_SHUTDOWN = "async () => { await window.jupyterapp.shell.currentWidget.sessionContext.shutdown(); }"


def _wait(page, js: str, ok, timeout: float, what: str):
    deadline = time.time() + timeout
    while True:
        value = page.evaluate(js)
        if ok(value):
            return value
        if time.time() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last state: {value}")
        time.sleep(0.5)


def _widget_view(output):
    """What a widget output shows: its HTML texts and image sources."""
    return (
        [h.inner_text() for h in output.locator(".widget-html-content").all()],
        [i.get_attribute("src") for i in output.locator("img").all()],
    )


def _move_first_slider(page, nb_name: str, shots: Path) -> None:
    outputs = page.locator(".jp-OutputArea-output").filter(has=page.locator(".widget-slider"))
    if outputs.count() == 0:
        if nb_name.startswith(NEEDS_SLIDER):
            pytest.fail(f"{nb_name}: no slider widget rendered (expected a live ipywidgets slider)")
        return
    output = outputs.first
    slider = output.locator(".widget-slider").first
    output.scroll_into_view_if_needed()
    before = _widget_view(output)
    track = slider.locator(".noUi-target, .slider").first.bounding_box()
    handle = slider.locator(".noUi-handle").first.bounding_box()
    assert track and handle, f"{nb_name}: the slider has no visible track or handle"
    x0, y0 = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
    # Drag the handle a third of the track away from where it is, like a student would.
    frac = (x0 - track["x"]) / track["width"]
    x1 = track["x"] + track["width"] * (frac + 1 / 3 if frac < 0.5 else frac - 1 / 3)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y0, steps=8)
    page.mouse.up()
    deadline = time.time() + 60
    while (after := _widget_view(output)) == before or after[0] == before[0] or after[1] == before[1]:
        if time.time() > deadline:
            pytest.fail(
                f"{nb_name}: moving the slider did not change the widget's text and picture\n"
                f"before: {before[0]}\nafter: {after[0]}"
            )
        time.sleep(0.3)
    output.screenshot(path=str(shots / f"{Path(nb_name).stem}_widget.png"))


def _notebook_runs_clean(notebook: Path, lab, browser, shots) -> None:
    shutil.copy2(notebook, lab["dir"] / notebook.name)  # a copy: the repository's notebook stays untouched
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(
            f"{lab['url']}/lab/tree/notebooks/{notebook.name}?reset&token={lab['token']}",
            wait_until="domcontentloaded",
            timeout=120_000,
        )
        _wait(page, JS_NOTEBOOK, bool, 120, f"JupyterLab to open {notebook.name}")
        page.evaluate(JS_READY)
        _wait(page, JS_STATE, lambda s: s["kernel"] == "idle", 120, "the kernel to start")
        t0 = time.time()
        page.evaluate(JS_RUN_ALL)
        state = _wait(
            page,
            JS_STATE,
            lambda s: s["run"] != "running" and s["kernel"] == "idle" and not any("*" in p for p in s["prompts"]),
            TIMEOUT,
            f"{notebook.name} to finish running",
        )
        seconds = time.time() - t0
        red = page.evaluate(JS_RED_BOXES)
        page.evaluate(JS_SCROLL_END)
        page.screenshot(path=str(shots / f"{notebook.stem}.png"))
        assert not red, f"{notebook.name}: red output boxes after Run All ({seconds:.0f} s):\n" + "\n".join(
            f"--- cell {r['cell'] + 1} (counting every cell from 1):\n{r['text']}" for r in red
        )
        small = [f for f in page.evaluate(JS_IMAGES) if f["width"] < MIN_FIGURE_PX]
        assert not small, f"{notebook.name}: figures shown narrower than {MIN_FIGURE_PX} px: {small}"
        not_run = [i for i, p in enumerate(state["prompts"]) if not any(ch.isdigit() for ch in p)]
        assert not not_run, f"{notebook.name}: code cells {not_run} did not run (prompts {state['prompts']})"
        _move_first_slider(page, notebook.name, shots)
        print(f"{notebook.name}: ran clean in {seconds:.0f} s; screenshots in {shots}")
    finally:
        try:
            page.evaluate(JS_SHUTDOWN)  # free the kernel's memory before the next notebook
        except Exception:  # noqa: BLE001 - the page may already be gone; the server stops its kernels at the end
            pass
        page.close()


@pytest.mark.skipif(not QUICK, reason=f"no notebook matches {PATTERN} and {QUICK_PREFIXES}")
@pytest.mark.parametrize("notebook", QUICK, ids=[p.stem for p in QUICK])
def test_notebook_runs_clean_in_jupyterlab(notebook: Path, lab, browser, shots):
    """The default suite's seat: 01 (the data, its figures, a slider moved with the mouse)."""
    _notebook_runs_clean(notebook, lab, browser, shots)


@pytest.mark.extended
@pytest.mark.skipif(not NOTEBOOKS, reason=f"no notebook matches {PATTERN}")
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_notebook_in_order_runs_clean_in_jupyterlab(notebook: Path, lab, browser, shots):
    """All seven in file order in one folder, as a student runs them (06 and 07 read what 02-05 saved)."""
    _notebook_runs_clean(notebook, lab, browser, shots)
