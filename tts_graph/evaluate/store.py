"""The results store of one evaluation run: ``RUN_DIR/results.sqlite``.

Every finished question is written (and committed) the moment it is scored, so a crash loses
at most the questions in flight; ``--resume`` reads which are done and runs the rest. The run's
identity (graph text, task and a digest of its questions, split, seed, limit) is stored too,
so a resume with a different graph or task is refused instead of mixing results.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TTSGraphError

RESULTS_FILE = "results.sqlite"
#: held (``flock``) by the eval running the run: a second eval on the same run directory
#: would list its questions again beside the first and answer some twice
LOCK_FILE = "eval.lock"
SCHEMA = "tts-graph-results"
VERSION = "1"


class StoreError(TTSGraphError):
    pass


@dataclass
class Row:
    item_id: str
    idx: int
    question: str
    gold: str
    answer: str | None
    text: str | None
    correct: bool | None  # None: not scored (an infrastructure error)
    status: str
    error: str | None
    score_detail: str
    latency_s: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    billed_usd: float
    flops: float
    calls: int
    cached_calls: int
    retries: int
    usage_by_node: dict[str, Any]
    usage_by_model: dict[str, Any]
    #: the query's budget report (``BudgetReport.to_dict()``); None without a budget
    budget: dict[str, Any] | None = None


_COLUMNS = list(Row.__dataclass_fields__)


@dataclass
class Tally:
    """Running figures of a run's results: the questions scored and right, those left
    unscored (an infrastructure error, a failed scorer), the cost billed and the tokens."""

    scored: int = 0
    correct: int = 0
    errors: int = 0
    cost_usd: float = 0.0
    tokens: int = 0

    def add(self, row: Row) -> None:
        if row.correct is None:
            self.errors += 1
        else:
            self.scored += 1
            self.correct += int(row.correct)
        self.cost_usd += row.billed_usd
        self.tokens += row.prompt_tokens + row.completion_tokens

    def line(self) -> str:
        """The figures as the progress bar shows them."""
        acc = self.correct / self.scored if self.scored else 0.0
        return (f"acc {acc:.1%}  ${self.cost_usd:.4f}  {self.tokens} tok"
                + (f"  {self.errors} infra errors" if self.errors else ""))


def row_values(row: Row) -> dict[str, Any]:
    """The row's fields as a dict, its values shared, not copied (``asdict`` deep-copies the
    usage dicts, which are only serialized: a third of the eval process's time per row)."""
    return {c: getattr(row, c) for c in _COLUMNS}


