"""
SQLite persistence (aiosqlite, WAL): every SQL statement of the project lives here.

Rows are converted to domain objects at this border; nothing outside sees a sqlite3.Row.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import aiosqlite

from orchestrator.models import (
    Family,
    GenerationParams,
    ImageRecord,
    Job,
    JobSpec,
    JobStatus,
    LoraSpec,
    Mode,
    TaskKind,
)

log = logging.getLogger(__name__)

#: what a write that did not land raises (locked past the busy timeout, disk full, I/O error); worth retrying
DB_WRITE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.OperationalError, sqlite3.DatabaseError, OSError)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _write(
    fn: Callable[Concatenate[Database, _P], Coroutine[Any, Any, _R]],
) -> Callable[Concatenate[Database, _P], Coroutine[Any, Any, _R]]:
    """
    Run a write method alone on the shared connection, rolling back what it did if it fails.

    The connection is shared by every coroutine: without this, one write's failed commit would roll back another
    coroutine's statement that had not been committed yet, and that one would believe it had landed.
    """

    @functools.wraps(fn)
    async def wrapper(self: Database, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        async with self._write_lock:
            try:
                return await fn(self, *args, **kwargs)
            except BaseException:
                with contextlib.suppress(Exception):
                    await self.conn.rollback()
                raise

    return wrapper


# Each entry migrates from user_version == index to index + 1. Append only.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        flow TEXT NOT NULL,
        owner_id TEXT NOT NULL,
        visibility TEXT NOT NULL,
        state TEXT NOT NULL,
        prompt TEXT NOT NULL,
        negative_prompt TEXT NOT NULL DEFAULT '',
        settings TEXT NOT NULL DEFAULT '{}',
        stage_index INTEGER NOT NULL DEFAULT 0,
        data TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX sessions_owner ON sessions(owner_id, state);
    CREATE TABLE stages (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions(id),
        idx INTEGER NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        batch_id TEXT,
        prompt TEXT NOT NULL DEFAULT '',
        negative_prompt TEXT NOT NULL DEFAULT '',
        data TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL
    );
    CREATE INDEX stages_session ON stages(session_id, idx);
    CREATE TABLE generations (
        id TEXT PRIMARY KEY,
        batch_id TEXT NOT NULL,
        session_id TEXT,
        stage_id TEXT,
        user_id TEXT,
        parent_id TEXT,
        idx INTEGER NOT NULL DEFAULT 0,
        task TEXT NOT NULL,
        status TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL DEFAULT 3,
        node_id TEXT,
        prompt_id TEXT,
        params TEXT NOT NULL,
        prompt TEXT NOT NULL,
        negative_prompt TEXT NOT NULL DEFAULT '',
        family TEXT NOT NULL,
        checkpoint TEXT NOT NULL DEFAULT '',
        seed INTEGER NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        steps INTEGER NOT NULL,
        cfg REAL NOT NULL,
        denoise REAL NOT NULL,
        image_path TEXT,
        thumbnail_path TEXT,
        seconds REAL,
        error TEXT,
        failed_nodes TEXT NOT NULL DEFAULT '[]',
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL
    );
    CREATE INDEX generations_batch ON generations(batch_id);
    CREATE INDEX generations_stage ON generations(stage_id, idx);
    CREATE INDEX generations_status ON generations(status);
    CREATE TABLE votes (
        session_id TEXT NOT NULL,
        image_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        value INTEGER NOT NULL CHECK (value IN (-1, 1)),
        updated_at REAL NOT NULL,
        PRIMARY KEY (image_id, user_id)
    );
    CREATE INDEX votes_session ON votes(session_id);
    CREATE TABLE participants (
        session_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        role TEXT NOT NULL,
        added_at REAL NOT NULL,
        PRIMARY KEY (session_id, user_id)
    );
    CREATE TABLE intent (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL,
        entry TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX intent_session ON intent(session_id, id);
    CREATE TABLE refs (
        session_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (session_id, key)
    );
    """,
)


