"""The record frame format of the WAL segments, and Record, what a frame decodes to.

A frame is the header ``<3sIIQ`` (magic ``b"OJ"`` + version 1, payload length, crc32, position)
followed by the compact JSON payload of one event. The crc covers the position bytes and the
payload, which are adjacent so one ``zlib.crc32`` call checks both; the magic lets a reader
resync after a corrupt record.

Everything here works on bytes in memory (no file I/O): encoding events into frames, walking a
buffer of frames with crc checks, decoding their payloads into Records (or only counting them,
for a check), and the diagnosis, resync and tail search a reader needs when it meets a bad
frame.
"""

from __future__ import annotations

# Imported whenever ojd.store.wal is (see its header): json, zlib and the C _struct only
# (and ojd.store.jsonlimits, builtins only).
import json
import zlib
from _struct import Struct
from _struct import error as _struct_error

from ojd.store.jsonlimits import MAX_EVENT_DEPTH, nesting

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

MAGIC = b"OJ\x01"  # "OJ" + format version 1
HEADER = Struct("<3sIIQ")  # magic+version, payload length, crc32, position
HS = HEADER.size  # 19
CRC_FROM = 11  # the crc covers frame[11:]: the position bytes, then the payload
_POS = Struct("<Q")
# json.dumps(ev, separators=...) builds a new encoder per call; one shared encoder is the same
# compact output at a fraction of the cost.
_encode = json.JSONEncoder(separators=(",", ":")).encode


class Record:
    """One event of the log and its position; immutable."""

    __slots__ = ("pos", "event")
    __match_args__ = ("pos", "event")
    # Its public home: repr of the class and pickles name ojd.store.wal.Record.
    __module__ = "ojd.store.wal"
    pos: int
    event: dict

    def __init__(self, pos: int, event: dict) -> None:
        # Replay builds a million of these: calling the slot setters directly skips the
        # __setattr__ that makes the instance read-only.
        _set_pos(self, pos)
        _set_event(self, event)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of an immutable Record")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of an immutable Record")

    def __repr__(self) -> str:
        return f"Record(pos={self.pos!r}, event={self.event!r})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.pos, self.event) == (other.pos, other.event)  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.pos, self.event))

    def __getstate__(self) -> tuple[int, dict]:
        return (self.pos, self.event)

    def __setstate__(self, state: tuple[int, dict]) -> None:
        _set_pos(self, state[0])
        _set_event(self, state[1])


_set_pos = Record.pos.__set__  # type: ignore[attr-defined]
_set_event = Record.event.__set__  # type: ignore[attr-defined]


# -- writing ----------------------------------------------------------------------------------


def encode_events(events: tuple[dict, ...]) -> list[bytes]:
    """The JSON payloads of ``events``; TypeError for an event that is not a dict, ValueError
    for one nested deeper than MAX_EVENT_DEPTH."""
    payloads = []
    for ev in events:
        if not isinstance(ev, dict):
            raise TypeError(f"a WAL event must be a dict, not {type(ev).__name__}")
        if nesting(ev, MAX_EVENT_DEPTH) > MAX_EVENT_DEPTH:
            raise ValueError(f"a WAL event may nest at most {MAX_EVENT_DEPTH} levels deep")
        payloads.append(_encode(ev).encode())
    return payloads


def encode_frames(first: int, payloads: list[bytes]) -> bytes:
    """The frames of ``payloads`` at positions ``first``, ``first + 1``, ..., back to back."""
    frames = []
    crc32 = zlib.crc32
    pos = first - 1
    for payload in payloads:
        pos += 1
        crc = crc32(payload, crc32(_POS.pack(pos)))
        frames.append(HEADER.pack(MAGIC, len(payload), crc, pos))
        frames.append(payload)
    return b"".join(frames)


# -- reading ----------------------------------------------------------------------------------


def parse(buf: bytes, prev: int, poss: list[int], pays: list[bytes]) -> tuple[int, int, int]:
    """Walk whole, valid, in-order frames from ``buf[0]``, collecting positions and payloads.

    Returns ``(end, prev, need)``: ``end`` is where walking stopped, ``prev`` the last frame's
    position; ``need`` is 0 at a clean end of ``buf``, the frame size when the frame at ``end``
    is cut off by the end of ``buf``, or -1 when that frame is bad.
    """
    # The hot loop of replay: positions are consecutive within a run, so they are collected
    # as ranges, and every test is folded into one condition.
    n = len(buf)
    unpack = HEADER.unpack_from
    crc32 = zlib.crc32
    add = pays.append
    error = _struct_error
    i = 0
    while True:
        first = expect = prev + 1
        while True:
            try:
                magic, ln, crc, pos = unpack(buf, i)
            except error:  # fewer than 19 bytes left; cheaper than a bounds test per record
                break
            j = i + 19 + ln
            if pos != expect or crc32(buf[i + 11 : j]) != crc or j > n or magic != b"OJ\x01":
                break
            add(buf[i + 19 : j])
            expect += 1
            i = j
        poss.extend(range(first, expect))
        prev = expect - 1
        if i + HS > n:
            return i, prev, (HS if i < n else 0)
        magic, ln, crc, pos = unpack(buf, i)
        if magic != MAGIC:
            return i, prev, -1
        if i + HS + ln > n:
            return i, prev, HS + ln
        if pos <= prev or crc32(buf[i + CRC_FROM : i + HS + ln]) != crc:
            return i, prev, -1
        prev = pos - 1  # a valid frame after a gap (a skipped corrupt record): a new run


