"""The audit archive: per-partition, append-only, hash-chained segment files on local disk.

It outlives stream trimming and a total loss of Redis. Layout and record format:

    {MUSTER_ARCHIVE_DIR}/p{N}/segment-{seq:08d}.jsonl      seq from 1, one record per line
    {"n":7,"stream":"muster:{p0}:events","entry":"1700000000000-0","event":{...},"prev":"…","hash":"…"}

- `n` numbers the partition's records from 1, continuing across segments;
- `stream` and `entry` say where the audit worker read the event (the event log, or its
  re-drive stream), `event` is the entry's JSON exactly as stored in the stream;
- `prev` is the previous record's `hash` (64 zeros for n = 1), and `hash` is the SHA-256 (hex)
  of the record serialised without its hash, i.e. of the line's bytes up to `,"hash":`
  followed by `}`. Changing any byte of a line breaks its own hash or the next record's `prev`
  (and `n` must count up by one), which is what `muster audit verify` checks.

Durability: a batch is written, flushed and fsynced before `append` returns (so before the
consumer loop acknowledges it); a new segment's directory entry is fsynced too. A segment is
closed once it would pass MUSTER_ARCHIVE_SEGMENT_BYTES. A line cut short by a crash mid-write
was never fsynced, so never acknowledged: the next writer truncates it.

Writers of one partition serialise on `flock` of `p{N}/.lock` and read the chain's tail from
the file under the lock, so several audit processes on one host keep one valid chain. Several
hosts need one audit worker, or a shared filesystem whose flock works across hosts.

This module is plain blocking file I/O (callers run it in a thread); it never touches Redis.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from muster import events

GENESIS = "0" * 64
"""`prev` of a partition's first record."""

SEGMENT = re.compile(r"segment-(\d{8})\.jsonl")
_LOCK_FILE = ".lock"
_TAIL_CHUNK = 64 * 1024
_HASH_FIELD = b',"hash":"'
_HASH_SUFFIX_LEN = len(_HASH_FIELD) + 64 + 2  # ,"hash":"<64 hex>"}
_json = msgspec.json.Encoder()


class ArchiveError(Exception):
    """The archive directory cannot be used (unreadable tail, not a directory...)."""


class Head(msgspec.Struct):
    """The fields of a record a writer needs to continue the chain."""

    n: int
    hash: str


class Record(msgspec.Struct):
    """One archived record, as read back."""

    n: int
    stream: str
    entry: str
    event: msgspec.Raw
    prev: str
    hash: str


_decode_head = msgspec.json.Decoder(Head).decode
decode_record = msgspec.json.Decoder(Record).decode


@dataclass(frozen=True, slots=True)
class Entry:
    """What the audit worker hands the archive: one stream entry."""

    stream: str
    entry: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Tail:
    """The end of a partition's chain: the last record and where the next one goes."""

    n: int
    hash: str
    segment: int  # seq of the segment the next record is appended to
    size: int  # its size in bytes
    inode: int  # its inode (0 before it exists), to notice another writer's rotation


def segment_name(seq: int) -> str:
    return f"segment-{seq:08d}.jsonl"


def partition_dir(root: Path, partition: int) -> Path:
    return root / f"p{partition}"


def partitions_in(root: Path) -> list[int]:
    """The partitions that have an archive directory under `root`, in order."""
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = re.fullmatch(r"p(\d+)", child.name)
        if match and child.is_dir():
            found.append(int(match[1]))
    return sorted(found)


def segments(directory: Path) -> list[tuple[int, Path]]:
    """(seq, path) of every segment file in a partition directory, by seq."""
    if not directory.is_dir():
        return []
    found = []
    for child in directory.iterdir():
        match = SEGMENT.fullmatch(child.name)
        if match:
            found.append((int(match[1]), child))
    return sorted(found)


def record_line(n: int, stream: str, entry: str, payload: bytes, prev: str) -> tuple[bytes, str]:
    """The line (with its newline) of a record, and its hash."""
    body = b"".join(
        (
            b'{"n":',
            str(n).encode(),
            b',"stream":',
            _json.encode(stream),
            b',"entry":',
            _json.encode(entry),
            b',"event":',
            payload,
            b',"prev":"',
            prev.encode(),
            b'"',
        )
    )
    digest = hashlib.sha256(body + b"}").hexdigest()
    return body + _HASH_FIELD + digest.encode() + b'"}\n', digest


def line_hash(line: bytes) -> tuple[str, str] | None:
    """(stored hash, hash computed from the line's body) of one line without its newline;
    None when the line does not end in a well-formed hash field."""
    if len(line) < _HASH_SUFFIX_LEN or not line.endswith(b'"}'):
        return None
    suffix = line[-_HASH_SUFFIX_LEN:]
    if not suffix.startswith(_HASH_FIELD):
        return None
    stored = suffix[len(_HASH_FIELD) : -2]
    if not re.fullmatch(rb"[0-9a-f]{64}", stored):
        return None
    body = line[:-_HASH_SUFFIX_LEN]
    return stored.decode(), hashlib.sha256(body + b"}").hexdigest()


def _single_line(payload: bytes) -> bytes:
    """Events are stored as written, unless their JSON spans lines (not written by Muster,
    which never emits a newline): those are re-encoded, so that one record stays one line."""
    if b"\n" not in payload and b"\r" not in payload:
        return payload
    return events.encode(events.decode(payload))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_line(path: Path, size: int) -> bytes:
    """The last complete line of a file whose `size` bytes end with a newline."""
    with path.open("rb") as f:
        end = size - 1  # the final newline
        start = end
        chunk = b""
        while start > 0:
            start = max(0, start - _TAIL_CHUNK)
            f.seek(start)
            chunk = f.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                return chunk[cut + 1 :]
        f.seek(0)
        return f.read(end)


