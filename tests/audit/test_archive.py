"""The archive on disk: hash chains across segments, and `muster audit verify` finding damage.

No Redis here: the archive is plain files. Every test writes a real archive in a temp dir
through the writer the audit worker uses (PartitionArchive), then changes it the way damage
or tampering would, and checks what verify reports — which partition, segment, line and
record, and what is wrong.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from muster import archive, events
from muster.archive import Entry, PartitionArchive
from muster.ops import commands
from muster.ops.verify import verify, verify_partition
from muster.settings import Settings

HERE = Path(__file__).resolve().parent
SEGMENT_BYTES = 4096


def entry(n: int, text: str | None = None) -> Entry:
    event = events.PostPublished(
        id=str(10**17 + n),
        actor="pat",
        at=datetime(2024, 5, 1, 12, 0, n % 60, tzinfo=UTC),
        author="pat",
        as_account="ops",
        text=text if text is not None else f"post number {n} — ünïcödé",
    )
    return Entry("muster:{p0}:events", f"{1714564800000 + n}-0", events.encode(event))


def write(root: Path, count: int, *, batch: int = 10, partition: int = 0) -> list[Entry]:
    part = PartitionArchive(root, partition, segment_bytes=SEGMENT_BYTES)
    written = [entry(n) for n in range(count)]
    for start in range(0, count, batch):
        with part.locked():
            part.append(part.tail(), written[start : start + batch])
    return written


def segment_files(root: Path, partition: int = 0) -> list[Path]:
    return [path for _, path in archive.segments(archive.partition_dir(root, partition))]


def test_records_chain_across_segments_and_read_back_as_written(tmp_path: Path) -> None:
    written = write(tmp_path, 120)
    files = segment_files(tmp_path)
    assert len(files) >= 4, "small segments: the chain must cross several files"
    assert all(f.stat().st_size <= SEGMENT_BYTES for f in files)
    records = list(archive.read_partition(tmp_path, 0))
    assert [r.n for r in records] == list(range(1, 121))
    assert [bytes(r.event) for r in records] == [e.payload for e in written]  # byte for byte
    assert [r.entry for r in records] == [e.entry for e in written]
    assert records[0].prev == archive.GENESIS
    assert all(b.prev == a.hash for a, b in itertools.pairwise(records))
    [report] = verify(tmp_path)
    assert report.intact
    assert report.records == 120
    assert report.segments == len(files)
    assert report.last_hash == records[-1].hash


def test_a_record_is_one_line_hashed_as_documented(tmp_path: Path) -> None:
    write(tmp_path, 1)
    line = segment_files(tmp_path)[0].read_bytes()
    assert line.count(b"\n") == 1
    assert line.endswith(b"\n")
    import hashlib

    body, _, rest = line.rstrip(b"\n").rpartition(b',"hash":"')
    assert rest.endswith(b'"}')
    assert hashlib.sha256(body + b"}").hexdigest() == rest[:-2].decode()


def _line_spans(path: Path) -> list[tuple[int, int]]:
    data = path.read_bytes()
    spans, start = [], 0
    for i, byte in enumerate(data):
        if byte == ord("\n"):
            spans.append((start, i + 1))
            start = i + 1
    return spans


def test_any_changed_byte_is_found_and_the_record_named(tmp_path: Path) -> None:
    original = tmp_path / "original"
    write(original, 60)
    target = segment_files(original)[1]
    spans = _line_spans(target)
    line_index = 2  # the third record of the second segment
    start, end = spans[line_index]
    expected_n = next(
        r.n for r in archive.read_partition(original, 0) if r.entry == _entry_of(target, line_index)
    )
    # Every byte of that line, its newline included, changed in turn.
    for offset in range(start, end):
        copy = tmp_path / f"copy-{offset}"
        shutil.copytree(original, copy)
        damaged_file = copy / "p0" / target.name
        data = bytearray(damaged_file.read_bytes())
        data[offset] = ord("0") if data[offset] != ord("0") else ord("1")
        damaged_file.write_bytes(bytes(data))
        [report] = verify(copy)
        assert report.damage is not None, f"byte {offset - start} of the line changed unnoticed"
        assert report.damage.segment == target.name
        assert report.damage.line == line_index + 1
        assert report.damage.n == expected_n
        shutil.rmtree(copy)


def _entry_of(path: Path, index: int) -> str:
    line = path.read_bytes().split(b"\n")[index]
    return archive.decode_record(line).entry


def test_a_removed_record_breaks_the_chain(tmp_path: Path) -> None:
    write(tmp_path, 30)
    path = segment_files(tmp_path)[0]
    lines = path.read_bytes().split(b"\n")
    del lines[3]
    path.write_bytes(b"\n".join(lines))
    [report] = verify(tmp_path)
    assert report.damage is not None
    assert (report.damage.line, report.damage.n) == (4, 4)
    assert "record number 5 where 4 belongs" in report.damage.problem


def test_a_rewritten_record_with_a_recomputed_hash_breaks_the_next_link(tmp_path: Path) -> None:
    written = write(tmp_path, 10)
    path = segment_files(tmp_path)[0]
    lines = path.read_bytes().split(b"\n")
    forged = entry(4, text="nothing happened here")
    record = archive.decode_record(lines[4])
    lines[4], _ = archive.record_line(
        5, forged.stream, written[4].entry, forged.payload, record.prev
    )
    lines[4] = lines[4].rstrip(b"\n")
    path.write_bytes(b"\n".join(lines))
    [report] = verify(tmp_path)
    assert report.damage is not None
    assert (report.damage.line, report.damage.n) == (6, 6)
    assert "previous record's hash" in report.damage.problem


def test_a_missing_segment_is_found(tmp_path: Path) -> None:
    write(tmp_path, 80)
    segment_files(tmp_path)[1].unlink()
    [report] = verify(tmp_path)
    assert report.damage is not None
    assert report.damage.segment == archive.segment_name(2)
    assert "missing" in report.damage.problem


def test_records_cut_off_the_end_are_found_against_what_redis_recorded(tmp_path: Path) -> None:
    write(tmp_path, 25)
    last = list(archive.read_partition(tmp_path, 0))[-1]
    assert verify_partition(tmp_path, 0, (last.n, last.hash)).intact
    path = segment_files(tmp_path)[-1]
    lines = path.read_bytes().split(b"\n")
    kept = lines[:-2]  # the last record gone (and its segment, when it was the only one there)
    if kept:
        path.write_bytes(b"\n".join(kept) + b"\n")
    else:
        path.unlink()
    assert verify_partition(tmp_path, 0).intact  # a chain alone cannot tell
    report = verify_partition(tmp_path, 0, (last.n, last.hash))
    assert report.damage is not None
    assert "missing from the end" in report.damage.problem


def test_a_torn_last_line_is_a_warning_and_the_next_append_removes_it(tmp_path: Path) -> None:
    write(tmp_path, 12)
    path = segment_files(tmp_path)[-1]
    with path.open("ab") as f:
        f.write(b'{"n":13,"stream":"muster:{p0}:ev')  # a crash in the middle of a write
    [report] = verify(tmp_path)
    assert report.intact
    assert report.records == 12
    assert any("incomplete record" in w for w in report.warnings)
    part = PartitionArchive(tmp_path, 0, segment_bytes=SEGMENT_BYTES)
    with part.locked():
        tail = part.tail()
        assert tail.n == 12
        part.append(tail, [entry(12)])
    [report] = verify(tmp_path)
    assert report.intact
    assert report.records == 13
    assert not report.warnings


def test_writers_in_several_processes_keep_one_chain(tmp_path: Path) -> None:
    script = HERE / "archive_proc.py"
    procs = [
        subprocess.Popen([sys.executable, str(script), str(tmp_path), name, "40", "5", "3000"])
        for name in ("ann", "bob", "cat")
    ]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    [report] = verify(tmp_path)
    assert report.intact, report.damage
    assert report.records == 3 * 40 * 5
    texts = [events.decode(bytes(r.event)).text for r in archive.read_partition(tmp_path, 0)]  # type: ignore[union-attr]
    assert sorted(texts) == sorted(
        f"{name}-{n}" for name in ("ann", "bob", "cat") for n in range(200)
    )


def test_verify_command_exit_codes_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, 40)
    write(tmp_path, 5, partition=1)
    check = argparse.Namespace(dir=tmp_path)
    assert commands.run_verify(check, Settings()) == 0
    out = capsys.readouterr().out
    assert "partition 0: intact, 40 records" in out
    assert "partition 1: intact, 5 records" in out

    path = segment_files(tmp_path, 1)[0]
    data = bytearray(path.read_bytes())
    data[data.index(b"post number 3")] = ord("P")
    path.write_bytes(bytes(data))
    assert commands.run_verify(check, Settings()) == 1
    out = capsys.readouterr().out
    assert "DAMAGED partition 1, segment-00000001.jsonl line 4 (record n=4): hash mismatch" in out
    assert "partition 0: intact" in out