def decode(
    buf: bytes, poss: list[int], pays: list[bytes], out: list[Record] | Continuity
) -> list[tuple[int, int, str]]:
    """Add the Records of payloads ``pays`` (from ``parse(buf, ...)``, positions ``poss``) to
    ``out``. Returns ``(position, offset in buf, detail)`` of the undecodable ones, skipped."""
    # One json.loads for a whole chunk is several times faster than one per record.
    try:
        events = json.loads(b"[" + b",".join(pays) + b"]")
    except (ValueError, RecursionError):
        events = None
    if events is not None and len(events) == len(pays):
        out.extend(map(Record, poss, events))
        return []
    offsets: dict[int, int] = {}
    i = 0
    while i + HS <= len(buf):
        _magic, ln, _crc, pos = HEADER.unpack_from(buf, i)
        offsets[pos] = i
        i += HS + ln
    bad = []
    for pos, payload in zip(poss, pays, strict=True):
        try:
            event = json.loads(payload)
            if not isinstance(event, dict):
                raise ValueError(f"not an object: {type(event).__name__}")
        except (ValueError, RecursionError) as e:
            bad.append((pos, offsets.get(pos, 0), f"undecodable event skipped: {e}"))
            continue
        out.append(Record(pos, event))
    return bad


class Continuity:
    """An ``out`` sink for check(): counts records and notes the position ranges missing
    after ``base`` (records at or below it are covered by a snapshot), keeping no record, so
    a huge log is walked in bounded memory."""

    def __init__(self, base: int) -> None:
        self.n = 0
        self.last = base
        self.gaps: list[tuple[int, int]] = []

    def extend(self, records: Iterable[Record]) -> None:
        for rec in records:
            self.append(rec)

    def append(self, rec: Record) -> None:
        self.n += 1
        if rec.pos > self.last + 1:
            self.gaps.append((self.last + 1, rec.pos - 1))
        if rec.pos > self.last:
            self.last = rec.pos


# -- damage -----------------------------------------------------------------------------------


def valid_at(buf: bytes, k: int, prev: int) -> int | None:
    """Position of a whole frame at ``buf[k]`` whose crc checks and that follows ``prev``."""
    if k + HS > len(buf):
        return None
    magic, ln, crc, pos = HEADER.unpack_from(buf, k)
    j = k + HS + ln
    if magic != MAGIC or j > len(buf) or pos <= prev:
        return None
    return pos if zlib.crc32(memoryview(buf)[k + CRC_FROM : j]) == crc else None


def resync(buf: bytes, prev: int) -> tuple[int, int] | None:
    """(offset, position) of the first valid frame after ``buf[0]``, or None."""
    k = 1
    while (k := buf.find(MAGIC, k)) >= 0:
        pos = valid_at(buf, k, prev)
        if pos is not None:
            return k, pos
        k += 1
    return None


def diagnose(buf: bytes, prev: int) -> tuple[str, int | None]:
    """Why the frame at ``buf[0]`` is unusable, and the position its header claims."""
    if len(buf) < HS:
        return f"incomplete header ({len(buf)} of {HS} bytes)", None
    magic, ln, _crc, pos = HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        return f"bad magic {bytes(magic)!r}", None
    if HS + ln > len(buf):
        return f"incomplete frame ({len(buf)} of {HS + ln} bytes)", pos
    if zlib.crc32(memoryview(buf)[CRC_FROM : HS + ln]) != _crc:
        return "crc mismatch", pos
    return f"position {pos} out of order after {prev}", None


def last_frame(data: bytes, prev: int) -> int | None:
    """Position of the valid frame after ``prev`` that ends exactly at the end of ``data``."""
    k = len(data)
    # Payloads are JSON, where a raw 0x01 byte cannot occur, so only a header can hold the
    # magic; the crc and the exact fit to the end rule out a header field mimicking it.
    while (k := data.rfind(MAGIC, 0, k + len(MAGIC) - 1)) >= 0:
        if k + HS <= len(data):
            _magic, ln, _crc, pos = HEADER.unpack_from(data, k)
            if k + HS + ln == len(data) and pos > prev and valid_at(data, k, prev):
                return pos
        k -= 1
    return None
