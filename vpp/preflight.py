"""Checks before anything starts: every failure is one line naming the setting or the file.

`vpp serve`, `vpp run`, `vpp db upgrade` and `vpp simulate` call :func:`check` before they
build a component: the database is reachable (and the database exists), every Kafka
bootstrap server resolves and accepts a connection, the API's host and port can be bound.
A failure raises :class:`vpp.config.ConfigError` with the setting's name in both spellings
and the reason; the CLI prints it and exits 2, with nothing started and no traceback.
"""

from __future__ import annotations

import errno
import socket

import sqlalchemy as sa

from vpp.config import ConfigError, Settings


def _database(settings: Settings) -> None:
    from vpp.store import db

    url = settings.database.masked_url()
    try:
        engine = db.create_db_engine(settings.database)
    except Exception as exc:  # a driver missing, a malformed URL
        raise ConfigError(f"database.url (VPP_DATABASE__URL) {url}: {exc}") from None
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise ConfigError(
            f"database.url (VPP_DATABASE__URL) {url}: cannot connect: {reason}"
        ) from None
    finally:
        engine.dispose()


def _kafka(settings: Settings, timeout_s: float = 3.0) -> None:
    servers = settings.bus.kafka.bootstrap_servers
    for server in (s.strip() for s in servers.split(",") if s.strip()):
        host, _, port_text = server.rpartition(":")
        where = f"bus.kafka.bootstrap_servers (VPP_BUS__KAFKA__BOOTSTRAP_SERVERS) {server}"
        if not host or not port_text.isdigit():
            raise ConfigError(f"{where}: give host:port")
        try:
            infos = socket.getaddrinfo(host, int(port_text), type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ConfigError(f"{where}: unknown host {host!r} ({exc.strerror})") from None
        last: OSError | None = None
        for family, kind, proto, _, address in infos:
            try:
                with socket.socket(family, kind, proto) as sock:
                    sock.settimeout(timeout_s)
                    sock.connect(address)
                    last = None
                    break
            except OSError as exc:
                last = exc
        if last is not None:
            raise ConfigError(f"{where}: unreachable ({last.strerror or last})") from None


def _api(settings: Settings) -> None:
    host, port = settings.api.host, settings.api.port
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(
            f"api.host (VPP_API__HOST) {host!r}: cannot resolve ({exc.strerror})"
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"api.port (VPP_API__PORT) {port}: already in use on {host}"
                ) from None
            raise ConfigError(
                f"api.host (VPP_API__HOST) {host!r}: cannot listen there ({exc.strerror})"
            ) from None


def check(
    settings: Settings, *, database: bool = True, bus: bool = True, api: bool = False
) -> None:
    """Refuse to start on a setting that cannot work (see the module docstring)."""
    if api:
        _api(settings)
    if database:
        _database(settings)
    if bus and settings.bus.kind == "kafka":
        _kafka(settings)
