"""
The project's database: every query, written once for both backends (SQLite and PostgreSQL).

A backend supplies a connection's primitives (`_fetchone`, `_fetchall`, and `_tx` for writes); the queries use
`?` placeholders and the syntax both engines share (orchestrator/db/dialect.py holds what differs).
Rows are converted to domain objects at this border.
"""

from __future__ import annotations

import abc
import json
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, ClassVar, Protocol

from orchestrator.db.rows import (
    JOB_COLUMNS,
    Row,
    SessionRow,
    StageRow,
    Vote,
    image_from_row,
    job_from_row,
    job_values,
    session_from_row,
    stage_from_row,
)
from orchestrator.db.url import is_postgres_url, redact
from orchestrator.models import ImageRecord, Job, JobSpec, JobStatus

# A job in one of these has ended: nothing may move it again (the guard holds across instances too, as it is
# part of the UPDATE's WHERE, which PostgreSQL re-checks on the row it locked).
TERMINAL = "('done', 'failed', 'cancelled')"


def _marks(n: int) -> str:
    return ",".join("?" * n)


class Tx(Protocol):
    """One write transaction: statements run in order and land together or not at all."""

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run a statement; the number of rows it touched."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Row | None: ...


class Database(abc.ABC):
    """
    The project's database, SQLite or PostgreSQL by its target.

    `Database(path)` opens a SQLite file (the default), `Database("postgresql://...")` a PostgreSQL server
    through a connection pool; both behave the same for their callers. The methods a backend supplies are
    abstract; `Database(target)` still works because `__new__` picks the concrete backend.
    """

    #: "sqlite" or "postgresql"
    backend: ClassVar[str]

    def __new__(cls, target: Path | str, *, busy_timeout_s: float = 30.0) -> Database:
        if cls is Database:
            if is_postgres_url(target):
                from orchestrator.db.postgres import PostgresDatabase

                cls = PostgresDatabase
            else:
                from orchestrator.db.sqlite import SqliteDatabase

                cls = SqliteDatabase
        return super().__new__(cls)

    @classmethod
    def at(cls, target: Path | str, *, busy_timeout_s: float = 30.0) -> Database:
        """`Database(target)` in a form type checkers follow (they refuse to call an abstract class directly)."""
        return cls(target, busy_timeout_s=busy_timeout_s)

    def __init__(self, target: Path | str, *, busy_timeout_s: float = 30.0) -> None:
        self.busy_timeout_s = busy_timeout_s
        #: where the data is, safe to show (a URL's password is redacted)
        self.where = redact(target)

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema up to date."""
        ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def migrate(self) -> int:
        """Apply the migrations this database has not had; the schema version it is at."""
        ...

    @abc.abstractmethod
    async def user_version(self) -> int:
        """The schema version the database is at."""
        ...

    @abc.abstractmethod
    def _tx(self) -> AbstractAsyncContextManager[Tx]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        ...

    @abc.abstractmethod
    async def _fetchone(self, sql: str, args: Sequence[Any] = ()) -> Row | None: ...

    @abc.abstractmethod
    async def _fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Row]: ...

    async def _execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """One write statement in its own transaction; the number of rows it touched."""
        async with self._tx() as tx:
            return await tx.execute(sql, args)

    async def _count(self, sql: str, args: Sequence[Any] = ()) -> int:
        row = await self._fetchone(sql, args)
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ generations (jobs)

    async def insert_jobs(self, jobs: Sequence[Job]) -> None:
        async with self._tx() as tx:
            await tx.executemany(
                f"INSERT INTO generations ({JOB_COLUMNS}) VALUES ({_marks(26)})", [job_values(j) for j in jobs]
            )

    async def update_job(self, job: Job) -> bool:
        """
        Persist a job's mutable fields (status, attempt, node, prompt id, error, times).

        An ended job stays ended: False when the row had ended already (and nothing was written).
        """
        touched = await self._execute(
            f"""UPDATE generations SET status=?, attempt=?, node_id=?, prompt_id=?, error=?, started_at=?,
               finished_at=?, failed_nodes=? WHERE id=? AND status NOT IN {TERMINAL}""",
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
        return touched == 1

    async def finish_job(self, job: Job, image: ImageRecord) -> bool:
        """Record a delivered image; False if the job was already done (so it is never delivered twice)."""
        touched = await self._execute(
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
        return touched == 1

    async def adopt_job(self, job_id: str, batch_id: str, spec: JobSpec) -> None:
        """A speculative job becomes a stage's: its batch, session, stage, owner, parent and position."""
        await self._execute(
            "UPDATE generations SET batch_id=?, session_id=?, stage_id=?, user_id=?, parent_id=?, idx=? WHERE id=?",
            (batch_id, spec.session_id, spec.stage_id, spec.user_id, spec.parent_id, spec.index, job_id),
        )

    async def get_job(self, job_id: str) -> Job | None:
        row = await self._fetchone("SELECT * FROM generations WHERE id=?", (job_id,))
        return job_from_row(row) if row else None

    async def jobs_with_status(self, statuses: Iterable[JobStatus]) -> list[Job]:
        vals = [s.value for s in statuses]
        rows = await self._fetchall(
            f"SELECT * FROM generations WHERE status IN ({_marks(len(vals))}) ORDER BY created_at, idx", vals
        )
        return [job_from_row(r) for r in rows]

    async def batch_jobs(self, batch_id: str) -> list[Job]:
        rows = await self._fetchall("SELECT * FROM generations WHERE batch_id=? ORDER BY idx", (batch_id,))
        return [job_from_row(r) for r in rows]

    async def stage_jobs(self, stage_id: str) -> list[Job]:
        rows = await self._fetchall("SELECT * FROM generations WHERE stage_id=? ORDER BY idx", (stage_id,))
        return [job_from_row(r) for r in rows]

    async def image(self, image_id: str) -> ImageRecord | None:
        row = await self._fetchone("SELECT * FROM generations WHERE id=? AND status='done'", (image_id,))
        return image_from_row(row) if row else None

    async def stage_images(self, stage_id: str) -> list[ImageRecord]:
        rows = await self._fetchall(
            "SELECT * FROM generations WHERE stage_id=? AND status='done' ORDER BY idx", (stage_id,)
        )
        return [image_from_row(r) for r in rows]

    async def batch_images(self, batch_id: str) -> list[ImageRecord]:
        rows = await self._fetchall(
            "SELECT * FROM generations WHERE batch_id=? AND status='done' ORDER BY idx", (batch_id,)
        )
        return [image_from_row(r) for r in rows]

    async def clear_image_path(self, image_id: str) -> None:
        """The full-size file was pruned; keep the thumbnail."""
        await self._execute("UPDATE generations SET image_path=NULL WHERE id=?", (image_id,))

    async def queued_images_for_user(self, user_id: str) -> int:
        # A cancelled stage's jobs that are too far along to stop (an image being stored) are finishing, not
        # waiting: counting them refused a new session in the moment after the owner ended the last one.
        return await self._count(
            """SELECT COUNT(*) FROM generations g WHERE g.user_id=? AND g.status IN ('queued','submitted','running')
               AND NOT EXISTS (SELECT 1 FROM stages s WHERE s.id = g.stage_id AND s.status = 'cancelled')""",
            (user_id,),
        )

    # ------------------------------------------------------------------ sessions

    async def insert_session(self, s: SessionRow) -> None:
        await self._execute(
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

    async def update_session(self, s: SessionRow) -> None:
        await self._execute(
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

    async def get_session(self, session_id: str) -> SessionRow | None:
        row = await self._fetchone("SELECT * FROM sessions WHERE id=?", (session_id,))
        return session_from_row(row) if row else None

    async def sessions_in_states(self, states: Iterable[str]) -> list[SessionRow]:
        vals = list(states)
        rows = await self._fetchall(
            f"SELECT * FROM sessions WHERE state IN ({_marks(len(vals))}) ORDER BY created_at", vals
        )
        return [session_from_row(r) for r in rows]

    async def count_user_sessions(self, owner_id: str, states: Iterable[str]) -> int:
        vals = list(states)
        return await self._count(
            f"SELECT COUNT(*) FROM sessions WHERE owner_id=? AND state IN ({_marks(len(vals))})", [owner_id, *vals]
        )

    # ------------------------------------------------------------------ stages

    async def insert_stage(self, st: StageRow) -> None:
        await self._execute(
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

    async def update_stage(self, st: StageRow) -> None:
        await self._execute(
            "UPDATE stages SET status=?, batch_id=?, prompt=?, negative_prompt=?, data=? WHERE id=?",
            (st.status, st.batch_id, st.prompt, st.negative_prompt, json.dumps(st.data), st.id),
        )

    async def get_stage(self, stage_id: str) -> StageRow | None:
        row = await self._fetchone("SELECT * FROM stages WHERE id=?", (stage_id,))
        return stage_from_row(row) if row else None

    async def session_stages(self, session_id: str) -> list[StageRow]:
        rows = await self._fetchall(
            "SELECT * FROM stages WHERE session_id=? ORDER BY idx, created_at",
            (session_id,),
        )
        return [stage_from_row(r) for r in rows]

    async def stage_for_batch(self, batch_id: str) -> StageRow | None:
        row = await self._fetchone("SELECT * FROM stages WHERE batch_id=?", (batch_id,))
        return stage_from_row(row) if row else None

    # ------------------------------------------------------------------ votes and participants

    async def set_vote(self, session_id: str, image_id: str, user_id: str, value: int | None) -> None:
        """Cast, change (value = +1 / -1) or withdraw (None) a vote; one statement, so concurrent votes never mix."""
        if value is None:
            await self._execute("DELETE FROM votes WHERE image_id=? AND user_id=?", (image_id, user_id))
        else:
            await self._execute(
                """INSERT INTO votes (session_id, image_id, user_id, value, updated_at) VALUES (?,?,?,?,?)
                   ON CONFLICT(image_id, user_id) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at""",
                (session_id, image_id, user_id, value, time.time()),
            )

    async def votes_for_images(self, image_ids: Sequence[str]) -> list[Vote]:
        if not image_ids:
            return []
        rows = await self._fetchall(
            f"SELECT * FROM votes WHERE image_id IN ({_marks(len(image_ids))}) ORDER BY updated_at", list(image_ids)
        )
        return [Vote(r["session_id"], r["image_id"], r["user_id"], r["value"]) for r in rows]

    async def get_vote(self, image_id: str, user_id: str) -> int | None:
        row = await self._fetchone("SELECT value FROM votes WHERE image_id=? AND user_id=?", (image_id, user_id))
        return int(row[0]) if row else None

    async def add_participant(self, session_id: str, user_id: str, role: str) -> None:
        await self._execute(
            """INSERT INTO participants (session_id, user_id, role, added_at) VALUES (?,?,?,?)
               ON CONFLICT(session_id, user_id) DO UPDATE SET role=excluded.role""",
            (session_id, user_id, role, time.time()),
        )

    async def participants(self, session_id: str) -> dict[str, str]:
        rows = await self._fetchall(
            "SELECT user_id, role FROM participants WHERE session_id=? ORDER BY added_at", (session_id,)
        )
        return {r["user_id"]: r["role"] for r in rows}

    # ------------------------------------------------------------------ intent document

    async def add_intent(self, session_id: str, entry: dict[str, Any]) -> None:
        await self._execute(
            "INSERT INTO intent (session_id, entry, created_at) VALUES (?,?,?)",
            (session_id, json.dumps(entry, ensure_ascii=False), time.time()),
        )

    async def intent(self, session_id: str) -> list[dict[str, Any]]:
        rows = await self._fetchall("SELECT entry FROM intent WHERE session_id=? ORDER BY id", (session_id,))
        return [json.loads(r["entry"]) for r in rows]

    async def pop_intent(self, session_id: str) -> dict[str, Any] | None:
        # One statement: two instances popping at once never both get the same entry.
        async with self._tx() as tx:
            row = await tx.fetchone(
                """DELETE FROM intent WHERE id = (SELECT MAX(id) FROM intent WHERE session_id=?)
                   RETURNING entry""",
                (session_id,),
            )
        return dict(json.loads(row["entry"])) if row else None

    # ------------------------------------------------------------------ front-end references (opaque to the core)

    async def set_ref(self, session_id: str, key: str, value: str) -> None:
        await self._execute(
            """INSERT INTO refs (session_id, key, value) VALUES (?,?,?)
               ON CONFLICT(session_id, key) DO UPDATE SET value=excluded.value""",
            (session_id, key, value),
        )

    async def get_ref(self, session_id: str, key: str) -> str | None:
        row = await self._fetchone("SELECT value FROM refs WHERE session_id=? AND key=?", (session_id, key))
        return str(row[0]) if row else None

    async def refs(self, session_id: str, prefix: str = "") -> dict[str, str]:
        rows = await self._fetchall(
            "SELECT key, value FROM refs WHERE session_id=? AND key LIKE ? ORDER BY key", (session_id, prefix + "%")
        )
        return {r["key"]: r["value"] for r in rows}

    async def session_for_ref(self, key: str, value: str) -> str | None:
        row = await self._fetchone("SELECT session_id FROM refs WHERE key=? AND value=?", (key, value))
        return str(row[0]) if row else None


# Read-only look-ups for `vibes doctor`, which runs beside the engine: they never create or migrate anything.
PEEK_REF = "SELECT value FROM refs WHERE session_id=? AND key=?"
