"""Where a search keeps its study, and how a study is opened, resumed and shared.

A study lives in an Optuna storage, never only in memory, so a kernel restart, a crash or
a SIGKILL costs at most the trial that was running:

* no storage given: a SQLite file in the runs folder (``studies.db`` beside the cached
  runs its trials point at; ``FTLAB_RUNS`` moves both);
* a URL (``sqlite:///path.db``, ``postgresql://user@host/db``): an Optuna RDB storage, the
  way for laptops on one network to share a study;
* a plain file path (``/shared/class.journal``): an Optuna journal file, the way for many
  processes on one shared disk (a JupyterHub's) to write one study without a server.

Every trial records who ran it, on which host and in which process. A trial still
RUNNING whose process on this host no longer exists was killed mid-trial: opening the
study marks it FAIL (Optuna's own state for it), so it is neither counted nor left
hanging. (Optuna's heartbeat would do the same after a grace period, but the journal
storage has none, and a resumed search should not have to wait.)
"""
from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import optuna
import sqlalchemy.exc
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from ftlab.config.run_config import RunConfig
from ftlab.runs.cache import RunCache
from ftlab.experiments.search.errors import SearchError
from ftlab.experiments.search.space import Space, space_from_json, space_to_json

STUDY_FILE = "studies.db"
"""The default SQLite storage's file name, inside the runs folder."""


def default_storage_url(runs_dir: str | Path | None = None) -> str:
    """``sqlite:///<runs folder>/studies.db``: the study sits beside the runs it points at."""
    return f"sqlite:///{RunCache(runs_dir).folder / STUDY_FILE}"


def shown_url(url: str) -> str:
    """A storage URL as messages show it: the password masked."""
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: show it as given, the error says why
        return url


def open_storage(storage: str | Path | BaseStorage | None, runs_dir: str | Path | None = None) -> BaseStorage:
    """The Optuna storage ``storage`` names (see the module docstring), opened now, so an
    unreachable server or unwritable file is a SearchError naming it before any trial."""
    if isinstance(storage, BaseStorage):
        return storage
    text = str(storage) if storage is not None else default_storage_url(runs_dir)
    if "://" in text:
        return _open_rdb(text)
    return _open_journal(Path(text).expanduser())


def _open_rdb(url: str) -> RDBStorage:
    shown = shown_url(url)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("postgresql"):  # a wrong host would otherwise hang for minutes
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    if url.startswith("sqlite:///"):
        folder = Path(url[len("sqlite:///"):]).expanduser().parent
        if not folder.is_dir():
            raise SearchError(f"storage {shown!r} cannot be opened: the folder {folder} does not exist; create it "
                              f"or give a sqlite:/// path in a folder that does")
    try:
        return _create_rdb(url, engine_kwargs)
    except ImportError as err:
        raise SearchError(f"storage {shown!r} needs a database driver that is not installed ({err}); for "
                          f"PostgreSQL: pip install 'psycopg[binary]'") from None
    except Exception as err:  # SQLAlchemy's ArgumentError, OperationalError, NoSuchModuleError...
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise SearchError(f"storage {shown!r} cannot be opened ({first}); check the URL (sqlite:///path/to/file.db, "
                          f"postgresql://user:password@host:port/database), that the server runs and accepts "
                          f"this user, or give a journal file path instead") from None


def _create_rdb(url: str, engine_kwargs: dict[str, Any], attempts: int = 5) -> RDBStorage:
    """RDBStorage, tried again when another process is creating the same new database's tables
    at this moment (two notebooks, or a search and its monitor, opening a fresh studies.db):
    the loser's schema insert fails with IntegrityError, or its CREATE TABLE with "table ...
    already exists" (OperationalError), and once the winner is done it opens."""
    for attempt in range(1, attempts):
        try:
            return RDBStorage(url, engine_kwargs=engine_kwargs)
        except sqlalchemy.exc.IntegrityError:
            time.sleep(0.2 * attempt)
        except sqlalchemy.exc.OperationalError as err:
            if "already exists" not in str(err):
                raise
            time.sleep(0.2 * attempt)
    return RDBStorage(url, engine_kwargs=engine_kwargs)


def _open_journal(path: Path) -> JournalStorage:
    if path.is_dir():
        raise SearchError(f"storage {str(path)!r} is a folder; a journal storage is a file: give a file path in it, "
                          f"e.g. {str(path / 'class.journal')!r}")
    if not path.parent.is_dir():
        raise SearchError(f"storage {str(path)!r} cannot be opened: the folder {path.parent} does not exist; create "
                          f"it (on the shared disk) or give a file path in a folder that does")
    try:
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as err:
        raise SearchError(f"storage {str(path)!r} cannot be opened ({err.strerror or err}); give a journal file "
                          f"path you can write to") from None


