"""The event log stays readable forever: every stored payload of every version still decodes.

tests/fixtures/events/v<N>/<EventType>.json holds one payload per event type as it was
written when version N was current. Never edit or delete a fixture; when an event's `v`
default goes up, add a payload under the new version's directory. The tests below fail when
an event type has no fixture for its current version, when a stored payload no longer
decodes, or when decoding it would drop or change a stored field (a rename or a retype).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from muster import events
from muster.errors import EventDecodeError

FIXTURES = Path(__file__).parent / "fixtures" / "events"
STORED = sorted(FIXTURES.glob("v*/*.json"))


def tag_of(cls: type[events.Event]) -> str:
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


TAGS = {tag_of(cls): cls for cls in events.EVENT_TYPES}


def current_version(cls: type[events.Event]) -> int:
    (v,) = (f.default for f in msgspec.structs.fields(cls) if f.name == "v")
    assert isinstance(v, int)
    return v


def stored(path: Path) -> dict[str, Any]:
    document = json.loads(path.read_bytes())
    assert isinstance(document, dict)
    return document


def test_fixtures_are_found() -> None:
    assert len(STORED) >= len(events.EVENT_TYPES)


@pytest.mark.parametrize("cls", events.EVENT_TYPES, ids=tag_of)
def test_every_event_type_has_a_fixture_for_its_current_version(cls: type[events.Event]) -> None:
    path = FIXTURES / f"v{current_version(cls)}" / f"{tag_of(cls)}.json"
    assert path.is_file(), f"store a payload of {tag_of(cls)} as {path.relative_to(FIXTURES)}"


@pytest.mark.parametrize("path", STORED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_stored_payload_decodes(path: Path) -> None:
    document = stored(path)
    event = events.decode(path.read_bytes())
    assert events.event_type(event) == path.stem == document["type"]
    assert f"v{event.v}" == path.parent.name
    assert event.id == document["id"]
    assert event.at.tzinfo is not None
    assert event.at.utcoffset() == UTC.utcoffset(None)


@pytest.mark.parametrize("path", STORED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_decoding_keeps_every_stored_field(path: Path) -> None:
    """Re-encoding a stored event writes back each stored field unchanged (new ones may be added)."""
    document = stored(path)
    again = msgspec.json.decode(events.encode(events.decode(path.read_bytes())))
    for name, value in document.items():
        assert name in again, f"{path.stem}.{name} is no longer a field"
        if name == "at":
            assert datetime.fromisoformat(again[name]) == datetime.fromisoformat(value)
        else:
            assert again[name] == value, f"{path.stem}.{name} changed"


def test_stored_files_name_known_event_types() -> None:
    unknown = {p.stem for p in STORED} - set(TAGS)
    assert not unknown


@pytest.mark.parametrize("cls", events.EVENT_TYPES, ids=tag_of)
def test_tag_is_the_class_name(cls: type[events.Event]) -> None:
    assert tag_of(cls) == cls.__name__


def test_encode_decode_round_trip() -> None:
    for path in STORED:
        event = events.decode(path.read_bytes())
        assert events.decode(events.encode(event)) == event
        assert events.decode(events.encode(event).decode()) == event  # str payloads too


def test_unknown_fields_are_ignored() -> None:
    """A newer writer may add fields; an older reader must still decode the event."""
    document = stored(FIXTURES / "v1" / "PostPublished.json")
    document["added_in_a_later_release"] = {"anything": [1, 2]}
    event = events.decode(json.dumps(document))
    assert isinstance(event, events.PostPublished)


def test_missing_defaulted_fields_take_their_defaults() -> None:
    event = events.decode(
        json.dumps(
            {
                "type": "AccountFollowed",
                "id": "1",
                "actor": "bob",
                "at": "2024-05-01T12:00:00Z",
                "v": 1,  # every stored payload names its version
                "follower": "bob",
                "account": "ops",
            }
        )
    )
    assert event == events.AccountFollowed(
        id="1",
        actor="bob",
        at=datetime(2024, 5, 1, 12, tzinfo=UTC),
        v=1,
        follower="bob",
        account="ops",
    )
    assert event.v == 1
    assert event.channels == ("app",)
    assert event.mandatory is False


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"type": "PostPublished"}',  # required fields missing
        b'{"type": "NoSuchEvent", "id": "1", "actor": "a", "at": "2024-05-01T12:00:00Z"}',
        b'{"id": "1", "actor": "a", "at": "2024-05-01T12:00:00Z", "handle": "a"}',  # no tag
        b'{"type": "PosterGranted", "id": 1, "actor": "a", "at": "2024-05-01T12:00:00Z",'
        b' "account": "a", "poster": "b"}',  # id must be a string
        b'{"type": "PosterGranted", "id": "1", "actor": "a", "at": "yesterday",'
        b' "account": "a", "poster": "b"}',
    ],
)
def test_undecodable_payloads_raise_event_decode_error(payload: bytes) -> None:
    with pytest.raises(EventDecodeError):
        events.decode(payload)


def test_events_are_frozen() -> None:
    event = events.decode((FIXTURES / "v1" / "PosterGranted.json").read_bytes())
    with pytest.raises(AttributeError):
        event.actor = "mallory"  # type: ignore[misc]


def test_encoded_events_carry_their_tag() -> None:
    event = events.PosterRevoked(
        id="5", actor="admin", at=events.utcnow(), account="ops", poster="bob"
    )
    assert msgspec.json.decode(events.encode(event))["type"] == "PosterRevoked"
    assert events.utcnow().tzinfo is UTC


PARTITION_FIELD = {
    "AccountCreated": "handle",
    "AccountTokenReset": "handle",
    "AccountDeactivated": "handle",
    "AccountReactivated": "handle",
    "NamedTokenCreated": "handle",
    "NamedTokenRevoked": "handle",
    "AuditRead": "actor",
    "ContactPointsChanged": "handle",
    "PosterGranted": "account",
    "PosterRevoked": "account",
    "MembersEnrolled": "account",
    "FollowersEnrolled": "account",
    "AccountFollowed": "follower",
    "FollowChannelsChanged": "follower",
    "AccountUnfollowed": "follower",
    "FollowerEnrolled": "follower",
    "PostPublished": "as_account",
    "DirectMessageSent": "actor",
    "DirectoryUserChanged": "handle",
    "DirectoryUserRemoved": "handle",
    "DirectoryGroupChanged": "account",
    "DirectoryGroupRemoved": "account",
    "SubscriptionRequested": "subscription",
    "SubscriptionConfirmed": "subscription",
    "SubscriptionEnded": "subscription",
    "ComponentChanged": "account",
    "IncidentOpened": "account",
    "IncidentUpdated": "account",
    "StatusPageChanged": "handle",
    "RollCallAnswered": "recipient",
    "RollCallAudienceRecorded": "recipients",
    "RollCallHelpHandled": "recipient",
    "RollCallClosed": "account",
    "RollCallExtended": "account",
    "RollCallReminded": "account",
    "RollCallEscalated": "notices.subject",
    "EscalationPolicySet": "policy.name",
    "EscalationPolicyDeleted": "name",
    "ManagerChanged": "handle",
    "InboundEmailRefused": "recipient",
    "RollCallAnswerRejected": "recipient",
    "ContactPointOptedOut": "account",
    "ContactPointOptedIn": "account",
}
PARTITION_PREFIX = {"subscription": "sub-", "policy.name": "policy:", "name": "policy:"}
"""A subscription's events go to its recipient name's partition: `sub-<id>`; a policy's to
`policy:<name>`'s."""


def _field(document: dict[str, Any], path: str) -> Any:
    """A stored field by a dotted path; in a list, its first item's (one partition's page)."""
    value: Any = document
    for name in path.split("."):
        if isinstance(value, list):
            value = value[0]
        value = value[name]
    return value


def test_partition_field_covers_every_type() -> None:
    assert set(PARTITION_FIELD) == set(TAGS)


@pytest.mark.parametrize("path", STORED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_partition_handle(path: Path) -> None:
    event = events.decode(path.read_bytes())
    field = PARTITION_FIELD[path.stem]
    value = _field(stored(path), field)
    if isinstance(value, list):  # a roll-call's audience page: all of one partition
        value = value[0]
    expected = PARTITION_PREFIX.get(field, "") + value
    assert events.partition_handle(event) == expected
