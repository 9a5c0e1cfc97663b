"""A PostgreSQL server on this machine, for development and the tests.

It runs Debian's binaries (``apt-get install postgresql``, which ``make install`` does)
as a plain local process, not as the system's service: ``initdb`` into ``home/data``
once, then ``pg_ctl start`` listening on ``127.0.0.1:port`` only, with its socket in
``home/run``. A random password is made at ``initdb`` and kept in ``home/password``
(mode 0600); :meth:`LocalPostgres.url` builds the URL with it as a secret.

PostgreSQL refuses to run as root. Run as root (containers, CI), the server runs as the
``postgres`` account the package creates (or ``nobody``), through ``runuser``, and owns
``home``; ``home``'s parents must be traversable by that account.

The server trades durability for speed (``fsync=off``): a crash of the machine may
corrupt it. It is for tests and development only; delete ``home`` to start afresh.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from pipeline.errors import ConfigurationError

USER = "pipeline"
"""The database superuser ``initdb`` creates; the URL's user."""

DEFAULT_PORT = 55432
"""Away from 5432, where a system PostgreSQL may listen."""

SERVER_ACCOUNTS = ("postgres", "nobody")
"""Who runs the server when this process is root, the first that exists."""


class LocalPostgresError(ConfigurationError):
    """The local server cannot be set up or started."""


def postgres_binaries() -> Path:
    """The directory of ``initdb``/``pg_ctl``: Debian's newest, else the ones on PATH."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: [int(part) for part in re.findall(r"\d+", path.parent.parent.name)],
    )
    if found:
        return found[-1].parent
    on_path = shutil.which("pg_ctl")
    if on_path is not None and shutil.which("initdb") is not None:
        return Path(on_path).resolve().parent
    raise LocalPostgresError(
        "no PostgreSQL server binaries: install Debian's `postgresql` package "
        "(`make install` does: apt-get install -y --no-install-recommends postgresql)"
    )


@dataclass(frozen=True, slots=True)
class LocalPostgres:
    """One local server: its files under ``home``, listening on ``127.0.0.1:port``."""

    home: Path
    port: int = DEFAULT_PORT

    @property
    def data(self) -> Path:
        """The cluster's data directory."""
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        """The server's log (read it when it does not start)."""
        return self.home / "postgres.log"

    def url(self, database: str = "postgres") -> SecretStr:
        """The asyncpg URL of ``database`` on this server, password included."""
        password = (self.home / "password").read_text().strip()
        return SecretStr(f"postgresql+asyncpg://{USER}:{password}@127.0.0.1:{self.port}/{database}")

    def running(self) -> bool:
        """Whether the server of ``home`` runs (``pg_ctl status``)."""
        if not (self.data / "PG_VERSION").exists():
            return False
        status = self._pg_ctl("status", check=False)
        return status.returncode == 0

    def running_port(self) -> int | None:
        """The port the server of ``home`` listens on, if it runs (whatever ``port`` says)."""
        if not self.running():
            return None
        # postmaster.pid: pid, data directory, start time, port, ... one per line.
        lines = (self.data / "postmaster.pid").read_text().splitlines()
        return int(lines[3]) if len(lines) > 3 and lines[3].isdigit() else None

    def up(self, timeout_s: float = 30.0) -> SecretStr:
        """Create the cluster if needed, start the server unless it runs; its URL."""
        if not (self.data / "PG_VERSION").exists():
            self._init()
        if not self.running():
            (self.home / "run").mkdir(mode=0o700, exist_ok=True)
            self._hand_over(self.home / "run")
            options = " ".join(
                [
                    "-c listen_addresses=127.0.0.1",
                    f"-p {self.port}",
                    f"-k {self.home / 'run'}",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                ]
            )
            started = self._pg_ctl(
                "start", "-w", "-t", str(int(timeout_s)), "-l", str(self.log_file), "-o", options
            )
            if started.returncode != 0:
                raise LocalPostgresError(
                    f"PostgreSQL did not start on 127.0.0.1:{self.port}: "
                    f"{started.stderr.strip() or started.stdout.strip()}; see {self.log_file}"
                )
        return self.url()

    def down(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended), if it runs."""
        if self.running():
            self._pg_ctl("stop", "-m", "fast", "-w")

    def _init(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        password_file = self.home / "password"
        password_file.write_text(secrets.token_urlsafe(18) + "\n")
        password_file.chmod(0o600)
        self._hand_over(self.home)
        self._hand_over(password_file)
        created = self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            USER,
            "-E",
            "UTF8",
            "--locale=C",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",  # the socket is in home/run, readable by its owner only
            f"--pwfile={password_file}",
            "--no-sync",
            "--no-instructions",
            check=False,
        )
        if created.returncode != 0:
            shutil.rmtree(self.data, ignore_errors=True)
            raise LocalPostgresError(f"initdb failed: {created.stderr.strip()}")

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run("pg_ctl", "-D", str(self.data), *args, check=check)

    def _run(self, tool: str, *args: str, check: bool) -> subprocess.CompletedProcess[str]:
        command = [str(postgres_binaries() / tool), *args]
        account = _server_account()
        if account is not None:
            command = ["runuser", "-u", account, "--", *command]
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
            env={**os.environ, "LC_ALL": "C"},
            cwd=self.home,
        )

    def _hand_over(self, path: Path) -> None:
        """Make ``path`` the server account's (root only: otherwise it is ours already)."""
        account = _server_account()
        if account is not None:
            entry = pwd.getpwnam(account)
            os.chown(path, entry.pw_uid, entry.pw_gid)


def _server_account() -> str | None:
    """The account to run the server as, or ``None`` to run it as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in SERVER_ACCOUNTS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise LocalPostgresError("running as root and no unprivileged account to run PostgreSQL")
