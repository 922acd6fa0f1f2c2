"""Support for the end-to-end JupyterLab tests: a private JupyterLab server, headless Chromium, and the few
page actions the tests need (open a notebook, run all cells, wait for the kernel, read outputs).

The server runs the project's own Python (``sys.executable -m jupyterlab``) on a free loopback port with a
random token, in its own process group, with throw-away Jupyter config, data, runtime and settings folders.
The virtual environment's ``share/jupyter`` stays on ``JUPYTER_PATH`` so that its kernels and lab extensions
(the ipywidgets manager among them) load as they do for a person.

Chromium is Debian's (``/usr/bin/chromium``), driven by Playwright's Python client; Playwright's own browser
download is never used.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ENV = "LMISA_CHROMIUM"
# Without the networking flags Chromium keeps calling Google's services, which a closed network refuses.
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")
VIEWPORT = {"width": 1280, "height": 800}

# JupyterLab user settings written into the private settings folder.
LAB_SETTINGS = {
    # Every cell stays in the DOM, so widgets far down a long notebook can be found and measured.
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    # No news or update toasts over the screenshots (and no requests to the outside).
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}

_ACTIVE_NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"


def find_chromium() -> str | None:
    """Path of a Chromium executable: ``$LMISA_CHROMIUM``, else Debian's, else ``chromium`` on ``PATH``."""
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------- notebooks
def copy_notebooks(source: Path, destination: Path) -> Path:
    """Copy a notebook folder with every ``.ipynb`` stripped of outputs and execution counts.

    Other files are copied as they are, so notebooks that read files next to them still find them. Clearing
    outputs means everything the browser shows later comes from the run under test.

    Args:
        source: Folder to copy (e.g. the repository's ``notebooks/``).
        destination: New folder; must not exist.

    Returns:
        ``destination``.
    """
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    for path in destination.rglob("*.ipynb"):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        for cell in notebook.get("cells", []):
            if cell.get("cell_type") == "code":
                cell["outputs"] = []
                cell["execution_count"] = None
        path.write_text(json.dumps(notebook, indent=1), encoding="utf-8")
    return destination


# ---------------------------------------------------------------------------------------------- server
@dataclass
class LabServer:
    """A running JupyterLab server started by :func:`start_lab`."""

    process: subprocess.Popen
    url: str
    token: str
    root: Path
    state: Path
    log_path: Path
    env: dict[str, str] = field(repr=False, default_factory=dict)

    def api(self, path: str, *, method: str = "GET", timeout: float = 10.0) -> Any:
        """Call the server's REST API (``/api/...``) with the token; returns the decoded JSON (or None)."""
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def lab_url(self, notebook: str) -> str:
        """Browser address that opens ``notebook`` (a path relative to the root) in a fresh workspace."""
        return f"{self.url}/lab/tree/{notebook}?reset&token={self.token}"

    def log_tail(self, n: int = 40) -> str:
        """The last ``n`` lines of the server's log (for failure messages)."""
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return "\n".join(lines[-n:])

    def shutdown_kernels(self) -> None:
        """Shut every running kernel down (frees the CPU between notebooks)."""
        with contextlib.suppress(OSError, ValueError):
            for kernel in self.api("/api/kernels"):
                with contextlib.suppress(OSError):
                    self.api(f"/api/kernels/{kernel['id']}", method="DELETE", timeout=20.0)


