"""A throwaway PostgreSQL server for tests: initdb + pg_ctl from the Debian package, run as
the ``postgres`` user when the tests run as root, on 127.0.0.1 and a free port, in tmp."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from testsupport.e2e import free_port


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if found:
        return Path(found[-1]).parent
    exe = shutil.which("postgres")
    return Path(exe).parent if exe else None


@dataclass
class PgServer:
    host: str
    port: int
    user: str
    password: str
    db: str
    data: Path
    bindir: Path
    runas: list[str]

    def env(self) -> dict[str, str]:
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_DB": self.db,
                "DAGSTER_PG_USERNAME": self.user, "DAGSTER_PG_PASSWORD": self.password}

    def stop(self) -> None:
        subprocess.run([*self.runas, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.data.parent, ignore_errors=True)


def start_postgres(tmp: Path | None = None) -> PgServer:
    """Start a server in ``tmp`` (default: a new directory under /tmp the postgres user can reach)."""
    import tempfile

    tmp = tmp or Path(tempfile.mkdtemp(prefix="tracelake-pg-", dir="/tmp"))
    bindir = postgres_bin()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL is not installed (apt-get install -y postgresql)")
    runas: list[str] = []
    owner = None
    if os.geteuid() == 0:  # initdb refuses root: run the server as the package's user
        owner = pwd.getpwnam("postgres")
        runas = ["runuser", "-u", "postgres", "--"]
    tmp.mkdir(parents=True, exist_ok=True)
    data, sock = tmp / "data", tmp / "sock"
    sock.mkdir(exist_ok=True)
    pwfile = tmp / "pw"
    password = secrets.token_hex(12)
    pwfile.write_text(password)
    for p in (tmp, sock, pwfile):
        if owner is not None:
            os.chown(p, owner.pw_uid, owner.pw_gid)
    os.chmod(tmp, 0o700)
    user, db = "tracelake", "dagster"
    subprocess.run([*runas, str(bindir / "initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}",
                    "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True, timeout=120)
    pwfile.unlink()
    port = free_port()
    opts = f"-h 127.0.0.1 -p {port} -k {sock} -c fsync=off -c max_connections=100"
    subprocess.run([*runas, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(tmp / "pg.log"),
                    "-w", "-t", "60", "start"], check=True, capture_output=True, timeout=90)
    srv = PgServer("127.0.0.1", port, user, password, db, data, bindir, runas)
    env = dict(os.environ, PGPASSWORD=password)
    subprocess.run([str(bindir / "createdb") if (bindir / "createdb").exists() else "createdb",
                    "-h", "127.0.0.1", "-p", str(port), "-U", user, db],
                   check=True, capture_output=True, timeout=60, env=env)
    return srv
