"""libpq, PostgreSQL's own client library, called through ctypes: what the PostgreSQL store
needs of it and nothing more.

Why not a driver package: oj is started by shell steps and scripts, and a cold
``oj queue push`` pays for every import. psycopg's import alone takes about 100 ms and 24 MB
(asyncio, logging, its type adapters); ``ctypes`` and ``dlopen("libpq.so.5")`` take 6–7 ms
and 6 MB. libpq is also what gives the URL its conventions (service files, ``PGHOST``,
``~/.pgpass``, SSL), so nothing of them is reimplemented here.

Values go to the server as text parameters and come back as text, converted by column type
(integers, booleans; everything else is a str). The waits for the server (to connect, for a
result) are Python's, on the socket: Ctrl-C and signal handlers run in them, and other
threads (a job's lease renewer) run meanwhile, as they do in the short libpq calls, which
release the GIL. The caller serialises the use of one connection.
"""

from __future__ import annotations

import ctypes
import select
import threading
import time
from ctypes import POINTER, Structure, c_char_p, c_int, c_uint, c_void_p

# PQstatus / PQconnectPoll / PQresultStatus / PQtransactionStatus values (libpq-fe.h)
CONNECTION_OK, _CONNECTION_BAD = 0, 1
_POLLING_FAILED, _POLLING_READING, _POLLING_WRITING, _POLLING_OK = 0, 1, 2, 3
PGRES_EMPTY_QUERY, PGRES_COMMAND_OK, PGRES_TUPLES_OK = 0, 1, 2
TRANS_IDLE, TRANS_UNKNOWN = 0, 4
_DIAG_SQLSTATE, _DIAG_MESSAGE = ord("C"), ord("M")  # the code; the message without "ERROR: "
# SQLSTATE classes of a server or session that is unavailable rather than of a bad query
# (those PEP 249 drivers raise as OperationalError): connection exceptions, authorisation,
# rollbacks, resources, object state (lock not available), operator intervention (shutdown,
# cancel). Errors that end the session whatever their class are ``lost``.
_UNAVAILABLE_CLASSES = frozenset({"08", "28", "40", "53", "54", "55", "57", "58", "HV"})
_INT_TYPES = frozenset({20, 21, 23, 26})  # int8, int2, int4, oid
_BOOL = 16


class Error(Exception):
    """What libpq or the server said, on one line; ``sqlstate`` when the server said it."""

    def __init__(self, message: str, sqlstate: str | None = None, lost: bool = False) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.lost = lost  # the session is gone: nothing of an open transaction will commit

    @property
    def unavailable(self) -> bool:
        """The server or the session failed, not the query: the same may be tried again."""
        return self.lost or (self.sqlstate or "")[:2] in _UNAVAILABLE_CLASSES


class _Notify(Structure):
    pass


_Notify._fields_ = [("relname", c_char_p), ("be_pid", c_int), ("extra", c_char_p),
                    ("next", POINTER(_Notify))]


class _Option(Structure):
    _fields_ = [("keyword", c_char_p), ("envvar", c_char_p), ("compiled", c_char_p),
                ("val", c_char_p), ("label", c_char_p), ("dispchar", c_char_p),
                ("dispsize", c_int)]


_NoticeProcessor = ctypes.CFUNCTYPE(None, c_void_p, c_char_p)
# Notices (``relation already exists, skipping``) are not the user's business: libpq would
# print them on stderr. The callback object is kept for as long as the library.
_IGNORE_NOTICE = _NoticeProcessor(lambda arg, message: None)

_lib = None


