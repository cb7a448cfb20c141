"""A PostgreSQL primary with a synchronous streaming standby, made by the test itself (initdb +
pg_basebackup, as Debian's PostgreSQL 15 binaries do it), on two free ports of 127.0.0.1.

The database URL lists both hosts with target_session_attrs=read-write, the way the README tells
production to: libpq connects to whichever is the primary now. The standby is synchronous (a commit
returns once the standby has it), so a failover loses no committed row; after promotion it stops
waiting for a standby of its own, as HA tooling would reconfigure it."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.conftest import free_port


def _bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found (Debian package postgresql)")
    return found[-1].parent


class ReplicatedPostgres:
    def __init__(self, database: str = "ipad_mdm"):
        self.bin = _bin_dir()
        # The server refuses to run as root: the folders belong to the postgres user.
        self.root = Path(tempfile.mkdtemp(prefix="ipad-mdm-pg-"))
        shutil.chown(self.root, "postgres")
        self.root.chmod(0o700)
        self.ports = [free_port(), free_port()]
        self.data = [self.root / "primary", self.root / "standby"]
        self.database = database
        self.primary_index = 0

    # ------------------------------------------------------------------ processes
    def _pg(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin / tool), *args],
                              capture_output=True, text=True, timeout=120, check=check, cwd=self.root)

    def _ctl(self, index: int, *args: str, check: bool = True):
        return self._pg("pg_ctl", "-D", str(self.data[index]), "-l", str(self.root / f"node{index}.log"), *args,
                        check=check)

    def start(self) -> "ReplicatedPostgres":
        primary, standby = self.data
        self._pg("initdb", "-D", str(primary), "-A", "trust", "-U", "postgres", "--no-sync")
        with open(primary / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {self.ports[0]}\nunix_socket_directories = '{self.root}'\n"
                       "wal_level = replica\nmax_wal_senders = 5\nsynchronous_standby_names = '*'\n"
                       "fsync = off\nmax_connections = 200\n")
        with open(primary / "pg_hba.conf", "a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        self._ctl(0, "-w", "start")
        self._pg("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.ports[0]), "-U", "postgres", "-D", str(standby),
                 "-R", "--no-sync", "-X", "stream", "-c", "fast")
        with open(standby / "postgresql.conf", "a") as conf:
            conf.write(f"port = {self.ports[1]}\nsynchronous_standby_names = ''\n")
        self._ctl(1, "-w", "start")
        self.psql(0, f'CREATE DATABASE "{self.database}"')
        return self

    def psql(self, index: int, sql: str) -> str:
        return subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.ports[index]), "-U", "postgres", "-d",
                               "postgres", "-Atc", sql], capture_output=True, text=True, timeout=60,
                              check=True).stdout.strip()

    @property
    def url(self) -> str:
        hosts = "&".join(f"host=127.0.0.1:{p}" for p in self.ports)
        return f"postgresql+psycopg://postgres@/{self.database}?{hosts}&target_session_attrs=read-write"

    def stop_primary(self, mode: str = "fast") -> None:
        self._ctl(self.primary_index, "-m", mode, "-w", "stop")

    def start_primary(self) -> None:
        self._ctl(self.primary_index, "-w", "start")

    def fail_over(self) -> None:
        """The primary dies (immediate stop: no checkpoint, connections cut) and the standby is promoted."""
        self._ctl(0, "-m", "immediate", "-w", "stop")
        self._ctl(1, "-w", "promote")
        self.primary_index = 1

    def replication_state(self) -> str:
        return self.psql(0, "SELECT sync_state FROM pg_stat_replication")

    def close(self) -> None:
        for index in (0, 1):
            if (self.data[index] / "postmaster.pid").exists():
                self._ctl(index, "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)