class ResultStore:
    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / RESULTS_FILE
        conn: sqlite3.Connection | None = None
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            conn = self.conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self._init()
        except (sqlite3.DatabaseError, OSError, StoreError) as exc:
            if conn is not None:  # not left open (and holding the file) by a failed start
                conn.close()
            if isinstance(exc, StoreError):
                raise
            if isinstance(exc, OSError):
                raise StoreError(f"run {self.run_dir}: {exc.strerror or exc}") from None
            raise StoreError(f"run {self.run_dir}: {RESULTS_FILE} is not usable ({exc})"
                             ) from None

    def _init(self) -> None:
        tables = {r[0] for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            # one transaction: a start that fails half-way (a full disk) leaves an empty
            # file, which the next start makes whole, not half a store it refuses
            with self.transaction():
                if not self.conn.execute("SELECT 1 FROM sqlite_master").fetchone():
                    self.conn.execute("CREATE TABLE run (key TEXT PRIMARY KEY, "
                                      "value TEXT NOT NULL)")
                    cols = ", ".join(
                        f"{c} TEXT PRIMARY KEY" if c == "item_id" else c for c in _COLUMNS
                    )
                    self.conn.execute(f"CREATE TABLE results ({cols}, finished_at REAL)")
                    self.conn.executemany("INSERT INTO run VALUES (?, ?)",
                                          [("schema", SCHEMA), ("version", VERSION)])
        elif not {"run", "results"} <= tables or self.meta().get("schema") != SCHEMA:
            raise StoreError(f"run {self.run_dir}: {RESULTS_FILE} is not a tts-graph results "
                             "store")
        else:  # a store written before budget reports were kept: add their column
            have = {r[1] for r in self.conn.execute("PRAGMA table_info(results)")}
            if "budget" not in have:
                self.conn.execute("ALTER TABLE results ADD COLUMN budget")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction on the store (``BEGIN IMMEDIATE``: the writer's lock taken
        at once, so a read and a write in it are one step), rolled back when anything in
        it, or its commit, fails."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # it may be rolled back already
                self.conn.execute("ROLLBACK")
            raise

    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM run").fetchall())

    def bind(self, identity: dict[str, Any], *, resume: bool) -> None:
        """Record the run's identity, or check it against the stored one on resume."""
        meta = self.meta()
        stored = meta.get("identity")
        mine = json.dumps(identity, sort_keys=True)
        if stored is None:
            if self.count() and not resume:
                raise StoreError(f"run {self.run_dir}: holds results of an unknown run")
            self.put("identity", mine)
            self.put("created", str(time.time()))
            return
        if not resume:
            raise StoreError(f"run {self.run_dir}: already holds a run; use --resume "
                             f"{self.run_dir} to continue it, or another --out")
        if stored != mine:
            old = json.loads(stored)
            diff = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
            if diff == ["items_sha"]:  # same task name and size: its file was edited
                raise StoreError(f"run {self.run_dir}: task {identity.get('task')}: its "
                                 "questions or answers differ from those the run was started "
                                 "with (the task file changed); refusing to mix results")
            raise StoreError(f"run {self.run_dir}: was started with a different "
                             f"{', '.join(d for d in diff if d != 'items_sha')}; refusing to "
                             "mix results")

    def put(self, key: str, value: str) -> None:
        try:
            self.conn.execute("INSERT OR REPLACE INTO run VALUES (?, ?)", (key, value))
        except sqlite3.DatabaseError as exc:
            raise self.write_failed(exc) from None

    def identity(self) -> dict[str, Any] | None:
        stored = self.meta().get("identity")
        return json.loads(stored) if stored else None

    def done_ids(self) -> set[str]:
        """Questions with a final answer (infrastructure errors are run again on resume)."""
        return {r[0] for r in self.conn.execute(
            "SELECT item_id FROM results WHERE status != 'error'")}

    def write(self, row: Row) -> None:
        values = row_values(row)
        values["correct"] = None if row.correct is None else int(row.correct)
        values["usage_by_node"] = json.dumps(row.usage_by_node)
        values["usage_by_model"] = json.dumps(row.usage_by_model)
        values["budget"] = None if row.budget is None else json.dumps(row.budget)
        marks = ", ".join("?" * (len(_COLUMNS) + 1))
        try:
            self.conn.execute(
                f"INSERT OR REPLACE INTO results ({', '.join(_COLUMNS)}, finished_at) "
                f"VALUES ({marks})",
                [values[c] for c in _COLUMNS] + [time.time()],
            )
        except sqlite3.DatabaseError as exc:  # a full disk, a file gone read-only
            raise self.write_failed(exc) from None

    def write_failed(self, exc: sqlite3.Error) -> StoreError:
        """The one line a failed write of this store is (the run so far stays stored)."""
        return StoreError(f"run {self.run_dir}: {RESULTS_FILE}: write failed ({exc})")

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def tally(self) -> Tally:
        """The run's figures so far, every result stored (an eval's progress line: what
        its workers, or earlier sessions of a resumed run, wrote)."""
        scored, correct, errors, cost, tokens = self.conn.execute(
            "SELECT COUNT(correct), COALESCE(SUM(correct), 0), COUNT(*) - COUNT(correct), "
            "COALESCE(SUM(billed_usd), 0.0), "
            "COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM results").fetchone()
        return Tally(int(scored), int(correct), int(errors), float(cost), int(tokens))

    def rows(self) -> Iterator[Row]:
        """All results in question order, streamed (nothing held in memory)."""
        cur = self.conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM results ORDER BY idx")
        for rec in cur:
            d = dict(zip(_COLUMNS, rec, strict=True))
            d["correct"] = None if d["correct"] is None else bool(d["correct"])
            d["usage_by_node"] = json.loads(d["usage_by_node"])
            d["usage_by_model"] = json.loads(d["usage_by_model"])
            d["budget"] = None if d["budget"] is None else json.loads(d["budget"])
            yield Row(**d)

    def close(self) -> None:
        self.conn.close()


def lock_run(run_dir: Path) -> Any:
    """Hold ``RUN_DIR/eval.lock`` while this process (and the workers it forks) runs the
    run; the kernel lets go when they end, however they end. Another eval holding it is one
    line. Returns the open lock file (None where there is no ``flock``)."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no lock
        return None
    path = run_dir / LOCK_FILE
    try:
        f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the process's life)
    except OSError as exc:
        raise StoreError(f"run {run_dir}: {LOCK_FILE}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        raise StoreError(f"run {run_dir}: another eval is running it"
                         + (f" (pid {holder})" if holder.isdigit() else "")
                         + "; wait for it to end, or stop it") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f