class PartitionArchive:
    """One partition's chain. Hold `locked()` around `tail()`, `read_after()` and `append()`."""

    def __init__(self, root: Path, partition: int, *, segment_bytes: int) -> None:
        self.partition = partition
        self.directory = partition_dir(root, partition)
        self.segment_bytes = segment_bytes
        self._cached: Tail | None = None  # the tail this process last wrote

    def acquire(self) -> int:
        """Take the partition's exclusive flock (blocks while another writer holds it); the
        descriptor to hand to `release`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def release(fd: int) -> None:
        os.close(fd)  # closing the descriptor releases the lock

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        fd = self.acquire()
        try:
            yield
        finally:
            self.release(fd)

    def tail(self) -> Tail:
        """The chain's end, from the files (under the lock). A torn last line is truncated."""
        found = segments(self.directory)
        if not found:
            return Tail(0, GENESIS, 1, 0, 0)
        seq, path = found[-1]
        stat = path.stat()
        cached = self._cached
        if (
            cached is not None
            and cached.segment == seq
            and cached.size == stat.st_size
            and cached.inode == stat.st_ino
        ):
            return cached
        size = self._untorn(path, stat.st_size)
        head = self._last_head(found)
        return Tail(head.n, head.hash, seq, size, stat.st_ino)

    def _untorn(self, path: Path, size: int) -> int:
        """Cut a last line left without its newline by a crash; the new size."""
        if size == 0:
            return 0
        with path.open("rb+") as f:
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return size
            keep = size
            while keep > 0:
                start = max(0, keep - _TAIL_CHUNK)
                f.seek(start)
                chunk = f.read(keep - start)
                cut = chunk.rfind(b"\n")
                if cut >= 0:
                    keep = start + cut + 1
                    break
                keep = start
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
            return keep

    def _last_head(self, found: list[tuple[int, Path]]) -> Head:
        for _, path in reversed(found):
            size = path.stat().st_size
            if size == 0:
                continue  # a segment created just before a crash: the chain is in the one before
            line = _last_line(path, size)
            try:
                return _decode_head(line)
            except msgspec.DecodeError as exc:
                raise ArchiveError(
                    f"{path}: the last record cannot be read ({exc}); run `muster audit verify`"
                ) from exc
        return Head(0, GENESIS)

    def read_after(self, n: int) -> list[Record]:
        """Records numbered above `n` (the few a crashed writer left unrecorded in Redis)."""
        found = segments(self.directory)
        # Walk back to the segment that holds record n + 1: its first record is <= n + 1.
        start = 0
        for i in range(len(found) - 1, -1, -1):
            first = _first_record_n(found[i][1])
            if first is not None and first <= n + 1:
                start = i
                break
        out: list[Record] = []
        for _, path in found[start:]:
            with path.open("rb") as f:
                for line in f:
                    if not line.endswith(b"\n"):
                        break
                    record = decode_record(line)
                    if record.n > n:
                        out.append(record)
        return out

    def append(self, tail: Tail, entries: Sequence[Entry]) -> tuple[Tail, list[tuple[int, str]]]:
        """Append `entries` after `tail` (as `tail()` returned it under the same lock), fsync,
        and return the new tail with each record's (n, hash)."""
        if not entries:
            return tail, []
        self.directory.mkdir(parents=True, exist_ok=True)
        n, prev, seq, size = tail.n, tail.hash, tail.segment, tail.size
        written: list[tuple[int, str]] = []
        pending: list[bytes] = []
        created = False
        path = self.directory / segment_name(seq)
        for item in entries:
            n += 1
            line, digest = record_line(n, item.stream, item.entry, _single_line(item.payload), prev)
            if size > 0 and size + len(line) > self.segment_bytes:
                self._write(path, pending)  # close this segment with what it got so far
                pending = []
                seq, size = seq + 1, 0
                path = self.directory / segment_name(seq)
                created = True
            pending.append(line)
            size += len(line)
            prev = digest
            written.append((n, digest))
        if not path.exists():
            created = True
        self._write(path, pending)
        if created:
            _fsync_dir(self.directory)
        stat = path.stat()
        new_tail = Tail(n, prev, seq, stat.st_size, stat.st_ino)
        self._cached = new_tail
        return new_tail, written

    @staticmethod
    def _write(path: Path, lines: list[bytes]) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            data = b"".join(lines)
            view = memoryview(data)
            while view:
                done = os.write(fd, view)
                view = view[done:]
            os.fsync(fd)
        finally:
            os.close(fd)


def _first_record_n(path: Path) -> int | None:
    with path.open("rb") as f:
        line = f.readline()
    if not line.endswith(b"\n"):
        return None
    try:
        return msgspec.json.decode(line, type=_FirstN).n
    except msgspec.DecodeError:
        return None


class _FirstN(msgspec.Struct):
    n: int


def read_partition(root: Path, partition: int) -> Iterator[Record]:
    """Every complete record of one partition, in file order (for replay and restore)."""
    for _, path in segments(partition_dir(root, partition)):
        with path.open("rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    return  # a torn last line: never acknowledged, not part of the archive
                yield decode_record(line)


def count_records(root: Path) -> int:
    """How many records the archive holds (a count of lines, for progress reporting)."""
    total = 0
    for partition in partitions_in(root):
        for _, path in segments(partition_dir(root, partition)):
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    total += chunk.count(b"\n")
    return total
