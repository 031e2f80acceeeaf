"""`hoban serve`: the Dagster webserver and daemon of a deployment, checked before either starts.

The checks come first so that a mistake reads as one line instead of a traceback in one of two
logs: the port is free, the instance in ``$DAGSTER_HOME`` opens and answers (a PostgreSQL that
refuses its password is named with the variable to fix), and the webserver listens on loopback
unless ``--expose`` is given, because Dagster's open-source webserver has no login. Then both
processes start; when one of them ends, the other is stopped, so a deployment never stays half up.
A workspace whose code location fails to load is not refused here: the webserver shows the error
and the daemon keeps serving every location that loads.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
PASSWORD_VARIABLE = "DAGSTER_PG_PASSWORD"  # deploy/dagster.yaml reads the password from it
STOP_GRACE_S = 20.0


class ServeError(Exception):
    """A deployment that cannot start, with what to do about it."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another program listens on, before anything starts (the webserver's own
    error would come after the daemon is already up)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # the webserver binds with SO_REUSEADDR too: a port only in TIME_WAIT is free for it
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ServeError(f"port {port} on {host} is in use ({exc.strerror}): another program, or another "
                             f"`hoban serve`, listens there; stop it or pass --port with a free port") from None


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def _database_error(exc: BaseException) -> BaseException:
    """The driver's own error when there is one (it names host, port and user), else the outermost."""
    return next((e for e in _chain(exc) if type(e).__name__ == "OperationalError"), exc)


def check_instance() -> str:
    """Open the instance of ``$DAGSTER_HOME`` and read from its run storage; returns a line saying
    which storage answered."""
    import dagster as dg

    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise ServeError("DAGSTER_HOME is not set: point it at the folder holding dagster.yaml "
                         "(`make serve` uses ./.dagster_home; a team uses a copy of deploy/dagster.yaml)")
    config = Path(home) / "dagster.yaml"
    try:
        with dg.DagsterInstance.get() as instance:
            instance.get_runs(limit=1)
            return f"instance {config}: {type(instance.run_storage).__name__} answers"
    except Exception as exc:
        cause = _database_error(exc)
        detail = " ".join(str(cause).split())
        if "password authentication failed" in detail:
            raise ServeError(f"PostgreSQL refused the password ({detail}); {config} reads it from "
                             f"{PASSWORD_VARIABLE}: set that variable to the database user's password") from None
        raise ServeError(f"the instance in {config} cannot open its storage: {type(cause).__name__}: {detail}") from None


@dataclass
class Service:
    name: str
    command: list[str]
    process: subprocess.Popen | None = None


def services(workspace: Path, host: str, port: int) -> list[Service]:
    # the same interpreter's console scripts: the daemon and webserver of this venv's dagster
    bin_dir = Path(sys.executable).parent
    return [
        Service("dagster-daemon", [str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)]),
        Service("dagster-webserver", [str(bin_dir / "dagster-webserver"), "-h", host, "-p", str(port),
                                      "-w", str(workspace)]),
    ]


def _stop(running: list[Service]) -> None:
    for service in running:
        if service.process and service.process.poll() is None:
            service.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for service in running:
        if service.process is None:
            continue
        try:
            service.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()


def run_services(running: list[Service], echo) -> int:
    """Start every service, then wait: the first one to end stops the rest, and its exit code is
    the command's. SIGINT/SIGTERM stop them all (exit 0)."""
    stopping = []

    def request_stop(signum, frame):
        stopping.append(signum)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for service in running:
            service.process = subprocess.Popen(service.command)
            echo(f"started {service.name} (pid {service.process.pid}): {' '.join(service.command)}")
        while not stopping:
            for service in running:
                code = service.process.poll()
                if code is not None:
                    echo(f"{service.name} ended with exit code {code}; stopping the others")
                    _stop(running)
                    return code or 1
            time.sleep(0.5)
        echo("stopping the webserver and the daemon")
        _stop(running)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(workspace: Path, host: str, port: int, expose: bool, echo) -> int:
    if not workspace.is_file():
        raise ServeError(f"workspace file {workspace} not found: pass --workspace (workspace.yaml for the local "
                         "code location, deploy/workspace.yaml for a gRPC code server)")
    if not is_loopback(host) and not expose:
        raise ServeError(f"--host {host} would let anyone who reaches this machine launch runs and read every "
                         "asset: Dagster's webserver has no login. Keep 127.0.0.1 and put an authenticating "
                         "reverse proxy in front (README 'Team deployment'), or pass --expose if one already is")
    check_port_free(host, port)
    echo(check_instance())
    echo(f"webserver on http://{host}:{port} (workspace {workspace})")
    return run_services(services(workspace, host, port), echo)
