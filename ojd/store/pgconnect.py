"""How oj reaches a PostgreSQL server: the client library loaded on first use, the
connection parameters oj adds to a URL, the URL as messages may show it (no passwords), and
the one-line errors a session's failures become.

Pure functions of a URL and the environment, apart from loading libpq: ``PgLog``
(ojd.store.postgres) and its listener open their connections with them, and ``oj`` names a
configured database with ``redacted``.
"""

from __future__ import annotations

import os

from ojd.errors import OjError, StoreUnavailable, escaped

# libpq's defaults wait for a dead peer as long as the kernel does (hours): a host gone
# mid-query or mid-connect is given up on in seconds instead. Only where the URL, the
# service file or PGCONNECT_TIMEOUT says nothing (libpq's precedence).
CLIENT_DEFAULTS = {"connect_timeout": "10", "keepalives": "1", "keepalives_idle": "10",
                   "keepalives_interval": "5", "keepalives_count": "3",
                   "tcp_user_timeout": "30000"}
_FROM_ENV = {"connect_timeout": "PGCONNECT_TIMEOUT"}


def libpq():
    """The client library, loaded on first use."""
    import ojd.store.libpq as module  # lazy: ctypes and the library, on first use only

    try:
        module.library()
    except module.Error:
        raise OjError("the state is configured to be in PostgreSQL, but libpq is not "
                      "installed: apt install libpq5") from None
    return module


_SECRETS = frozenset({"password", "sslpassword"})


def redacted(url: str) -> str:
    """The URL (or key=value conninfo) without its passwords (``user:pw@``, ``?password=``,
    ``sslpassword``), for messages."""
    from urllib.parse import unquote  # lazy: ~3 ms, for messages only

    if "://" in url:
        base, q, query = url.partition("?")
        scheme, _, rest = base.partition("://")
        netloc, slash, path = rest.partition("/")
        creds, at, hosts = netloc.rpartition("@")
        if at and ":" in creds:
            netloc = f"{creds.split(':', 1)[0]}:***@{hosts}"
        params = [f"{k}=***" if unquote(k) in _SECRETS else f"{k}{eq}{v}"
                  for k, eq, v in (part.partition("=") for part in query.split("&"))]
        shown = f"{scheme}://{netloc}{slash}{path}{q}{'&'.join(params)}"
    else:
        shown = url
    try:
        given = libpq().parse_conninfo(url)
    except Exception:  # no driver, or not parseable: shown as far as it is understood
        return shown if "://" in url else "(a connection string that does not parse)"
    if "://" not in url:
        shown = " ".join(f"{k}=***" if k in _SECRETS else f"{k}={_conninfo_value(str(v))}"
                         for k, v in given.items())
    for key in _SECRETS:  # whatever form it was given in, its value is not shown
        secret = str(given.get(key) or "")
        if len(secret) > 2 and secret in shown:
            shown = shown.replace(secret, "***")
    return shown


def _conninfo_value(value: str) -> str:
    if value and not any(c.isspace() or c in "'\\" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def client_params(url: str) -> dict[str, str]:
    """The connection parameters oj adds to ``url``: those of ``CLIENT_DEFAULTS`` that
    neither the URL, its service (``service=`` or PGSERVICE) nor the environment set."""
    given = libpq().parse_conninfo(url)
    service = given.get("service") or os.environ.get("PGSERVICE")
    if service:
        given = {**given, **dict.fromkeys(_service_keys(service), "")}
    return {k: v for k, v in CLIENT_DEFAULTS.items()
            if k not in given and not os.environ.get(_FROM_ENV.get(k, ""))}


def _service_keys(name: str) -> set[str]:
    """The keys a libpq service sets: from the first service file that has the service (the
    user's, then the system's), as libpq reads them."""
    import configparser  # lazy: ~5 ms, only for a libpq service name

    user = os.environ.get("PGSERVICEFILE") or os.path.expanduser("~/.pg_service.conf")
    sysconf = os.environ.get("PGSYSCONFDIR")
    system = (os.path.join(sysconf, "pg_service.conf") if sysconf
              else "/etc/postgresql-common/pg_service.conf")
    for path in (user, system):
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            parser.read(path)
        except (configparser.Error, UnicodeDecodeError):
            continue
        if parser.has_section(name):
            return set(parser[name])
    return set()


def db_error(where: str, e: Exception, cls: type[OjError] = OjError) -> OjError:
    text = str(e).strip().splitlines()
    return cls(escaped(f"state database {where}: {text[0] if text else type(e).__name__}"))


def session_lost(path: str, e: Exception) -> StoreUnavailable:
    """A session that ended while it was being opened (the server stopped or restarted, the
    network or a proxy cut it): the database is unreachable, not refusing oj's tables, and
    nothing was written."""
    text = str(e).strip().splitlines()
    why = text[0] if text else type(e).__name__
    return StoreUnavailable(escaped(
        f"state database {path} cannot be reached: {why}; check that the server is up and "
        "reachable from this host, then try again"))
