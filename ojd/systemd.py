"""The systemd bridge: unit state and unit jobs over D-Bus (pystemd's sd-bus binding).

Calls go straight to the manager's methods and properties by object path, without
pystemd's introspection round trip, and only the binding is imported (see ``_dbuslib``).
As root (or as the user owning a user manager) the manager's private socket is used, as
systemctl does; otherwise the bus. Unit state is read property by property: five
round trips on the private socket take ~0.5 ms, while ``GetAll`` of Unit and Service
(~400 properties, parsed in Python) takes ~3.6 ms.
"""

from __future__ import annotations

import os
import sys
import time
from typing import NamedTuple

from ojd.errors import OjError, UsageError, quoted

DEST = b"org.freedesktop.systemd1"
MANAGER_PATH = b"/org/freedesktop/systemd1"
MANAGER = b"org.freedesktop.systemd1.Manager"
UNIT = b"org.freedesktop.systemd1.Unit"
SERVICE = b"org.freedesktop.systemd1.Service"
TIMER = b"org.freedesktop.systemd1.Timer"

# ActiveState values in which the unit has a main process that can take a wake-up
RUNNING_STATES = ("active", "reloading")


class SystemdUnavailable(OjError):
    """The manager cannot be reached (no systemd, no bus, no permission)."""


# The functional form: with postponed annotations the class form compiles each field's
# annotation string when this module is imported (1.2 ms of every ``oj worker start``).
UnitState = NamedTuple("UnitState", [  # noqa: UP014
    ("name", str), ("load_state", str), ("active_state", str), ("sub_state", str),
    ("main_pid", int), ("n_restarts", int)])

# A row of ``ListUnitsByPatterns``: what systemd says of a loaded unit (``job``: the id of a
# start or stop job queued for it, 0 when none)
UnitInfo = NamedTuple("UnitInfo", [  # noqa: UP014
    ("name", str), ("load_state", str), ("active_state", str), ("sub_state", str),
    ("job", int)])


def _dbuslib():
    """pystemd's sd-bus binding (``pystemd.dbuslib``) without running ``pystemd/__init__``.

    That ``__init__`` imports pystemd's object layer (``pystemd.base`` imports lxml): about
    10 ms of every ``oj worker start``, for classes oj never uses. A bare package module
    with the real ``__path__`` lets the submodule import alone; its ``__getattr__`` runs the
    real ``__init__`` into it on first use, so a later ``import pystemd`` in the same
    process still gets the whole package. A pystemd already imported is used as it is.
    """
    module = sys.modules.get("pystemd.dbuslib")
    if module is not None:
        return module
    if "pystemd" not in sys.modules:
        # what the import system does, minus executing the package (importlib.util's
        # find_spec would cost a few ms of imports of its own)
        spec = next((s for s in (f.find_spec("pystemd", None) for f in sys.meta_path
                                 if hasattr(f, "find_spec")) if s is not None), None)
        if spec is not None and spec.submodule_search_locations is not None \
                and spec.loader is not None:
            sys.modules["pystemd"] = _bare_package(spec)
        # otherwise the plain import below runs (or says why pystemd cannot be imported)
    # dbuslib imports pprint for one error message, and pprint imports dataclasses and
    # inspect (~9 ms): a stand-in whose functions load the real pprint when called is in
    # sys.modules only while dbuslib imports
    stand_in = None
    if "pprint" not in sys.modules:
        stand_in = type(sys)("pprint")
        stand_in.__getattr__ = _real_pprint  # type: ignore[method-assign]
        sys.modules["pprint"] = stand_in
    try:
        # lazy: the D-Bus bridge (~100 ms) loads when systemd is first asked, not on a push
        import pystemd.dbuslib  # noqa: F401 - returned from sys.modules below
    finally:
        if stand_in is not None and sys.modules.get("pprint") is stand_in:
            del sys.modules["pprint"]
    return sys.modules["pystemd.dbuslib"]


def _bare_package(spec):
    """The package module of ``spec`` with its ``__init__`` deferred to the first lookup of
    a name it does not have (its submodules import without it)."""
    package = type(sys)(spec.name)
    package.__spec__ = spec
    package.__loader__ = spec.loader
    package.__package__ = spec.name
    package.__path__ = list(spec.submodule_search_locations)
    package.__file__ = spec.origin

    def complete(name: str):
        del package.__getattr__  # once: the real __init__ imports names from itself
        spec.loader.exec_module(package)
        return getattr(package, name)

    package.__getattr__ = complete  # type: ignore[method-assign]
    return package


