"""Named points where a process can be made to die on purpose, for crash tests.

MUSTER_FAILPOINTS lists names; `hit(name, settings)` at such a point ends the process at
once with os._exit(137) — no cleanup, no flush, no ack, as close to `kill -9` as Python gets
— so the tests can check guarantee 2 of docs/architecture.md at each step of the send path:

- `delivery.before_send`   the request is read and rendered, nothing sent yet;
- `delivery.after_send`    the provider accepted it, Muster has not recorded that;
- `delivery.after_record`  the status says sent, the stream entry is not acknowledged;
- `escalation.mid_round`   a page of an escalation round is appended with the deliveries
                           to those told about themselves; those to managers and
                           fallbacks, and the rest of the round, not yet.

With MUSTER_FAILPOINTS unset (production) `hit` is a tuple-membership test and nothing else.
"""

from __future__ import annotations

import os
import sys

from muster.settings import Settings

POINTS = (
    "delivery.before_send",
    "delivery.after_send",
    "delivery.after_record",
    "escalation.mid_round",
)
EXIT_CODE = 137  # what a shell reports for SIGKILL, so a supervisor treats it as a crash


def hit(name: str, settings: Settings) -> None:
    """Die here if `name` is armed in settings.failpoints."""
    if name in settings.failpoints:
        sys.stderr.write(f"failpoint {name} hit: exiting with {EXIT_CODE}\n")
        sys.stderr.flush()
        os._exit(EXIT_CODE)
