"""The response cache: SQLite, content-addressed per *sample*.

A key covers the backend's model identity, the messages, the sampling parameters, the sample's
seed and its index. The index is part of the key: N samples of one prompt stay N different
answers, and a re-run replays each of them exactly. Several processes may share one file
(WAL journal, busy timeout, insert-or-ignore: the first writer of a key wins).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from .backends.base import GenerationRequest
from .errors import TTSGraphError
from .types import Completion

SCHEMA = "tts-graph-cache"
VERSION = 1


class CacheError(TTSGraphError):
    """The cache file cannot be used (corrupt, foreign, or from another version)."""


def sample_key(identity: str, request: GenerationRequest, index: int) -> str:
    """Key of sample ``index`` (0-based within ``request``) of ``request``."""
    payload = {
        "model": identity,
        "messages": [[m.role, m.content] for m in request.messages],
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "stop": list(request.stop),
        "seed": request.seed + index,
        "sample": request.sample_offset + index,
    }
    blob = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """A SQLite file of completions by sample key."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self.hits = 0
        self.misses = 0
        self._conn()  # open and check now, so a bad file fails before any call is made

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self.path.exists() and self.path.is_dir():
            raise CacheError(f"cache {self.path}: is a directory")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._check(conn)
        except sqlite3.DatabaseError as exc:
            raise CacheError(f"cache {self.path}: not a usable SQLite file ({exc})") from None
        except OSError as exc:  # its directory cannot be made: say what stands in the way
            blocker = next((p for p in self.path.parents if p.exists() and not p.is_dir()),
                           None)
            why = f"{blocker} is not a directory" if blocker else exc.strerror or str(exc)
            raise CacheError(f"cache {self.path}: cannot create it: {why}") from None
        self._local.conn = conn
        return conn

    def _check(self, conn: sqlite3.Connection) -> None:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            conn.execute("BEGIN IMMEDIATE")
            try:
                tables = {r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type='table'")}
                if not tables:
                    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                    conn.execute(
                        "CREATE TABLE samples (key TEXT PRIMARY KEY, text TEXT NOT NULL, "
                        "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, "
                        "finish_reason TEXT NOT NULL, created REAL NOT NULL)"
                    )
                    conn.executemany("INSERT INTO meta VALUES (?, ?)",
                                     [("schema", SCHEMA), ("version", str(VERSION))])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            tables = {"meta", "samples"}
        if "meta" not in tables or "samples" not in tables:
            raise CacheError(f"cache {self.path}: not a tts-graph cache "
                             f"(tables: {', '.join(sorted(tables))})")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("schema") != SCHEMA:
            raise CacheError(f"cache {self.path}: not a tts-graph cache")
        if meta.get("version") != str(VERSION):
            raise CacheError(f"cache {self.path}: version {meta.get('version')}, this "
                             f"tts-graph reads version {VERSION}")

    def get_many(self, keys: Sequence[str]) -> dict[str, Completion]:
        if not keys:
            return {}
        conn = self._conn()
        found: dict[str, Completion] = {}
        try:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, text, pt, ct, fr in conn.execute(
                    "SELECT key, text, prompt_tokens, completion_tokens, finish_reason "
                    f"FROM samples WHERE key IN ({marks})", chunk,
                ):
                    found[key] = Completion(text=text, prompt_tokens=pt, completion_tokens=ct,
                                            finish_reason=fr)
        except sqlite3.DatabaseError as exc:
            raise CacheError(f"cache {self.path}: read failed ({exc})") from None
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def put_many(self, items: Iterable[tuple[str, Completion]]) -> None:
        rows = [(k, c.text, c.prompt_tokens, c.completion_tokens, c.finish_reason, time.time())
                for k, c in items]
        if not rows:
            return
        try:
            self._conn().executemany(
                "INSERT OR IGNORE INTO samples VALUES (?, ?, ?, ?, ?, ?)", rows)
        except sqlite3.DatabaseError as exc:
            raise CacheError(f"cache {self.path}: write failed ({exc})") from None

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM samples").fetchone()[0])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
