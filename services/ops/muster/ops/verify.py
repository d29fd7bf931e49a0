"""`muster audit verify`: check every partition's hash chain and report the first broken record.

For each partition directory of the archive, segment files are read in order (a missing
segment number is damage) and every line must: end with a newline (only the very last line
of the newest segment may be cut short by a crash: that is a warning, the writer truncates
it), carry a hash equal to the SHA-256 of its body (archive.py says exactly what is hashed),
decode as a record whose `n` is the previous one's plus one and whose `prev` is the previous
record's hash, and hold an event Muster can decode. The chain continues across segments.

Given what Redis recorded as each partition's last archived record (keys.archive_head), it
also notices records cut off the end, which a chain alone cannot show.

It only reads; it takes no lock, so a verify running beside a writer sees the archive as of
the moment it reads each file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from muster import events
from muster.archive import (
    GENESIS,
    decode_record,
    line_hash,
    partition_dir,
    partitions_in,
    segment_name,
    segments,
)
from muster.errors import EventDecodeError


@dataclass(frozen=True, slots=True)
class Damage:
    partition: int
    segment: str
    line: int  # 1-based, within the segment
    n: int  # the record number expected there
    problem: str

    def describe(self) -> str:
        return (
            f"partition {self.partition}, {self.segment} line {self.line} "
            f"(record n={self.n}): {self.problem}"
        )


@dataclass
class PartitionReport:
    partition: int
    segments: int = 0
    records: int = 0
    last_hash: str = GENESIS
    damage: Damage | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return self.damage is None


def verify_partition(
    root: Path, partition: int, recorded: tuple[int, str] | None = None
) -> PartitionReport:
    """Check one partition; stops at the first damage. `recorded`: Redis's (n, hash)."""
    report = PartitionReport(partition)
    found = segments(partition_dir(root, partition))
    report.segments = len(found)
    expected_n, prev = 1, GENESIS
    hashes_seen: dict[int, str] = {}
    want_n = recorded[0] if recorded else None

    def damaged(segment: str, line: int, problem: str) -> PartitionReport:
        report.damage = Damage(partition, segment, line, expected_n, problem)
        return report

    for index, (seq, path) in enumerate(found):
        expected_seq = index + 1
        if seq != expected_seq:
            return damaged(
                segment_name(expected_seq), 0, f"segment file missing (found {path.name} next)"
            )
        last_segment = index == len(found) - 1
        with path.open("rb") as f:
            lines = f.read().split(b"\n")
        # split() leaves one trailing element: b"" after a final newline, else a torn line.
        torn = lines.pop()
        if not lines and not torn:
            if not last_segment:
                report.warnings.append(f"{path.name} is empty")
            continue
        for number, line in enumerate(lines, start=1):
            hashed = line_hash(line)
            if hashed is None:
                return damaged(
                    path.name, number, "no well-formed hash field at the end of the line"
                )
            stored, computed = hashed
            if stored != computed:
                return damaged(
                    path.name,
                    number,
                    f"hash mismatch: the record was altered (stored {stored[:12]}…, "
                    f"computed {computed[:12]}…)",
                )
            try:
                record = decode_record(line)
            except msgspec.DecodeError as exc:
                return damaged(path.name, number, f"not a valid record: {exc}")
            if record.n != expected_n:
                return damaged(
                    path.name, number, f"record number {record.n} where {expected_n} belongs"
                )
            if record.prev != prev:
                return damaged(
                    path.name,
                    number,
                    f"prev {record.prev[:12]}… is not the previous record's hash {prev[:12]}…",
                )
            try:
                events.decode(bytes(record.event))
            except EventDecodeError as exc:
                return damaged(path.name, number, f"the event does not decode: {exc}")
            if record.n == want_n:
                hashes_seen[record.n] = record.hash
            prev = record.hash
            expected_n += 1
            report.records += 1
        if torn:
            if last_segment:
                report.warnings.append(
                    f"{path.name} ends in an incomplete record (a write cut short by a crash, "
                    "never acknowledged; the next append removes it)"
                )
            else:
                return damaged(path.name, len(lines) + 1, "line without its end inside the chain")
    report.last_hash = prev
    if recorded is not None:
        n, digest = recorded
        if n > report.records:
            return damaged(
                found[-1][1].name if found else segment_name(1),
                0,
                f"Redis recorded record n={n} as archived, but the archive ends at "
                f"n={report.records}: records are missing from the end",
            )
        if n > 0 and hashes_seen.get(n) != digest:
            report.damage = Damage(
                partition,
                "(index)",
                0,
                n,
                f"record n={n} differs from the one Redis recorded (hash {digest[:12]}…)",
            )
    return report


def verify(
    root: Path, recorded: Mapping[int, tuple[int, str]] | None = None
) -> list[PartitionReport]:
    """Every partition directory under `root`, and any partition Redis knows but disk lacks."""
    recorded = recorded or {}
    partitions = sorted(set(partitions_in(root)) | {p for p, (n, _) in recorded.items() if n})
    return [verify_partition(root, p, recorded.get(p)) for p in partitions]
