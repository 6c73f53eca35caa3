"""make.py: the README's two commands where there is no make (Windows), and the steps the Makefile calls.

Windows, macOS and a root container are simulated (``make.Host``); the commands are checked as
``--dry-run`` prints them. What has not been tried on Windows itself is in the README."""
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("ftlab_make", ROOT / "make.py")
make = importlib.util.module_from_spec(spec)
sys.modules["ftlab_make"] = make  # dataclasses look their module up by name
spec.loader.exec_module(make)


def host(platform="linux", root=False, which=None, **env):
    return make.Host(platform=platform, root=root, env=env, which=which or (lambda name: None))


def dry(command, h, capsys):
    make.COMMANDS[command](make.Runner(h, dry=True))
    return capsys.readouterr().out.splitlines()


def test_the_virtual_environments_python_is_where_each_platform_puts_it():
    assert make.venv_python(host("win32")).parts[-2:] == ("Scripts", "python.exe")
    assert make.venv_python(host("linux")).parts[-2:] == ("bin", "python")
    assert make.venv_python(host("darwin")).parts[-2:] == ("bin", "python")


def test_windows_test_sets_up_then_runs_unit_notebooks_and_browser_and_skips_the_hub(capsys, monkeypatch):
    monkeypatch.setattr(make, "stale", lambda: True)
    monkeypatch.setattr(make, "CHROMIUM", Path("C:/nowhere/chromium"))
    monkeypatch.setattr(make.glob, "glob", lambda pattern: [])  # no PostgreSQL either
    lines = dry("test", host("win32"), capsys)
    text = "\n".join(lines)
    python = str(Path(".venv", "Scripts", "python.exe"))
    assert lines[0].endswith("-m venv .venv")  # no environment yet: created first
    assert f"{python} -m pip install --quiet torch==2.13.0" in lines
    assert text.count("pip install") == 3 and text.count("-m venv") == 1  # set up once, not once per step
    assert f"{python} -m jupyter trust" in text  # a fresh clone's notebooks are trusted, so their widgets render
    assert f"OMP_NUM_THREADS=1 {python} -m pytest -q -n 2 --ignore=tests/browser --ignore=tests/hub tests" in lines
    nbval = next(line for line in lines if "--nbval-lax" in line)
    assert nbval.startswith("FTLAB_PROFILE=ci FTLAB_RUNS=.venv") and "--dist loadscope" in nbval
    assert any(line.endswith("tests/browser") for line in lines)
    assert "JupyterHub does not run on Windows" in text and not any(line.endswith("tests/hub") for line in lines)
    assert "apt-get" not in text  # no chromium, no PostgreSQL: said, not installed
    assert "the browser tests will be skipped" in text and "the shared-study test will be skipped" in text


def test_linux_root_installs_chromium_and_postgresql_and_runs_the_hub(capsys, monkeypatch):
    monkeypatch.setattr(make, "stale", lambda: False)
    monkeypatch.setattr(make, "venv_python", lambda h: make.VENV / "bin" / "python")
    monkeypatch.setattr(make.Path, "exists", lambda self: False)  # no chromium, no proxy, no environment yet
    monkeypatch.setattr(make.glob, "glob", lambda pattern: [])
    tools = {"apt-get": "/usr/bin/apt-get", "npm": "/usr/bin/npm"}
    text = "\n".join(dry("test", host("linux", root=True, which=tools.get), capsys))
    assert "apt-get install -y chromium" in text and "apt-get install -y postgresql" in text
    assert text.count("apt-get install -y chromium") == 1  # the browser tests and the hub need it; installed once
    assert "/usr/bin/npm install --prefix .venv/node" in text
    assert text.rstrip().endswith("tests/hub")


def test_lab_flags_follow_root_and_display(capsys, monkeypatch):
    monkeypatch.setattr(make, "stale", lambda: False)
    monkeypatch.setattr(make, "venv_python", lambda h: Path(make.__file__))  # an existing file: set up already
    container = dry("lab", host("linux", root=True, LAB_ARGS="--ip=0.0.0.0 --port=8888"), capsys)
    assert container[-1].endswith("-m jupyter lab --allow-root --no-browser --ip=0.0.0.0 --port=8888 notebooks")
    desktop = dry("lab", host("linux", DISPLAY=":0"), capsys)
    assert desktop[-1].endswith("-m jupyter lab notebooks")
    assert dry("lab", host("darwin"), capsys)[-1].endswith("-m jupyter lab notebooks")  # a Mac opens its browser
    assert dry("lab", host("win32"), capsys)[-1].endswith("-m jupyter lab notebooks")


def test_a_cuda_torch_spec_reaches_pip_as_separate_arguments(capsys, monkeypatch):
    monkeypatch.setattr(make, "stale", lambda: True)
    spec = "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
    lines = dry("setup", host("linux", TORCH_SPEC=spec), capsys)
    assert any(line.endswith(f"-m pip install --quiet {spec}") for line in lines)


def test_a_failing_step_stops_the_rest_with_its_exit_code(monkeypatch):
    calls = []
    monkeypatch.setattr(make.subprocess, "run", lambda *a, **k: calls.append(a) or subprocess.CompletedProcess(a, 3))
    with pytest.raises(SystemExit) as stop:
        make.Runner(host()).run(["false"])
    assert stop.value.code == 3 and len(calls) == 1


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_every_makefile_target_calls_make_py():
    for target in ("lab", "test", "demo", "setup", "unit", "notebooks", "browser", "hub", "clean"):
        out = subprocess.run(["make", "--no-print-directory", "-n", target], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        assert out.strip() == f"python3 make.py {target}", out
        assert target in make.COMMANDS
