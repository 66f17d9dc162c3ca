"""``busi notebooks``: run every numbered lesson notebook in order with papermill.

Outputs (``<out>/NN_name.ipynb``, ``<out>/NN_name/``, ``summary.csv``, ``summary.md``), parameters and the stop at the
first failing notebook: notebooks/README.md ("All at once"). Kernels get ``BUSI_STATIC_WIDGETS=1``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import papermill as pm
import yaml
from papermill.cli import _resolve_type
from papermill.exceptions import PapermillExecutionError

from busi_lib.errors import (
    BusiDataError,
    NotebookFailed,  # defined with the library's other errors
)
from busi_lib.evaluation.study import collect_models, write_summary
from busi_lib.files import atomic_write_bytes
from busi_lib.profiles import check_profile
from busi_lib.ui.notebook import default_runs_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"

# Per-cell limits (seconds): a smoke cell that takes minutes is a bug; a cpu/gpu cell trains a model.
CELL_TIMEOUT = {"smoke": 300, "cpu": 4 * 3600, "gpu": 4 * 3600}



@dataclass
class BatchResult:
    out: Path
    times: dict[str, float] = field(default_factory=dict)
    summary_csv: Path | None = None
    summary_md: Path | None = None


def numbered_notebooks(folder: str | Path = NOTEBOOK_DIR, only: Iterable[str] | None = None) -> list[Path]:
    """``NN_*.ipynb`` in ``folder``, in order; ``only``: keep names starting with one of these prefixes."""
    nbs = sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if only:
        nbs = [p for p in nbs if any(p.stem.startswith(str(o)) for o in only)]
    if not nbs:
        which = f" matching {only}" if only else ""
        raise BusiDataError(folder, f"no numbered notebooks (NN_name.ipynb){which}")
    return nbs


def parse_value(text: str) -> object:
    """A ``-p`` value: papermill's rules (True/False/None, int, float), then YAML for lists and mappings."""
    value = _resolve_type(text)
    if not isinstance(value, str):
        return value
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return parsed if isinstance(parsed, (list, dict, bool, int, float)) else text


@contextmanager
def kernel_environment(profile: str) -> dict[str, str]:
    """Environment variables the kernels inherit during the batch (restored afterwards)."""
    changes = {"BUSI_STATIC_WIDGETS": "1", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    if profile == "smoke":
        changes["TQDM_DISABLE"] = "1"  # tqdm >= 4.66 reads it: no progress bars in test runs
    old = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def failing_cell(executed: Path) -> tuple[int | None, str]:
    """Index and source of the cell papermill marked as failed or still running in an executed notebook."""
    try:
        nb = nbformat.read(executed, as_version=4)
    except Exception:  # the copy may be missing or half-written after a crash
        return None, ""
    for i, cell in enumerate(nb.cells):
        pm = cell.get("metadata", {}).get("papermill", {})
        if pm.get("exception") or pm.get("status") in ("running", "failed"):
            return i, cell.get("source", "")
    return None, ""


def run_notebook(path: Path, out: Path, parameters: dict, cell_timeout: int) -> float:
    """Execute one notebook into ``out/<name>.ipynb``; seconds taken, or :class:`NotebookFailed`."""
    executed = out / path.name
    t0 = time.time()
    try:
        pm.execute_notebook(
            str(path),
            str(executed),
            parameters=parameters,
            kernel_name="python3",
            progress_bar=False,
            cwd=str(path.parent),
            execution_timeout=cell_timeout,
            # ipykernel's warning that its local TCP link is not encrypted, and "KeyboardInterrupt caught" at
            # shutdown, would be printed for every notebook; papermill, not this log, reports a failing cell.
            extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
        )
    except PapermillExecutionError as e:
        raise NotebookFailed(path.stem, e.cell_index, f"{e.ename}: {e.evalue}", executed, e.source) from None
    except Exception as e:  # timeouts, dead kernels: papermill saved the copy with the cell's status
        cell, source = failing_cell(executed)
        raise NotebookFailed(path.stem, cell, f"{type(e).__name__}: {e}", executed, source) from None
    return time.time() - t0


def run_notebooks(
    profile: str,
    data: str | Path | None = None,
    out: str | Path | None = None,
    params: dict | None = None,
    *,
    folder: str | Path = NOTEBOOK_DIR,
    only: Iterable[str] | None = None,
    cell_timeout: int | None = None,
    log: Callable[[str], None] = print,
) -> BatchResult:
    """Run the numbered notebooks in order, then write the summary table; stops at the first failure."""
    check_profile(profile)
    out = Path(out).expanduser().resolve() if out else default_runs_dir()
    out.mkdir(parents=True, exist_ok=True)
    parameters = {**(params or {}), "profile": profile, "out_dir": str(out)}
    if data:
        data = Path(data).expanduser().resolve()
        if not data.is_dir():  # say so now, not from inside the first notebook's kernel

            raise BusiDataError(data, "data folder does not exist")
        parameters["data_dir"] = str(data)
    notebooks = numbered_notebooks(folder, only)
    timeout = cell_timeout or CELL_TIMEOUT[profile]
    result = BatchResult(out)
    log(f"running {len(notebooks)} notebooks, profile {profile}, into {out}")
    with kernel_environment(profile):
        for i, nb in enumerate(notebooks, 1):
            log(f"[{i}/{len(notebooks)}] {nb.stem} ...")
            secs = run_notebook(nb, out, parameters, timeout)
            result.times[nb.stem] = round(secs, 1)
            log(f"[{i}/{len(notebooks)}] {nb.stem} done in {secs:.1f} s")
    table = collect_models(out)
    result.summary_csv, result.summary_md = write_summary(table, out)
    _append_times(result)
    log(f"{len(table)} models in {result.summary_md}; total {sum(result.times.values()):.0f} s")
    return result


def _append_times(result: BatchResult) -> None:
    """Add the notebooks' run times to ``summary.md``."""
    lines = ["", "## Notebook run times", "", "| notebook | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in result.times.items()]
    text = result.summary_md.read_text() + "\n".join(lines) + "\n"
    atomic_write_bytes(result.summary_md, text.encode())
