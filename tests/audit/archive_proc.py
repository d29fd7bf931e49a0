"""A separate process appending to an archive partition, for the concurrent-writers test:

    python archive_proc.py ROOT NAME BATCHES BATCH_SIZE SEGMENT_BYTES

Each batch takes the partition's lock, reads the tail from the files and appends, exactly as
the audit worker does; the events' text is NAME-i so the test can check each landed once.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from muster import events
from muster.archive import Entry, PartitionArchive


def main(root: str, name: str, batches: int, size: int, segment_bytes: int) -> None:
    archive = PartitionArchive(Path(root), 0, segment_bytes=segment_bytes)
    for b in range(batches):
        entries = []
        for i in range(size):
            n = b * size + i
            event = events.PostPublished(
                id=str(10**17 + n),
                actor=name,
                at=datetime(2024, 1, 1, tzinfo=UTC),
                author=name,
                as_account=name,
                text=f"{name}-{n}",
            )
            entries.append(Entry("muster:{p0}:events", f"{n + 1}-0", events.encode(event)))
        with archive.locked():
            archive.append(archive.tail(), entries)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
