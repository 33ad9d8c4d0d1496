"""``tts-graph eval --workers N --storage postgresql://...``: eval workers on several machines
share one run through PostgreSQL.

The claim protocol is the one of ``workers.ClaimBoard`` (claim a few questions, renew their
leases, take over expired ones, write results and mark their claims done in one transaction),
with three differences that PostgreSQL makes possible or needs:

- claims are ``SELECT ... FOR UPDATE SKIP LOCKED``: workers claiming at the same moment take
  different rows instead of waiting for one another;
- leases are on the database's clock (``clock_timestamp()``), so machines whose clocks
  disagree still agree on when a claim has run out;
- a run is the same run on every machine when its identity is (graph text, task, scorer,
  split, seed, limit): its key is a digest of that identity. The first machine lists the
  questions; a machine that starts later joins (its finished results are reused, nothing is
  listed again). Results are written to the database, and each machine's parent copies them
  into its own run directory's results store, so ``summary``/``compare`` read every machine's
  results there unchanged.

The URL's password is never written anywhere: workers read the URL from a pipe on their
standard input (``--storage-stdin``), not from their command line (``ps`` shows it) nor their
environment (code the sandbox runs may read environments), and every message is redacted.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import time
import urllib.parse
from typing import Any

from ..errors import TTSGraphError
from .store import ResultStore, Row, row_values

CONNECT_TIMEOUT_S = 10

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS tts_eval_runs (run TEXT PRIMARY KEY, identity TEXT NOT NULL, "
    "created TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())",
    "CREATE TABLE IF NOT EXISTS tts_eval_claims (run TEXT NOT NULL, item_id TEXT NOT NULL, "
    "idx INTEGER NOT NULL, state TEXT NOT NULL, worker TEXT, expires TIMESTAMPTZ, "
    "PRIMARY KEY (run, item_id))",
    "CREATE INDEX IF NOT EXISTS tts_eval_claims_by_state ON tts_eval_claims (run, state, idx)",
    "CREATE TABLE IF NOT EXISTS tts_eval_workers (run TEXT NOT NULL, worker TEXT NOT NULL, "
    "host TEXT, pid INTEGER, heartbeat TIMESTAMPTZ, done INTEGER NOT NULL DEFAULT 0, "
    "taken_over INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (run, worker))",
    "CREATE SEQUENCE IF NOT EXISTS tts_eval_results_seq",
    # seq: the order results were written in, so a parent copies only what is new to it
    "CREATE TABLE IF NOT EXISTS tts_eval_results (run TEXT NOT NULL, item_id TEXT NOT NULL, "
    "seq BIGINT NOT NULL, status TEXT NOT NULL, row TEXT NOT NULL, "
    "PRIMARY KEY (run, item_id))",
    "CREATE INDEX IF NOT EXISTS tts_eval_results_by_seq ON tts_eval_results (run, seq)",
]
#: what _SCHEMA makes: when all exist, no DDL is run (see _exec_schema)
_OBJECTS = ("tts_eval_runs", "tts_eval_claims", "tts_eval_claims_by_state", "tts_eval_workers",
            "tts_eval_results_seq", "tts_eval_results", "tts_eval_results_by_seq")
#: serialises the CREATE ... IF NOT EXISTS above between processes (they race otherwise)
_SCHEMA_LOCK = 0x7475_6576  # "tuev"
#: SQLSTATEs of a transaction PostgreSQL aborted for another's sake (deadlock detected,
#: serialization failure): run again, they are not errors of this run
_RETRY_STATES = frozenset({"40P01", "40001"})
_TX_TRIES = 5
#: how long a board keeps connecting again after its connection was lost
RECONNECT_S = 60.0


def _query_pairs(query: str) -> list[tuple[str, str]]:
    """A URL query's (key, raw value) pairs, the values left as written."""
    pairs = []
    for part in query.split("&"):
        key, _, value = part.partition("=")
        pairs.append((urllib.parse.unquote_plus(key), value))
    return pairs