def library():
    """libpq, loaded on first use. Raises Error where it is not installed."""
    global _lib
    if _lib is not None:
        return _lib
    try:
        lib = ctypes.CDLL("libpq.so.5")
    except OSError:
        from ctypes.util import find_library  # lazy: 10 ms, only where the soname is missing

        name = find_library("pq")
        if name is None:
            raise Error("libpq is not installed (apt install libpq5)") from None
        try:
            lib = ctypes.CDLL(name)
        except OSError as e:
            raise Error(f"libpq cannot be loaded: {e}") from None
    signatures = {
        "PQconnectStartParams": (c_void_p, [POINTER(c_char_p), POINTER(c_char_p), c_int]),
        "PQconnectdbParams": (c_void_p, [POINTER(c_char_p), POINTER(c_char_p), c_int]),
        "PQconnectPoll": (c_int, [c_void_p]),
        "PQstatus": (c_int, [c_void_p]),
        "PQerrorMessage": (c_char_p, [c_void_p]),
        "PQfinish": (None, [c_void_p]),
        "PQsetNoticeProcessor": (c_void_p, [c_void_p, _NoticeProcessor, c_void_p]),
        "PQsendQuery": (c_int, [c_void_p, c_char_p]),
        "PQsendQueryParams": (c_int, [c_void_p, c_char_p, c_int, c_void_p, POINTER(c_char_p),
                                      c_void_p, c_void_p, c_int]),
        "PQisBusy": (c_int, [c_void_p]),
        "PQgetResult": (c_void_p, [c_void_p]),
        "PQgetCancel": (c_void_p, [c_void_p]),
        "PQcancel": (c_int, [c_void_p, c_char_p, c_int]),
        "PQfreeCancel": (None, [c_void_p]),
        "PQresultStatus": (c_int, [c_void_p]),
        "PQresultErrorMessage": (c_char_p, [c_void_p]),
        "PQresultErrorField": (c_char_p, [c_void_p, c_int]),
        "PQntuples": (c_int, [c_void_p]),
        "PQnfields": (c_int, [c_void_p]),
        "PQftype": (c_uint, [c_void_p, c_int]),
        "PQgetisnull": (c_int, [c_void_p, c_int, c_int]),
        "PQgetvalue": (c_char_p, [c_void_p, c_int, c_int]),
        "PQcmdStatus": (c_char_p, [c_void_p]),
        "PQclear": (None, [c_void_p]),
        "PQtransactionStatus": (c_int, [c_void_p]),
        "PQsocket": (c_int, [c_void_p]),
        "PQconsumeInput": (c_int, [c_void_p]),
        "PQnotifies": (POINTER(_Notify), [c_void_p]),
        "PQfreemem": (None, [c_void_p]),
        "PQconninfoParse": (POINTER(_Option), [c_char_p, POINTER(c_void_p)]),
        "PQconninfoFree": (None, [POINTER(_Option)]),
        "PQconninfo": (POINTER(_Option), [c_void_p]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    _lib = lib
    return lib


def _text(raw: bytes | None) -> str:
    return (raw or b"").decode("utf-8", "replace").strip()


def parse_conninfo(conninfo: str) -> dict[str, str]:
    """The parameters a URL or ``key=value`` string sets, as libpq parses it (no
    environment, no service file). Raises Error on one it cannot parse."""
    lib = library()
    errmsg = c_void_p()
    opts = lib.PQconninfoParse(conninfo.encode(), ctypes.byref(errmsg))
    if not opts:
        message = "out of memory"
        if errmsg.value:
            message = _text(ctypes.string_at(errmsg.value))
            lib.PQfreemem(errmsg)
        raise Error(message)
    return _options(lib, opts)


def _options(lib, opts) -> dict[str, str]:
    try:
        out = {}
        i = 0
        while opts[i].keyword is not None:
            if opts[i].val is not None:
                out[opts[i].keyword.decode()] = opts[i].val.decode("utf-8", "replace")
            i += 1
        return out
    finally:
        lib.PQconninfoFree(opts)


def text_array(values: list[str]) -> str:
    """A ``text[]`` literal of ``values``, for one text parameter."""
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
                          for v in values) + "}"


class Result:
    """The last statement's rows (converted) and command tag (``COMMIT``, ``INSERT 0 1``)."""

    __slots__ = ("rows", "status")

    def __init__(self, rows: list[tuple], status: str) -> None:
        self.rows = rows
        self.status = status


class Connection:
    """One session. Not thread-safe: the caller holds a lock around every call."""

    def __init__(self, conninfo: str, **params: str) -> None:
        lib = library()
        # the URL first, so that the keywords after it win (libpq applies them in order)
        keys = ["dbname", *params]
        values = [conninfo, *params.values()]
        ckeys = (c_char_p * (len(keys) + 1))(*[k.encode() for k in keys], None)
        cvalues = (c_char_p * (len(values) + 1))(*[v.encode() for v in values], None)
        self._lib = lib
        self._pg: int | None = lib.PQconnectStartParams(ckeys, cvalues, 1)
        if not self._pg:
            raise Error("out of memory", lost=True)
        try:
            opts = self.parameters()
            if "," in opts.get("host", "") + opts.get("hostaddr", ""):
                # several hosts: libpq moves on from one that does not answer in time, which
                # no poller can make it do; Ctrl-C waits for that
                lib.PQfinish(self._pg)
                self._pg = lib.PQconnectdbParams(ckeys, cvalues, 1)
                if lib.PQstatus(self._pg) != CONNECTION_OK:
                    raise Error(_text(lib.PQerrorMessage(self._pg)) or "cannot connect",
                                lost=True)
            else:
                self._connect(opts)
        except BaseException:
            self.close()
            raise
        self._notice = _IGNORE_NOTICE  # libpq keeps the pointer: it lives as long as we do
        lib.PQsetNoticeProcessor(self._pg, self._notice, None)

    def _connect(self, opts: dict[str, str]) -> None:
        """Drive the connection to its end with Python waiting on the socket, so that Ctrl-C
        stops a connect to a host that does not answer. libpq leaves ``connect_timeout`` to
        whoever polls."""
        lib, pg = self._lib, self._pg
        timeout = _connect_timeout(opts.get("connect_timeout"))
        deadline = None if timeout is None else time.monotonic() + timeout
        status = _POLLING_WRITING
        while lib.PQstatus(pg) != _CONNECTION_BAD:
            if status == _POLLING_OK:
                return
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if wait == 0.0:
                raise Error(f"timeout expired (connect_timeout={timeout:g})", lost=True)
            fd = lib.PQsocket(pg)
            poller = select.poll()
            if fd >= 0:  # (no socket yet: nothing to wait for, libpq goes on)
                poller.register(fd, select.POLLIN if status == _POLLING_READING
                                else select.POLLOUT)
            if fd < 0 or poller.poll(None if wait is None else int(wait * 1000) + 1):
                status = lib.PQconnectPoll(pg)
            if status == _POLLING_FAILED:
                break
        raise Error(_text(lib.PQerrorMessage(pg)) or "cannot connect", lost=True)

    @property
    def closed(self) -> bool:
        """Closed here, or the session was lost (the server ended it, the network broke)."""
        return not self._pg or self._lib.PQstatus(self._pg) != CONNECTION_OK

    @property
    def transaction_status(self) -> int:
        return TRANS_UNKNOWN if not self._pg else self._lib.PQtransactionStatus(self._pg)

    def execute(self, sql: str, params: tuple = ()) -> Result:
        """Run ``sql``: with ``params`` ($1, $2, …: str, int, bool or None) one statement;
        without, any number separated by ``;``. The last one's rows and tag are returned;
        the first error (the server runs nothing after it) is raised.

        The wait for the server is Python's, not libpq's, so that Ctrl-C stops a command
        waiting for a lock: the session, whose state is then unknown, is closed (the server
        ends its transaction)."""
        lib, pg = self._lib, self._pg
        if not pg:
            raise Error("the connection is closed", lost=True)
        values = None
        if params:
            values = (c_char_p * len(params))(*[_param(v) for v in params])
        rows: list[tuple] = []
        status = ""
        error: Error | None = None
        try:  # from the send: a signal may interrupt right after it
            if values is not None:
                sent = lib.PQsendQueryParams(pg, sql.encode(), len(params), None, values,
                                             None, None, 0)
            else:
                sent = lib.PQsendQuery(pg, sql.encode())
            while sent:
                self._wait(pg)
                res = lib.PQgetResult(pg)
                if not res:
                    break
                try:
                    code = lib.PQresultStatus(res)
                    if error is not None:
                        pass
                    elif code in (PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY):
                        rows = self._rows(res) if code == PGRES_TUPLES_OK else []
                        status = _text(lib.PQcmdStatus(res))
                    else:
                        error = self._error(res)
                except Error as e:  # a row it cannot read; the results are still drained
                    error = error or e
                finally:
                    lib.PQclear(res)
        except BaseException:
            try:
                self._cancel(pg)
            finally:  # a second Ctrl-C in the cancel's wait too
                self.close()
            raise
        if not sent:
            raise Error(_text(lib.PQerrorMessage(pg)) or "the query was not sent",
                        lost=lib.PQstatus(pg) != CONNECTION_OK)
        if error is not None:
            error.lost = lib.PQstatus(pg) != CONNECTION_OK
            raise error
        return Result(rows, status)

    def _cancel(self, pg: int) -> None:
        """Ask the server to stop the statement (a lock wait would otherwise go on after the
        session is closed). libpq's cancel connects anew and without a timeout, so it is
        given a second in a thread of its own and then left."""
        lib = self._lib
        cancel = lib.PQgetCancel(pg)
        if not cancel:
            return

        def send() -> None:
            lib.PQcancel(cancel, ctypes.create_string_buffer(256), 256)
            lib.PQfreeCancel(cancel)

        sender = threading.Thread(target=send, name="oj-pq-cancel", daemon=True)
        sender.start()
        sender.join(1.0)

    def _wait(self, pg: int) -> None:
        """Until a result can be read without blocking (or the connection failed)."""
        lib = self._lib
        poller = None
        while lib.PQisBusy(pg):
            if poller is None:
                poller = select.poll()
                poller.register(lib.PQsocket(pg), select.POLLIN)
            # Not forever: over TLS, the rest of a record libpq had no room for waits in
            # OpenSSL's buffer, not on the socket; consuming reads it.
            poller.poll(1000)
            if not lib.PQconsumeInput(pg):
                return  # PQgetResult reports the failure

    def _error(self, res: int) -> Error:
        lib = self._lib
        message = _text(lib.PQresultErrorField(res, _DIAG_MESSAGE)) or \
            _text(lib.PQresultErrorMessage(res)) or _text(lib.PQerrorMessage(self._pg)) or \
            "the query failed"
        state = lib.PQresultErrorField(res, _DIAG_SQLSTATE)
        return Error(message.splitlines()[0], state.decode() if state else None)

    def _rows(self, res: int) -> list[tuple]:
        lib = self._lib
        ncols = lib.PQnfields(res)
        kinds = []
        for col in range(ncols):
            oid = lib.PQftype(res, col)
            kinds.append(int if oid in _INT_TYPES else bool if oid == _BOOL else str)
        getvalue, isnull = lib.PQgetvalue, lib.PQgetisnull
        rows = []
        for row in range(lib.PQntuples(res)):
            cells = []
            for col, kind in enumerate(kinds):
                if isnull(res, row, col):
                    cells.append(None)
                    continue
                raw = getvalue(res, row, col)
                try:
                    cells.append(int(raw) if kind is int else raw == b"t" if kind is bool
                                 else raw.decode())
                except UnicodeDecodeError:  # a SQL_ASCII database's rows from elsewhere
                    raise Error(f"row {row + 1} holds text that is not UTF-8") from None
            rows.append(tuple(cells))
        return rows

    def parameters(self) -> dict[str, str]:
        """The parameters the session was made with (the URL's, the environment's, the
        service file's and libpq's defaults)."""
        opts = self._lib.PQconninfo(self._pg) if self._pg else None
        if not opts:
            raise Error("the connection is closed", lost=True)
        return _options(self._lib, opts)

    def fileno(self) -> int:
        return self._lib.PQsocket(self._pg) if self._pg else -1

    def notifies(self) -> list[tuple[str, str]]:
        """Read what arrived on the socket; the notifications (channel, payload) in it."""
        lib = self._lib
        if not self._pg or not lib.PQconsumeInput(self._pg):
            raise Error(_text(lib.PQerrorMessage(self._pg)) if self._pg
                        else "the connection is closed", lost=True)
        out = []
        while note := lib.PQnotifies(self._pg):
            try:
                out.append((_text(note.contents.relname), _text(note.contents.extra)))
            finally:
                lib.PQfreemem(note)
        return out

    def close(self) -> None:
        """End the session (a Terminate message, then the socket is closed)."""
        pg, self._pg = self._pg, None
        if pg:
            self._lib.PQfinish(pg)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _connect_timeout(value: str | None) -> float | None:
    """``connect_timeout`` as libpq reads it: none, 0 or less is no limit; at least 2 s."""
    try:
        seconds = int(value or 0)
    except ValueError:  # what libpq's own connect says of it
        raise Error(f'invalid integer value "{value}" for connection option '
                    '"connect_timeout"', lost=True) from None
    return max(2, seconds) if seconds > 0 else None


def _param(value: object) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return b"t" if value else b"f"
    raw = str(value).encode()
    if b"\0" in raw:  # libpq would pass the text up to it, silently
        raise Error("a query parameter holds a NUL character")
    return raw