def lab_environment(state: Path, *, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of the server: private Jupyter folders under ``state``, the venv's ``share/jupyter`` kept.

    Args:
        state: Folder for config, data, runtime, lab settings and workspaces (created).
        extra: Variables to add or override (e.g. ``{"LMISA_PROFILE": "quick"}``).

    Returns:
        A copy of ``os.environ`` with the Jupyter variables set.
    """
    folders = {name: state / sub for name, sub in (
        ("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"), ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"), ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces"),
        ("IPYTHONDIR", "ipython"))}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    for plugin, settings in LAB_SETTINGS.items():
        package, name = plugin.rsplit("/", 1)
        target = folders["JUPYTERLAB_SETTINGS_DIR"] / package / f"{name}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(settings), encoding="utf-8")
    env = dict(os.environ)
    env.pop("JUPYTER_PREFER_ENV_PATH", None)
    env.update({k: str(v) for k, v in folders.items()})
    venv_share = Path(sys.prefix) / "share" / "jupyter"
    env["JUPYTER_PATH"] = os.pathsep.join([str(venv_share), *filter(None, [os.environ.get("JUPYTER_PATH")])])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def start_lab(root: Path, state: Path, *, extra_env: Mapping[str, str] | None = None,
              timeout: float = 90.0) -> LabServer:
    """Start JupyterLab on a free 127.0.0.1 port serving ``root`` and wait until ``/api/status`` answers.

    Args:
        root: Folder the server shows (its notebooks are what the browser opens).
        state: Private folder for Jupyter's config, data, runtime, settings and the server log.
        extra_env: Extra environment variables for the server and its kernels.
        timeout: Seconds to wait for the server to answer.

    Returns:
        The running server; stop it with :func:`stop_lab` (also when a test fails).

    Raises:
        RuntimeError: If the server exits or does not answer in time (the message holds its log).
    """
    env = lab_environment(state, extra=extra_env)
    port, token = free_port(), secrets.token_hex(16)
    log_path = state / "jupyterlab.log"
    command = [sys.executable, "-m", "jupyterlab", "--no-browser",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
               "--ServerApp.terminals_enabled=False", "--LabApp.extension_manager=readonly",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--ServerApp.allow_root=True")  # CI containers run as root
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = LabServer(process=process, url=f"http://127.0.0.1:{port}", token=token, root=root, state=state,
                       log_path=log_path, env=env)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            stop_lab(server)
            raise RuntimeError(f"JupyterLab exited with code {process.returncode} before answering:\n"
                               f"{server.log_tail()}")
        try:
            server.api("/api/status", timeout=2.0)
            return server
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            stop_lab(server)
            raise RuntimeError(f"JupyterLab did not answer on {server.url} within {timeout:.0f} s:\n"
                               f"{server.log_tail()}")
        time.sleep(0.5)


def stop_lab(server: LabServer, *, grace: float = 15.0) -> None:
    """Stop the server and everything it started: SIGTERM to its process group, wait, then SIGKILL.

    Kernels run in their own sessions, so they are found by the private runtime folder named in their
    command line and ended by process id as well.
    """
    if server.process.poll() is None:
        server.shutdown_kernels()
    _end_group(server.process, grace)
    for pid in _pids_mentioning(str(server.env.get("JUPYTER_RUNTIME_DIR", server.state / "runtime"))):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _end_group(process: subprocess.Popen, grace: float) -> None:
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:
        pgid = None
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        elif process.poll() is None:
            process.send_signal(sig)
        try:
            process.wait(timeout=wait)
            if pgid is None or not _group_alive(pgid):
                return
        except subprocess.TimeoutExpired:
            continue


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _pids_mentioning(text: str) -> list[int]:
    """Process ids (other than ours) whose command line contains ``text`` (Linux ``/proc``)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            if int(entry.name) != os.getpid() and text in cmdline:
                found.append(int(entry.name))
    return found


def _interrupt_on_sigterm(signum: int, _frame: Any) -> None:
    # KeyboardInterrupt, not SystemExit: pytest then stops the whole run and still tears fixtures down.
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def running_lab(root: Path, state: Path, **kwargs: Any) -> Iterator[LabServer]:
    """:func:`start_lab` as a context manager that always stops the server.

    The server lives in its own session, so a SIGTERM aimed at the test run (a CI timeout) would not reach
    it; while the server runs, SIGTERM is turned into ``KeyboardInterrupt`` so that the clean-up still runs.
    """
    previous = None
    with contextlib.suppress(ValueError):  # signals can only be handled in the main thread
        previous = signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    server = None
    try:
        server = start_lab(root, state, **kwargs)
        yield server
    finally:
        if server is not None:
            stop_lab(server)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------------------------- browser
def launch_chromium(playwright: Any, executable: str, *, headless: bool = True) -> Any:
    """Launch Chromium through Playwright with the flags that work on a closed network as root.

    Args:
        playwright: The object from ``sync_playwright().start()``.
        executable: Path of the Chromium binary (see :func:`find_chromium`).
        headless: Run without a window.

    Returns:
        A Playwright ``Browser``.
    """
    return playwright.chromium.launch(executable_path=executable, headless=headless, args=list(CHROMIUM_ARGS))


# ---------------------------------------------------------------------------------------------- page actions
def open_notebook(page: Any, server: LabServer, notebook: str, *, timeout: float = 60.0) -> Any:
    """Open ``notebook`` in JupyterLab and wait until its kernel is idle.

    Returns:
        The locator of the notebook panel.

    Raises:
        AssertionError: If the ipywidgets manager is not among the loaded lab extensions.
    """
    page.goto(server.lab_url(notebook), wait_until="domcontentloaded", timeout=timeout * 1000)
    panel = page.locator(_ACTIVE_NOTEBOOK).first
    panel.locator(".jp-Notebook").wait_for(state="visible", timeout=timeout * 1000)
    _accept_kernel_dialog(page)
    wait_kernel_idle(page, timeout=timeout)
    extensions = page.evaluate("() => Object.keys(window._JUPYTERLAB || {})")
    assert "@jupyter-widgets/jupyterlab-manager" in extensions, (
        f"the ipywidgets lab extension did not load (loaded: {extensions}); widgets would show as text")
    return panel


def _accept_kernel_dialog(page: Any) -> None:
    """Accept the 'Select Kernel' dialog that appears when a notebook names no kernel."""
    dialog = page.locator(".jp-Dialog")
    with contextlib.suppress(Exception):
        dialog.wait_for(state="visible", timeout=1500)
        if "kernel" in dialog.inner_text().lower():
            dialog.locator(".jp-mod-accept").click()


def kernel_status(page: Any) -> str:
    """The active notebook's kernel status as the status bar shows it (``idle``, ``busy``, ``starting``...).

    The status bar is read rather than the toolbar's indicator, which says ``idle`` before a kernel exists.
    """
    text = page.evaluate("""() => [...document.querySelectorAll('.jp-StatusBar-Item')]
        .map(e => e.innerText.trim()).find(t => / \\| [A-Za-z ]+$/.test(t)) || ''""")
    return text.rsplit("|", 1)[-1].strip().lower() if "|" in text else ""


def wait_kernel_idle(page: Any, *, timeout: float = 60.0) -> None:
    """Wait until the notebook's kernel reports idle; fail early when it died."""
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = kernel_status(page)
        if status == "idle":
            return
        if status in ("dead", "autorestarting"):
            raise AssertionError(f"the kernel is {status}")
        page.wait_for_timeout(250)
    raise AssertionError(f"the kernel was not idle within {timeout:.0f} s (status {status!r})")


def run_all_cells(page: Any) -> None:
    """Run every cell the way a person does: menu Run > Run All Cells."""
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.locator('.lm-Menu-itemLabel:text-is("Run All Cells")').click()


# Error outputs render like stderr; a Python traceback tells them apart from warnings and progress bars.
_PROGRESS_JS = """
() => {
  const nb = document.querySelector('ACTIVE .jp-Notebook');
  const prompts = [...nb.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
    .map(p => p.textContent.trim());
  const errors = [...nb.querySelectorAll('.jp-OutputArea-output')]
    .filter(e => e.dataset.mimeType === 'application/vnd.jupyter.stderr')
    .map(e => e.innerText).filter(t => t.includes('Traceback (most recent call last)'));
  return {prompts, errors};
}
""".replace("ACTIVE", _ACTIVE_NOTEBOOK)


def notebook_progress(page: Any) -> dict[str, Any]:
    """Input prompts of the code cells (``[3]:``, ``[*]:``, ``[ ]:``) and the text of tracebacks shown."""
    return page.evaluate(_PROGRESS_JS)


def _ran(prompt: str) -> bool:
    return prompt[1:-2].strip().isdigit()


def wait_run_finished(page: Any, *, timeout: float, settle: float = 5.0) -> dict[str, Any]:
    """Wait until every code cell has run and the kernel is idle.

    Args:
        page: The page with the notebook.
        timeout: Seconds to wait in all.
        settle: Seconds of an idle kernel with no cell queued after which a run that left cells unrun
            counts as stopped.

    Returns:
        ``{"prompts": [...], "errors": [], "seconds": float}``.

    Raises:
        AssertionError: On a traceback in an output, a dead kernel, a run that stopped early, or a timeout.
    """
    start = time.monotonic()
    quiet_since = None
    progress: dict[str, Any] = {"prompts": [], "errors": []}
    while time.monotonic() - start < timeout:
        progress = notebook_progress(page)
        prompts = progress["prompts"]
        if progress["errors"]:
            raise AssertionError("a cell raised:\n" + "\n\n".join(progress["errors"])[-4000:])
        status = kernel_status(page)
        if status in ("dead", "autorestarting", "restarting"):
            raise AssertionError(f"the kernel is {status} while running the notebook (prompts {prompts})")
        queued = any(p.startswith("[*]") for p in prompts)
        if prompts and all(_ran(p) for p in prompts) and status == "idle":
            progress["seconds"] = time.monotonic() - start
            return progress
        if status == "idle" and not queued and any(_ran(p) for p in prompts):
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > settle:
                raise AssertionError(f"run-all stopped with cells unrun (prompts {prompts})")
        else:
            quiet_since = None
        page.wait_for_timeout(500)
    done = sum(_ran(p) for p in progress["prompts"])
    raise AssertionError(f"run-all did not finish within {timeout:.0f} s: {done} of "
                         f"{len(progress['prompts'])} code cells done, prompts {progress['prompts']}")


def widget_fallback_texts(page: Any) -> list[str]:
    """Plain-text outputs that look like widget reprs (what shows when the widget manager is missing)."""
    return page.evaluate("""() => [...document.querySelectorAll('.jp-OutputArea-output')]
        .map(e => e.innerText.trim())
        .filter(t => /^(VBox|HBox|Box|GridBox|Tab|Accordion|[A-Za-z]*Slider|Image|Output)\\(/.test(t))""")