def params_to_json(p: GenerationParams) -> str:
    """Serialise render parameters for the generations table."""
    d: dict[str, Any] = {
        "prompt": p.prompt,
        "family": p.family.value,
        "checkpoint": p.checkpoint,
        "negative_prompt": p.negative_prompt,
        "width": p.width,
        "height": p.height,
        "steps": p.steps,
        "cfg": p.cfg,
        "sampler": p.sampler,
        "scheduler": p.scheduler,
        "seed": p.seed,
        "denoise": p.denoise,
        "loras": [[lo.name, lo.strength_model, lo.strength_clip] for lo in p.loras],
        "mode": p.mode.value,
        "init_image": p.init_image,
        "upscale_model": p.upscale_model,
    }
    return json.dumps(d, ensure_ascii=False)


def params_from_json(text: str) -> GenerationParams:
    d = json.loads(text)
    return GenerationParams(
        prompt=d["prompt"],
        family=Family(d["family"]),
        checkpoint=d["checkpoint"],
        negative_prompt=d["negative_prompt"],
        width=int(d["width"]),
        height=int(d["height"]),
        steps=int(d["steps"]),
        cfg=float(d["cfg"]),
        sampler=d["sampler"],
        scheduler=d["scheduler"],
        seed=int(d["seed"]),
        denoise=float(d["denoise"]),
        loras=tuple(LoraSpec(n, float(m), float(c)) for n, m, c in d["loras"]),
        mode=Mode(d["mode"]),
        init_image=d["init_image"],
        upscale_model=d["upscale_model"],
    )


