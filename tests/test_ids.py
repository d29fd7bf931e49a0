"""Snowflake ids: strictly increasing, unique past 64 per millisecond, and they tell their time."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from types import SimpleNamespace

import pytest

from muster import ids
from muster.ids import IdGenerator, id_time_ms, is_id, lowest_id_at


class FakeClock:
    """Stands in for the `time` module inside muster.ids: time moves only when told to."""

    def __init__(self, ms: int) -> None:
        self.ms = ms
        self.sleeps = 0
        self.advance_on_sleep = 1

    def time_ns(self) -> int:
        return self.ms * 1_000_000

    def sleep(self, _seconds: float) -> None:
        self.sleeps += 1
        self.ms += self.advance_on_sleep


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(1_700_000_000_000)
    monkeypatch.setattr(ids, "time", SimpleNamespace(time_ns=fake.time_ns, sleep=fake.sleep))
    return fake


def test_ids_strictly_increase() -> None:
    generator = IdGenerator(node=3)
    made = [generator.next_int() for _ in range(20_000)]
    assert all(a < b for a, b in itertools.pairwise(made))


def test_a_burst_past_64_per_millisecond_stays_unique_and_ordered() -> None:
    generator = IdGenerator(node=7)
    made = [generator.next_int() for _ in range(5_000)]
    assert len(set(made)) == len(made)
    assert made == sorted(made)
    per_ms = Counter(id_time_ms(i) for i in made)
    assert max(per_ms.values()) <= 64
    # 5,000 ids take a few milliseconds at most, so some millisecond ran out of sequence numbers
    assert max(per_ms.values()) == 64


def test_the_65th_id_in_a_millisecond_waits_for_the_next(clock: FakeClock) -> None:
    generator = IdGenerator(node=5)
    first_ms = clock.ms
    made = [generator.next_int() for _ in range(64)]
    assert clock.sleeps == 0
    assert [i & 0x3F for i in made] == list(range(64))
    assert {id_time_ms(i) for i in made} == {first_ms}
    nxt = generator.next_int()
    assert clock.sleeps >= 1
    assert id_time_ms(nxt) == first_ms + 1
    assert nxt & 0x3F == 0
    assert nxt > made[-1]


def test_a_clock_stepping_back_does_not_reorder_ids(clock: FakeClock) -> None:
    generator = IdGenerator(node=1)
    before = [generator.next_int() for _ in range(3)]
    clock.ms -= 5_000
    after = [generator.next_int() for _ in range(100)]  # crosses a sequence roll-over too
    made = before + after
    assert all(a < b for a, b in itertools.pairwise(made))


def test_node_and_sequence_bits(clock: FakeClock) -> None:
    a, b = IdGenerator(node=1), IdGenerator(node=2)
    id_a, id_b = a.next_int(), b.next_int()
    assert id_a != id_b
    assert (id_a >> 6) & 0x3FF == 1
    assert (id_b >> 6) & 0x3FF == 2
    assert id_time_ms(id_a) == id_time_ms(id_b) == clock.ms
    # node numbers wrap to 10 bits rather than spilling into the timestamp
    wrapped = IdGenerator(node=1024 + 9).next_int()
    assert (wrapped >> 6) & 0x3FF == 9
    assert id_time_ms(wrapped) == clock.ms


def test_unique_across_threads() -> None:
    generator = IdGenerator(node=11)
    results: list[list[str]] = [[] for _ in range(4)]

    def work(out: list[str]) -> None:
        out.extend(generator.next() for _ in range(2_000))

    threads = [threading.Thread(target=work, args=(out,)) for out in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    made = [i for out in results for i in out]
    assert len(made) == 8_000
    assert len(set(made)) == 8_000
    for out in results:  # each thread saw its own ids in order
        assert [int(i) for i in out] == sorted(int(i) for i in out)


def test_id_time_is_when_it_was_made() -> None:
    generator = IdGenerator(node=0)
    before = time.time_ns() // 1_000_000
    made = generator.next()
    after = time.time_ns() // 1_000_000
    assert before <= id_time_ms(made) <= after
    assert id_time_ms(int(made)) == id_time_ms(made)


def test_ids_are_decimal_strings_that_fit_a_signed_64_bit_integer() -> None:
    made = IdGenerator(node=1023).next()
    assert is_id(made)
    assert str(int(made)) == made
    assert int(made) < 2**63


def test_lowest_id_at_bounds_time_ranges(clock: FakeClock) -> None:
    generator = IdGenerator(node=1023)
    made = [generator.next_int() for _ in range(200)]  # spans several fake milliseconds
    for i in made:
        ms = id_time_ms(i)
        assert lowest_id_at(ms) <= i < lowest_id_at(ms + 1)
    assert id_time_ms(lowest_id_at(clock.ms)) == clock.ms


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("1", True),
        ("111392858071678976", True),
        ("9" * 19, True),
        ("9" * 20, False),
        ("", False),
        ("-1", False),
        ("12a", False),
        (" 12", False),
        ("١٢٣", False),  # Arabic-Indic digits: isdigit() but not ASCII
    ],
)
def test_is_id(value: str, valid: bool) -> None:
    assert is_id(value) is valid