def study_name_for(base: RunConfig, space: Space, sampler: str, pruner: str, seed: int) -> str:
    """A name that is the same exactly when the search is: the same base config, space,
    sampler, pruner and seed continue one study; anything else starts its own."""
    key = json.dumps([base.hash(), space_to_json(space), sampler, pruner, seed])
    return f"ftlab-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


STUDY_ATTR = "ftlab"
"""The study user attribute holding what the study was made for (base config, space, ...)."""


def describe_study(base: RunConfig, space: Space, sampler: str, pruner: str) -> dict[str, Any]:
    """What a study records about its search: enough for a learner to join it with only a
    storage URL and a name, and for a resume to check it is the same search."""
    return {"base": base.to_dict(), "space": space_to_json(space), "sampler": sampler, "pruner": pruner}


def create_or_load(storage: BaseStorage, name: str, about: dict[str, Any] | None) -> optuna.Study:
    """The study ``name`` in ``storage``, created if missing (``load_if_exists``).

    ``about`` (``describe_study``) is recorded on a new study; on an existing one it must
    match what is recorded there (a SearchError otherwise: the name is taken by another
    experiment). ``about=None`` joins a study someone else created.
    """
    if about is None:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
            raise SearchError(f"study {name!r} does not exist in this storage (it has: {', '.join(names) or 'none'}); "
                              f"check the name, or give base and space to create it") from None
        if STUDY_ATTR not in study.user_attrs:
            raise SearchError(f"study {name!r} was not made by ftlab (it records no base config and space); give base "
                              f"and space to search it")
        return study
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True)
    recorded = study.user_attrs.get(STUDY_ATTR)
    if recorded is None:
        study.set_user_attr(STUDY_ATTR, about)
    elif recorded["base"] != about["base"] or recorded["space"] != about["space"]:
        differ = [k for k in ("base", "space") if recorded[k] != about[k]]
        raise SearchError(f"study {name!r} exists for another experiment (its {' and '.join(differ)} differ from "
                          f"yours); give another study_name, or join it with base=None and space=None")
    return study


def study_setup(study: optuna.Study) -> tuple[RunConfig, dict[str, BaseDistribution]]:
    """(base config, space) an ftlab study was made for: what a learner joining it searches."""
    about = study.user_attrs[STUDY_ATTR]
    return RunConfig.from_dict(about["base"]), space_from_json(about["space"])


def default_contributor() -> str:
    """Who a trial is credited to: the JupyterHub user name where there is one (every
    JupyterHub container runs as the same system user), else the login name."""
    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


def mark_origin(trial: optuna.Trial, contributor: str) -> None:
    """Record who runs this trial, where, and in which process (see ``fail_dead_trials``)."""
    trial.set_user_attr("contributor", contributor)
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL every RUNNING trial that a process on this host started and that process
    is gone (killed mid-trial); return their numbers. Trials of live processes and of
    other hosts are left alone: they may still be running."""
    host = socket.gethostname()
    dead = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.user_attrs.get("host") == host and not _alive(t.user_attrs.get("pid"))]
    for number in dead:
        study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    return dead


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return True  # unknown: not ours to judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """A finished experiment: completed, pruned, or failed because its loss diverged (a
    result too). A trial killed mid-run (FAIL without a diverged flag) does not count."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and "diverged" in trial.user_attrs)


def counted_contributor(study_name: str | None, contributor: str) -> str | None:
    """Whose trials count toward a search's budget (the ``contributor`` of :func:`finished_by`).

    In a study shared by name (a workshop's class study), each contributor's own: every
    learner runs their share. In a study named after the search itself (``study_name=None``),
    everyone's: the same call by anyone is the same search, so a room sharing a runs folder
    that the teacher prepared replays it instead of each learner training new points, as the
    run cache replays runs.
    """
    return contributor if study_name else None


def finished_by(study: optuna.Study, contributor: str | None) -> int:
    """Trials that count toward a budget: ``contributor``'s, or everyone's for None."""
    return sum(1 for t in study.get_trials(deepcopy=False)
               if counts_toward_budget(t) and (contributor is None or t.user_attrs.get("contributor", contributor) == contributor))


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's INFO lines (a study created, each trial finished) off while a search prints
    its own; its warnings stay. The previous verbosity comes back after."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)