def _job_from_row(r: aiosqlite.Row) -> Job:
    spec = JobSpec(
        params=params_from_json(r["params"]),
        task=TaskKind(r["task"]),
        session_id=r["session_id"],
        stage_id=r["stage_id"],
        user_id=r["user_id"],
        parent_id=r["parent_id"],
        index=r["idx"],
    )
    return Job(
        id=r["id"],
        batch_id=r["batch_id"],
        spec=spec,
        status=JobStatus(r["status"]),
        attempt=r["attempt"],
        max_attempts=r["max_attempts"],
        node_id=r["node_id"],
        prompt_id=r["prompt_id"],
        error=r["error"],
        created_at=r["created_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
        failed_nodes=tuple(json.loads(r["failed_nodes"])),
    )


def _image_from_row(r: aiosqlite.Row) -> ImageRecord:
    return ImageRecord(
        id=r["id"],
        job_id=r["id"],
        path=r["image_path"],
        thumbnail=r["thumbnail_path"],
        node_id=r["node_id"] or "",
        seed=r["seed"],
        seconds=r["seconds"] or 0.0,
        checkpoint=r["checkpoint"],
        width=r["width"],
        height=r["height"],
        prompt=r["prompt"],
        negative_prompt=r["negative_prompt"],
        session_id=r["session_id"],
        stage_id=r["stage_id"],
        parent_id=r["parent_id"],
        index=r["idx"],
    )


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A sessions row; the session engine turns it into its own model."""

    id: str
    flow: str
    owner_id: str
    visibility: str
    state: str
    prompt: str
    negative_prompt: str
    settings: dict[str, Any]
    stage_index: int
    data: dict[str, Any]
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class StageRow:
    """A stages row."""

    id: str
    session_id: str
    idx: int
    name: str
    status: str
    batch_id: str | None
    prompt: str
    negative_prompt: str
    data: dict[str, Any]
    created_at: float


@dataclass(frozen=True, slots=True)
class Vote:
    """One participant's vote on one image."""

    session_id: str
    image_id: str
    user_id: str
    value: int


def _session_from_row(r: aiosqlite.Row) -> SessionRow:
    return SessionRow(
        id=r["id"],
        flow=r["flow"],
        owner_id=r["owner_id"],
        visibility=r["visibility"],
        state=r["state"],
        prompt=r["prompt"],
        negative_prompt=r["negative_prompt"],
        settings=json.loads(r["settings"]),
        stage_index=r["stage_index"],
        data=json.loads(r["data"]),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )


def _stage_from_row(r: aiosqlite.Row) -> StageRow:
    return StageRow(
        id=r["id"],
        session_id=r["session_id"],
        idx=r["idx"],
        name=r["name"],
        status=r["status"],
        batch_id=r["batch_id"],
        prompt=r["prompt"],
        negative_prompt=r["negative_prompt"],
        data=json.loads(r["data"]),
        created_at=r["created_at"],
    )


class Database:
    """The project's SQLite database."""

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path) if str(path) != ":memory:" else path
        self.busy_timeout_s = busy_timeout_s
        self._conn: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    async def open(self) -> None:
        if isinstance(self.path, Path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # sqlite3's `timeout` is the busy timeout: how long a statement waits for another connection's lock.
        self._conn = await aiosqlite.connect(str(self.path), timeout=self.busy_timeout_s)
        self._conn.row_factory = aiosqlite.Row
        await self._conn.execute("PRAGMA journal_mode=WAL")
        await self._conn.execute("PRAGMA synchronous=NORMAL")
        await self._conn.execute("PRAGMA foreign_keys=ON")
        await self.migrate()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def migrate(self) -> int:
        async with self.conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise RuntimeError(f"database {self.path} is newer (v{version}) than this program (v{len(MIGRATIONS)})")
        for i in range(version, len(MIGRATIONS)):
            log.info("migrating database to v%d", i + 1)
            await self.conn.executescript(f"BEGIN;\n{MIGRATIONS[i]}\nPRAGMA user_version = {i + 1};\nCOMMIT;")
        return len(MIGRATIONS)

    async def user_version(self) -> int:
        async with self.conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ generations (jobs)

    @_write
    async def insert_jobs(self, jobs: Sequence[Job]) -> None:
        rows = []
        for j in jobs:
            p = j.params
            rows.append(
                (
                    j.id,
                    j.batch_id,
                    j.spec.session_id,
                    j.spec.stage_id,
                    j.spec.user_id,
                    j.spec.parent_id,
                    j.spec.index,
                    j.spec.task.value,
                    j.status.value,
                    j.attempt,
                    j.max_attempts,
                    j.node_id,
                    j.prompt_id,
                    params_to_json(p),
                    p.prompt,
                    p.negative_prompt,
                    p.family.value,
                    p.model_name,
                    p.seed,
                    p.width,
                    p.height,
                    p.steps,
                    p.cfg,
                    p.denoise,
                    json.dumps(list(j.failed_nodes)),
                    j.created_at,
                )
            )
        await self.conn.executemany(
            """INSERT INTO generations (id, batch_id, session_id, stage_id, user_id, parent_id, idx, task, status,
               attempt, max_attempts, node_id, prompt_id, params, prompt, negative_prompt, family, checkpoint, seed,
               width, height, steps, cfg, denoise, failed_nodes, created_at)
               VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
            rows,
        )
        await self.conn.commit()

    @_write
    async def update_job(self, job: Job) -> bool:
        """
        Persist a job's mutable fields (status, attempt, node, prompt id, error, times).

        An ended job stays ended: False when the row had ended already (and nothing was written).
        """
        cur = await self.conn.execute(
            """UPDATE generations SET status=?, attempt=?, node_id=?, prompt_id=?, error=?, started_at=?,
               finished_at=?, failed_nodes=? WHERE id=? AND status NOT IN ('done', 'failed', 'cancelled')""",
            (
                job.status.value,
                job.attempt,
                job.node_id,
                job.prompt_id,
                job.error,
                job.started_at,
                job.finished_at,
                json.dumps(list(job.failed_nodes)),
                job.id,
            ),
        )
        await self.conn.commit()
        return cur.rowcount == 1

    @_write
    async def finish_job(self, job: Job, image: ImageRecord) -> bool:
        """Record a delivered image; False if the job was already done (so it is never delivered twice)."""
        cur = await self.conn.execute(
            """UPDATE generations SET status=?, node_id=?, prompt_id=?, image_path=?, thumbnail_path=?, seconds=?,
               started_at=?, finished_at=?, attempt=?, error=NULL WHERE id=? AND status != 'done'""",
            (
                JobStatus.DONE.value,
                image.node_id,
                job.prompt_id,
                image.path,
                image.thumbnail,
                image.seconds,
                job.started_at,
                job.finished_at,
                job.attempt,
                job.id,
            ),
        )
        await self.conn.commit()
        return cur.rowcount == 1

    async def get_job(self, job_id: str) -> Job | None:
        async with self.conn.execute("SELECT * FROM generations WHERE id=?", (job_id,)) as cur:
            row = await cur.fetchone()
        return _job_from_row(row) if row else None

    async def jobs_with_status(self, statuses: Iterable[JobStatus]) -> list[Job]:
        vals = [s.value for s in statuses]
        q = f"SELECT * FROM generations WHERE status IN ({','.join('?' * len(vals))}) ORDER BY created_at, idx"
        async with self.conn.execute(q, vals) as cur:
            return [_job_from_row(r) for r in await cur.fetchall()]

    async def batch_jobs(self, batch_id: str) -> list[Job]:
        async with self.conn.execute("SELECT * FROM generations WHERE batch_id=? ORDER BY idx", (batch_id,)) as cur:
            return [_job_from_row(r) for r in await cur.fetchall()]

    async def stage_jobs(self, stage_id: str) -> list[Job]:
        async with self.conn.execute("SELECT * FROM generations WHERE stage_id=? ORDER BY idx", (stage_id,)) as cur:
            return [_job_from_row(r) for r in await cur.fetchall()]

    async def image(self, image_id: str) -> ImageRecord | None:
        async with self.conn.execute(
            "SELECT * FROM generations WHERE id=? AND status='done'",
            (image_id,),
        ) as cur:
            row = await cur.fetchone()
        return _image_from_row(row) if row else None

    async def stage_images(self, stage_id: str) -> list[ImageRecord]:
        async with self.conn.execute(
            "SELECT * FROM generations WHERE stage_id=? AND status='done' ORDER BY idx",
            (stage_id,),
        ) as cur:
            return [_image_from_row(r) for r in await cur.fetchall()]

    async def batch_images(self, batch_id: str) -> list[ImageRecord]:
        async with self.conn.execute(
            "SELECT * FROM generations WHERE batch_id=? AND status='done' ORDER BY idx",
            (batch_id,),
        ) as cur:
            return [_image_from_row(r) for r in await cur.fetchall()]

    @_write
    async def clear_image_path(self, image_id: str) -> None:
        """The full-size file was pruned; keep the thumbnail."""
        await self.conn.execute("UPDATE generations SET image_path=NULL WHERE id=?", (image_id,))
        await self.conn.commit()

    async def queued_images_for_user(self, user_id: str) -> int:
        async with self.conn.execute(
            "SELECT COUNT(*) FROM generations WHERE user_id=? AND status IN ('queued','submitted','running')",
            (user_id,),
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ sessions

    @_write
    async def insert_session(self, s: SessionRow) -> None:
        await self.conn.execute(
            """INSERT INTO sessions (id, flow, owner_id, visibility, state, prompt, negative_prompt, settings,
               stage_index, data, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)""",
            (
                s.id,
                s.flow,
                s.owner_id,
                s.visibility,
                s.state,
                s.prompt,
                s.negative_prompt,
                json.dumps(s.settings),
                s.stage_index,
                json.dumps(s.data),
                s.created_at,
                s.updated_at,
            ),
        )
        await self.conn.commit()

    @_write
    async def update_session(self, s: SessionRow) -> None:
        await self.conn.execute(
            """UPDATE sessions SET visibility=?, state=?, prompt=?, negative_prompt=?, settings=?, stage_index=?,
               data=?, updated_at=? WHERE id=?""",
            (
                s.visibility,
                s.state,
                s.prompt,
                s.negative_prompt,
                json.dumps(s.settings),
                s.stage_index,
                json.dumps(s.data),
                time.time(),
                s.id,
            ),
        )
        await self.conn.commit()

    async def get_session(self, session_id: str) -> SessionRow | None:
        async with self.conn.execute("SELECT * FROM sessions WHERE id=?", (session_id,)) as cur:
            row = await cur.fetchone()
        return _session_from_row(row) if row else None

    async def sessions_in_states(self, states: Iterable[str]) -> list[SessionRow]:
        vals = list(states)
        q = f"SELECT * FROM sessions WHERE state IN ({','.join('?' * len(vals))}) ORDER BY created_at"
        async with self.conn.execute(q, vals) as cur:
            return [_session_from_row(r) for r in await cur.fetchall()]

    async def count_user_sessions(self, owner_id: str, states: Iterable[str]) -> int:
        vals = list(states)
        q = f"SELECT COUNT(*) FROM sessions WHERE owner_id=? AND state IN ({','.join('?' * len(vals))})"
        async with self.conn.execute(q, [owner_id, *vals]) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ stages

    @_write
    async def insert_stage(self, st: StageRow) -> None:
        await self.conn.execute(
            """INSERT INTO stages (id, session_id, idx, name, status, batch_id, prompt, negative_prompt, data,
               created_at) VALUES (?,?,?,?,?,?,?,?,?,?)""",
            (
                st.id,
                st.session_id,
                st.idx,
                st.name,
                st.status,
                st.batch_id,
                st.prompt,
                st.negative_prompt,
                json.dumps(st.data),
                st.created_at,
            ),
        )
        await self.conn.commit()

    @_write
    async def update_stage(self, st: StageRow) -> None:
        await self.conn.execute(
            "UPDATE stages SET status=?, batch_id=?, prompt=?, negative_prompt=?, data=? WHERE id=?",
            (st.status, st.batch_id, st.prompt, st.negative_prompt, json.dumps(st.data), st.id),
        )
        await self.conn.commit()

    async def get_stage(self, stage_id: str) -> StageRow | None:
        async with self.conn.execute("SELECT * FROM stages WHERE id=?", (stage_id,)) as cur:
            row = await cur.fetchone()
        return _stage_from_row(row) if row else None

    async def session_stages(self, session_id: str) -> list[StageRow]:
        async with self.conn.execute(
            "SELECT * FROM stages WHERE session_id=? ORDER BY idx, created_at",
            (session_id,),
        ) as cur:
            return [_stage_from_row(r) for r in await cur.fetchall()]

    async def stage_for_batch(self, batch_id: str) -> StageRow | None:
        async with self.conn.execute("SELECT * FROM stages WHERE batch_id=?", (batch_id,)) as cur:
            row = await cur.fetchone()
        return _stage_from_row(row) if row else None

    # ------------------------------------------------------------------ votes and participants

    @_write
    async def set_vote(self, session_id: str, image_id: str, user_id: str, value: int | None) -> None:
        """Cast, change (value = +1 / -1) or withdraw (None) a vote."""
        if value is None:
            await self.conn.execute("DELETE FROM votes WHERE image_id=? AND user_id=?", (image_id, user_id))
        else:
            await self.conn.execute(
                """INSERT INTO votes (session_id, image_id, user_id, value, updated_at) VALUES (?,?,?,?,?)
                   ON CONFLICT(image_id, user_id) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at""",
                (session_id, image_id, user_id, value, time.time()),
            )
        await self.conn.commit()

    async def votes_for_images(self, image_ids: Sequence[str]) -> list[Vote]:
        if not image_ids:
            return []
        q = f"SELECT * FROM votes WHERE image_id IN ({','.join('?' * len(image_ids))}) ORDER BY updated_at"
        async with self.conn.execute(q, list(image_ids)) as cur:
            return [Vote(r["session_id"], r["image_id"], r["user_id"], r["value"]) for r in await cur.fetchall()]

    async def get_vote(self, image_id: str, user_id: str) -> int | None:
        async with self.conn.execute(
            "SELECT value FROM votes WHERE image_id=? AND user_id=?",
            (image_id, user_id),
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else None

    @_write
    async def add_participant(self, session_id: str, user_id: str, role: str) -> None:
        await self.conn.execute(
            """INSERT INTO participants (session_id, user_id, role, added_at) VALUES (?,?,?,?)
               ON CONFLICT(session_id, user_id) DO UPDATE SET role=excluded.role""",
            (session_id, user_id, role, time.time()),
        )
        await self.conn.commit()

    async def participants(self, session_id: str) -> dict[str, str]:
        async with self.conn.execute(
            "SELECT user_id, role FROM participants WHERE session_id=? ORDER BY added_at",
            (session_id,),
        ) as cur:
            return {r["user_id"]: r["role"] for r in await cur.fetchall()}

    # ------------------------------------------------------------------ intent document

    @_write
    async def add_intent(self, session_id: str, entry: dict[str, Any]) -> None:
        await self.conn.execute(
            "INSERT INTO intent (session_id, entry, created_at) VALUES (?,?,?)",
            (session_id, json.dumps(entry, ensure_ascii=False), time.time()),
        )
        await self.conn.commit()

    async def intent(self, session_id: str) -> list[dict[str, Any]]:
        async with self.conn.execute("SELECT entry FROM intent WHERE session_id=? ORDER BY id", (session_id,)) as cur:
            return [json.loads(r["entry"]) for r in await cur.fetchall()]

    @_write
    async def pop_intent(self, session_id: str) -> dict[str, Any] | None:
        async with self.conn.execute(
            "SELECT id, entry FROM intent WHERE session_id=? ORDER BY id DESC LIMIT 1",
            (session_id,),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        await self.conn.execute("DELETE FROM intent WHERE id=?", (row["id"],))
        await self.conn.commit()
        return dict(json.loads(row["entry"]))

    # ------------------------------------------------------------------ front-end references (opaque to the core)

    @_write
    async def set_ref(self, session_id: str, key: str, value: str) -> None:
        await self.conn.execute(
            """INSERT INTO refs (session_id, key, value) VALUES (?,?,?)
               ON CONFLICT(session_id, key) DO UPDATE SET value=excluded.value""",
            (session_id, key, value),
        )
        await self.conn.commit()

    async def get_ref(self, session_id: str, key: str) -> str | None:
        async with self.conn.execute("SELECT value FROM refs WHERE session_id=? AND key=?", (session_id, key)) as cur:
            row = await cur.fetchone()
        return str(row[0]) if row else None

    async def refs(self, session_id: str, prefix: str = "") -> dict[str, str]:
        async with self.conn.execute(
            "SELECT key, value FROM refs WHERE session_id=? AND key LIKE ? ORDER BY key",
            (session_id, prefix + "%"),
        ) as cur:
            return {r["key"]: r["value"] for r in await cur.fetchall()}

    async def session_for_ref(self, key: str, value: str) -> str | None:
        async with self.conn.execute("SELECT session_id FROM refs WHERE key=? AND value=?", (key, value)) as cur:
            row = await cur.fetchone()
        return str(row[0]) if row else None


async def peek_ref(path: Path, session_id: str, key: str) -> str | None:
    """Read one ref from a database file without changing it (no migration, read-only); None if there is none."""
    if not path.is_file():
        return None
    try:
        async with (
            aiosqlite.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0) as conn,
            conn.execute("SELECT value FROM refs WHERE session_id=? AND key=?", (session_id, key)) as cur,
        ):
            row = await cur.fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None