def _real_pprint(name: str):
    if name.startswith("__"):
        raise AttributeError(name)

    def forward(*args, **kwargs):
        import pprint  # lazy: the stand-in above exists to defer it until it is used

        return getattr(pprint, name)(*args, **kwargs)

    return forward


class Systemd:
    def __init__(self, user: bool | None = None) -> None:
        self.user = os.geteuid() != 0 if user is None else user
        self._bus = None

    @property
    def scope(self) -> str:
        return "user" if self.user else "system"

    def _connect(self):
        if self._bus is not None:
            return self._bus
        try:
            dbuslib = _dbuslib()
        except ImportError as e:  # pragma: no cover - pystemd is a dependency
            raise SystemdUnavailable(f"pystemd is not importable: {e}") from None
        private = self._private_socket()
        try:
            if private is not None:
                bus = dbuslib.DBusAddress(b"unix:path=" + private.encode(), peer_to_peer=True)
            else:
                bus = dbuslib.DBus(user_mode=self.user)
            bus.open()
        except Exception as e:
            raise SystemdUnavailable(f"cannot reach the {self.scope} manager: "
                                     f"{_describe(e)}") from None
        self._bus = bus
        return bus

    def _private_socket(self) -> str | None:
        if self.user:
            runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.geteuid()}"
            path = os.path.join(runtime, "systemd", "private")
        else:
            path = "/run/systemd/private"
        return path if os.access(path, os.R_OK | os.W_OK) else None

    def close(self) -> None:
        if self._bus is not None:
            self._bus.close()
            self._bus = None

    # -- low level ----------------------------------------------------------------------

    def _call(self, method: bytes, signature: bytes, *args):
        bus = self._connect()
        try:
            return bus.call_method(DEST, MANAGER_PATH, MANAGER, method,
                                   _dbuslib().apply_signature(signature, list(args))).body
        except Exception as e:
            raise SystemdUnavailable(f"{method.decode()} failed: {_describe(e)}") from None

    def _prop(self, path: bytes, interface: bytes, prop: bytes, rtype: bytes):
        bus = self._connect()
        try:
            return bus.get_property(DEST, path, interface, prop, rtype)
        except Exception as e:
            raise SystemdUnavailable(f"reading {prop.decode()} failed: {_describe(e)}") from None

    @staticmethod
    def unit_path(unit: str) -> bytes:
        return _dbuslib().path_encode(b"/org/freedesktop/systemd1/unit", _unit_name(unit))

    # -- what oj uses -------------------------------------------------------------------

    def state(self, unit: str) -> UnitState:
        """A unit's state; MainPID and NRestarts for a service (0 for other kinds)."""
        path = self.unit_path(unit)

        def text(value) -> str:
            return value.decode() if isinstance(value, bytes) else str(value)

        load = text(self._prop(path, UNIT, b"LoadState", b"s"))
        active = text(self._prop(path, UNIT, b"ActiveState", b"s"))
        sub = text(self._prop(path, UNIT, b"SubState", b"s"))
        main_pid = n_restarts = 0
        if load == "loaded" and unit.endswith(".service"):
            main_pid = int(self._prop(path, SERVICE, b"MainPID", b"u"))
            n_restarts = int(self._prop(path, SERVICE, b"NRestarts", b"u"))
        return UnitState(unit, load, active, sub, main_pid, n_restarts)

    def timer(self, unit: str) -> tuple[float | None, float | None]:
        """A timer's next elapse and last trigger, as Unix times (None: none). A monotonic
        elapse (OnActiveSec=, OnUnitActiveSec=) is turned into wall-clock time."""
        path = self.unit_path(unit)
        real = int(self._prop(path, TIMER, b"NextElapseUSecRealtime", b"t"))
        mono = int(self._prop(path, TIMER, b"NextElapseUSecMonotonic", b"t"))
        last = int(self._prop(path, TIMER, b"LastTriggerUSec", b"t"))
        nexts = []
        never = 1 << 63  # USEC_INFINITY, and anything as absurd
        if 0 < real < never:
            nexts.append(real / 1e6)
        if 0 < mono < never:
            nexts.append(time.time() + mono / 1e6 - time.monotonic())
        return (min(nexts) if nexts else None), (last / 1e6 if 0 < last < never else None)

    def has_job(self, unit: str) -> bool:
        """A start or stop job for the unit is queued or running."""
        job = self._prop(self.unit_path(unit), UNIT, b"Job", b"(uo)")
        return bool(job and job[0])

    def start(self, unit: str) -> None:
        self._call(b"StartUnit", b"ss", _unit_name(unit), b"replace")

    def stop(self, unit: str) -> None:
        self._call(b"StopUnit", b"ss", _unit_name(unit), b"replace")

    def restart(self, unit: str) -> None:
        self._call(b"RestartUnit", b"ss", _unit_name(unit), b"replace")

    def kill_main(self, unit: str, signal_number: int) -> None:
        """Signal the main process only: step processes in the cgroup keep running."""
        self._call(b"KillUnit", b"ssi", _unit_name(unit), b"main", signal_number)

    def start_scope(self, unit: str, pid: int, description: str,
                    stop_timeout: float | None = None) -> None:
        """Move ``pid`` into a new transient scope ``unit`` (what ``systemd-run --scope``
        does for itself). The scope is collected once its processes are gone.
        ``stop_timeout``: how long a stop waits after SIGTERM before SIGKILL (TimeoutStopSec=;
        the manager's default is 90 s)."""
        dbuslib = _dbuslib()
        args = dbuslib.apply_signature(b"ss", [_unit_name(unit), b"fail"])
        args.append((ord("a"), b"(sv)"))
        props: list[tuple[bytes, bytes, object]] = [
            (b"PIDs", b"au", [pid]), (b"Description", b"s", description.encode()),
            (b"CollectMode", b"s", b"inactive-or-failed")]
        if stop_timeout is not None:
            props.append((b"TimeoutStopUSec", b"t", int(stop_timeout * 1e6)))
        for name, signature, value in props:
            args += [(ord("r"), b"sv"), (ord("s"), name), (ord("v"), signature)]
            args += dbuslib.apply_signature(signature, [value])
            args += [(-1, None), (-1, None)]
        args += [(-1, None), (ord("a"), b"(sa(sv))"), (-1, None)]
        bus = self._connect()
        try:
            bus.call_method(DEST, MANAGER_PATH, MANAGER, b"StartTransientUnit", args)
        except Exception as e:
            raise SystemdUnavailable(f"StartTransientUnit failed: {_describe(e)}") from None

    def list_units(self, patterns: list[str], states: tuple[str, ...] = ()) -> list[UnitInfo]:
        """Every loaded unit whose name matches one of ``patterns`` (globs), in one
        ``ListUnitsByPatterns`` call; ``states`` filters by load, active or sub state."""
        body = self._call(b"ListUnitsByPatterns", b"asas", [s.encode() for s in states],
                          [_unit_name(p) for p in patterns])

        def text(value) -> str:
            return value.decode() if isinstance(value, bytes) else str(value)

        return [UnitInfo(text(r[0]), text(r[2]), text(r[3]), text(r[4]), int(r[7]))
                for r in body or ()]

    def reset_failed(self, unit: str) -> None:
        self._call(b"ResetFailedUnit", b"s", _unit_name(unit))

    def unit_file_state(self, unit: str) -> str:
        """"enabled", "disabled", "static", ... ("" when the unit file is unknown)."""
        value = self._prop(self.unit_path(unit), UNIT, b"UnitFileState", b"s")
        return value.decode() if isinstance(value, bytes) else str(value)

    def enable(self, *units: str) -> None:
        """Link units into the targets their [Install] names (an instance of a template
        is enabled by its full name), then reload, as ``systemctl enable`` does."""
        self._call(b"EnableUnitFiles", b"asbb", [_unit_name(u) for u in units], False, True)
        self.daemon_reload()

    def disable(self, *units: str) -> None:
        self._call(b"DisableUnitFiles", b"asb", [_unit_name(u) for u in units], False)
        self.daemon_reload()

    def daemon_reload(self) -> None:
        self._call(b"Reload", b"")

    def environment(self) -> dict[str, str]:
        """The manager's environment: what its services start with (``systemctl
        show-environment``)."""
        pairs = self._prop(MANAGER_PATH, MANAGER, b"Environment", b"as") or ()
        text = (p.decode(errors="replace") if isinstance(p, bytes) else str(p) for p in pairs)
        return dict(t.split("=", 1) for t in text if "=" in t)


def _unit_name(unit: str) -> bytes:
    """A unit name for D-Bus; a name that is not text (a lone surrogate) is a user error."""
    try:
        return unit.encode()
    except UnicodeEncodeError:
        raise UsageError(f"{quoted(unit)} is not a valid unit name") from None


def _describe(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return text.splitlines()[0]