def redact(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: what messages may show. The
    password may be in the user part or, as libpq reads it too, a ``password=`` parameter."""
    try:
        parts = urllib.parse.urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        return "postgresql://***"
    if has_password:
        user = parts.username or ""
        host = parts.netloc.rsplit("@", 1)[-1]
        parts = parts._replace(netloc=f"{user}:***@{host}")
    if parts.query:
        parts = parts._replace(query="&".join(
            f"{k}=***" if k == "password" else part
            for (k, _), part in zip(_query_pairs(parts.query), parts.query.split("&"),
                                    strict=True)))
    return urllib.parse.urlunsplit(parts)


def _secrets(url: str) -> list[str]:
    """The URL's passwords as they may appear in a message: raw and %-decoded, longest
    first (a decoded one may be part of the raw one)."""
    try:
        parts = urllib.parse.urlsplit(url)
        raw = [parts.password] if parts.password else []
    except ValueError:
        return []
    raw += [v for k, v in _query_pairs(parts.query) if k == "password" and v]
    found = {x for r in raw for x in (r, urllib.parse.unquote(r), urllib.parse.unquote_plus(r))}
    return sorted((x for x in found if x), key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` with every occurrence of the URL's password (raw or %-encoded) removed."""
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text


def check_url(url: str) -> None:
    if not url.startswith(("postgresql://", "postgres://")):
        raise TTSGraphError(f"--storage {redact(url)}: not a postgresql:// URL "
                            "(eval workers share a run through PostgreSQL)")


def connect(url: str) -> Any:
    """A psycopg2 connection, or one line (redacted) saying why there is none."""
    check_url(url)
    try:
        import psycopg2
    except ImportError:
        raise TTSGraphError("--storage postgresql://...: needs psycopg2 "
                            "(pip install 'tts-graph[postgres]')") from None
    try:
        return psycopg2.connect(url, connect_timeout=CONNECT_TIMEOUT_S,
                                application_name="tts-graph-eval")
    except psycopg2.Error as exc:
        raise TTSGraphError(f"--storage {redact(url)}: {_first_line(exc, url)}") from None


def _first_line(exc: BaseException, url: str) -> str:
    # a statement's error: the server's primary message (its text ends in DETAIL and HINT
    # lines, "HINT: See server log for query details." says nothing)
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if primary:
        return scrub(f"{primary} ({exc.pgcode})" if getattr(exc, "pgcode", None) else primary,
                     url)
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # libpq puts the cause on the last line ("FATAL: password authentication failed ...",
    # "Connection refused"); the first only says which address it tried
    text = lines[-1] if lines else type(exc).__name__
    return scrub(text, url)


def check_storage(url: str) -> None:
    """Connect once and create the tables: a bad URL, an unreachable server or a refused
    login is one line before the run starts."""
    PgBoard(url, "").close()


def run_key(identity: dict[str, Any]) -> str:
    """The run's name in the database: the same on every machine for the same run."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def row_json(row: Row) -> str:
    return json.dumps(row_values(row), sort_keys=True)


def row_from_json(text: str) -> Row:
    return Row(**json.loads(text))


class PgBoard:
    """The claims of one run in PostgreSQL (same methods as ``workers.ClaimBoard``)."""

    def __init__(self, url: str, run: str) -> None:
        self.url, self.run = url, run
        self.conn = connect(url)
        self._exec_schema()

    # every statement goes through here: a database error becomes one redacted line
    # (every ``fn`` is a whole transaction, so running it again after an abort is safe)
    def _tx(self, fn: Any) -> Any:
        import psycopg2

        attempt, lost_at = 0, None
        while True:
            try:
                if self.conn.closed:
                    self.conn = connect(self.url)
                with self.conn, self.conn.cursor() as cur:
                    return fn(cur)
            except (psycopg2.Error, TTSGraphError) as exc:
                attempt += 1
                code = getattr(exc, "pgcode", None)
                if code in _RETRY_STATES and attempt < _TX_TRIES:
                    time.sleep(0.05 * 2 ** attempt * (0.5 + random.random()))
                    continue
                # the connection is gone (a server restart or failover, an idle connection
                # closed by a proxy): connect again for a while before giving up the worker
                if self.conn.closed:
                    lost_at = lost_at if lost_at is not None else time.monotonic()
                    if time.monotonic() - lost_at < RECONNECT_S:
                        time.sleep(min(2.0, 0.1 * 2 ** min(attempt, 5)))
                        continue
                if isinstance(exc, TTSGraphError):
                    raise
                raise TTSGraphError(f"--storage {redact(self.url)}: "
                                    f"{_first_line(exc, self.url)}") from None

    def _exec_schema(self) -> None:
        # CREATE INDEX IF NOT EXISTS locks its table (SHARE) before it finds the index there:
        # run beside another machine's writes it deadlocks with them, so a machine or worker
        # joining a running run only looks (to_regclass takes no lock)
        def exists(cur: Any) -> bool:
            cur.execute("SELECT " + ", ".join(["to_regclass(%s) IS NOT NULL"] * len(_OBJECTS)),
                        _OBJECTS)
            return all(cur.fetchone())

        def go(cur: Any) -> None:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            if not exists(cur):
                for stmt in _SCHEMA:
                    cur.execute(stmt)

        if not self._tx(exists):
            self._tx(go)

    def prepare(self, identity: dict[str, Any], todo: list[tuple[int, str]], store: ResultStore,
                *, resume: bool) -> bool:
        """List the run's questions unless the run is already in the database (then join
        it). ``todo`` (idx, item id) are every question of the run; those ``store`` holds
        a final answer for are uploaded as done. ``resume``: questions that ended in an
        infrastructure error are listed again, as a resume does without ``--storage``.
        Returns whether this call created the run."""
        done_here = store.done_ids()
        mine = [r for r in store.rows() if r.item_id in done_here]

        def go(cur: Any) -> bool:
            cur.execute("INSERT INTO tts_eval_runs (run, identity) VALUES (%s, %s) "
                        "ON CONFLICT (run) DO NOTHING", (self.run, json.dumps(identity)))
            created = cur.rowcount == 1
            # one preparer at a time per run (a second machine waits here, then joins)
            cur.execute("SELECT run FROM tts_eval_runs WHERE run = %s FOR UPDATE", (self.run,))
            if created:
                cur.executemany(
                    "INSERT INTO tts_eval_claims (run, item_id, idx, state) VALUES "
                    "(%s, %s, %s, %s)",
                    [(self.run, i, idx, "done" if i in done_here else "todo")
                     for idx, i in todo])
                cur.executemany(
                    "INSERT INTO tts_eval_results (run, item_id, seq, status, row) VALUES "
                    "(%s, %s, nextval('tts_eval_results_seq'), %s, %s)",
                    [(self.run, r.item_id, r.status, row_json(r)) for r in mine])
            elif resume:
                cur.execute(
                    "UPDATE tts_eval_claims c SET state = 'todo', worker = NULL, "
                    "expires = NULL FROM tts_eval_results r WHERE c.run = %s AND r.run = c.run "
                    "AND r.item_id = c.item_id AND c.state = 'done' AND r.status = 'error'",
                    (self.run,))
            return created

        return bool(self._tx(go))

    def register(self, worker: str) -> None:
        self._tx(lambda cur: cur.execute(
            "INSERT INTO tts_eval_workers (run, worker, host, pid, heartbeat) VALUES "
            "(%s, %s, %s, %s, clock_timestamp()) ON CONFLICT (run, worker) DO UPDATE SET "
            "host = EXCLUDED.host, pid = EXCLUDED.pid, heartbeat = EXCLUDED.heartbeat",
            (self.run, worker, socket.gethostname(), os.getpid())))

    def claim(self, worker: str, k: int, lease: float) -> list[str]:
        """Up to ``k`` questions: unclaimed ones first, then claims whose lease ran out (on
        the database's clock); rows another worker is claiming right now are skipped."""

        def go(cur: Any) -> list[str]:
            cur.execute(
                "WITH pick AS (SELECT item_id, state FROM tts_eval_claims WHERE run = %s AND "
                "(state = 'todo' OR (state = 'claimed' AND expires < clock_timestamp())) "
                "ORDER BY state DESC, idx LIMIT %s FOR UPDATE SKIP LOCKED) "
                "UPDATE tts_eval_claims c SET state = 'claimed', worker = %s, "
                "expires = clock_timestamp() + %s * interval '1 second' FROM pick "
                "WHERE c.run = %s AND c.item_id = pick.item_id "
                "RETURNING c.item_id, pick.state, c.idx",
                (self.run, k, worker, lease, self.run))
            rows = sorted(cur.fetchall(), key=lambda r: r[2])
            taken = sum(1 for r in rows if r[1] == "claimed")
            if taken:
                cur.execute("UPDATE tts_eval_workers SET taken_over = taken_over + %s "
                            "WHERE run = %s AND worker = %s", (taken, self.run, worker))
            return [r[0] for r in rows]

        return list(self._tx(go))

    def renew(self, worker: str, lease: float) -> None:
        def go(cur: Any) -> None:
            cur.execute("UPDATE tts_eval_claims SET expires = clock_timestamp() + %s * "
                        "interval '1 second' WHERE run = %s AND worker = %s AND "
                        "state = 'claimed'", (lease, self.run, worker))
            cur.execute("UPDATE tts_eval_workers SET heartbeat = clock_timestamp() "
                        "WHERE run = %s AND worker = %s", (self.run, worker))

        self._tx(go)

    def finish(self, worker: str, rows: list[Row]) -> None:
        """Results and the end of their claims, in one transaction."""

        def go(cur: Any) -> None:
            cur.executemany(
                "INSERT INTO tts_eval_results (run, item_id, seq, status, row) VALUES "
                "(%s, %s, nextval('tts_eval_results_seq'), %s, %s) ON CONFLICT (run, item_id) "
                "DO UPDATE SET seq = EXCLUDED.seq, status = EXCLUDED.status, row = EXCLUDED.row",
                [(self.run, r.item_id, r.status, row_json(r)) for r in rows])
            cur.executemany("UPDATE tts_eval_claims SET state = 'done', worker = %s "
                            "WHERE run = %s AND item_id = %s",
                            [(worker, self.run, r.item_id) for r in rows])
            cur.execute("UPDATE tts_eval_workers SET done = done + %s WHERE run = %s AND "
                        "worker = %s", (len(rows), self.run, worker))

        self._tx(go)

    def held_by_others(self, worker: str) -> int:
        def go(cur: Any) -> int:
            cur.execute("SELECT COUNT(*) FROM tts_eval_claims WHERE run = %s AND "
                        "state = 'claimed' AND worker != %s", (self.run, worker))
            return int(cur.fetchone()[0])

        return int(self._tx(go))

    def progress(self) -> dict[str, Any]:
        """Questions done and left over every machine, and each worker's count."""

        def go(cur: Any) -> dict[str, Any]:
            cur.execute("SELECT state, COUNT(*) FROM tts_eval_claims WHERE run = %s "
                        "GROUP BY state", (self.run,))
            states = dict(cur.fetchall())
            cur.execute("SELECT worker, done, taken_over FROM tts_eval_workers WHERE run = %s "
                        "ORDER BY worker", (self.run,))
            workers = {w: (d, t) for w, d, t in cur.fetchall()}
            return {"done": states.get("done", 0), "left": states.get("todo", 0)
                    + states.get("claimed", 0), "workers": workers}

        return dict(self._tx(go))

    def sync(self, store: ResultStore, after: int) -> int:
        """Copy results written since ``after`` (a ``seq``) into ``store``, in one local
        transaction; returns the last ``seq`` copied (``after`` when none)."""

        def go(cur: Any) -> list[tuple[int, str]]:
            cur.execute("SELECT seq, row FROM tts_eval_results WHERE run = %s AND seq > %s "
                        "ORDER BY seq", (self.run, after))
            return list(cur.fetchall())

        got = self._tx(go)
        if not got:
            return after
        with store.transaction():
            for _, text in got:
                store.write(row_from_json(text))
        return int(got[-1][0])

    def close(self) -> None:
        self.conn.close()
