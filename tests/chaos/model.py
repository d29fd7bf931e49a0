"""What the ledger says the end state must be: follows, homes and deliveries.

Follows. A pair's changes (a person's follow, channel change or unfollow; an admin's
enrolment) are replayed in the order they were sent: a follow sets the channels it answered,
an unfollow removes the follow (a 403 `mandatory_follow` changes nothing), an enrolment adds
its channels to the follow's (or makes one) and sets `mandatory`. An enrolment is applied
when the timeline worker expands it, some time after it was sent: a pair with an enrolment
made during the faults and another change not answered before that enrolment was sent has
no one expected end state (`ambiguous`), and is left out of that comparison only. (Set-up
waits for its enrolment's expansion before anyone follows.)

Homes. Following copies the account's newest MUSTER_TIMELINE_MAX posts into the home and
unfollowing takes them out, so at the end person X's home must hold exactly: every post
made as an account X follows at the end that X may see (externals: public ones only), and
X's own posts made as X; X's own posts made as a team X does not follow at the end may or
may not be there (unfollowing that team takes them out). Exact while no home reaches the cap.

Deliveries. A post P made as A must reach person X ≠ its author on channel c when every
change of the pair (X, A) was answered before P was first sent, X follows A at the end on
channels holding c (any channel, for a critical post), X has that contact point, and X may
see P. A DM must reach its recipient on each of their DM channels they have a contact point
for. Sends outside the pairs that ever followed, or on channels the pair never held (unless
critical), are unexpected.
"""

from __future__ import annotations

from dataclasses import dataclass

from chaos.ledger import OFFAPP, Cast, Change, DmRecord, Ledger, PostRecord


@dataclass(frozen=True, slots=True)
class FollowState:
    channels: frozenset[str]
    mandatory: bool


def replay_changes(changes: list[Change]) -> tuple[FollowState | None, bool]:
    """The end state the changes lead to, and whether their order leaves it open."""
    state: FollowState | None = None
    ordered = sorted(changes, key=lambda c: c.sent)
    for change in ordered:
        if change.kind == "follow":
            state = FollowState(frozenset(change.channels), change.mandatory)
        elif change.kind == "unfollow":
            if change.status == 204:
                state = None
        else:
            before = state.channels if state is not None else frozenset({"app"})
            state = FollowState(before | frozenset(change.channels), change.mandatory)
    # an enrolment is applied when expanded, any time after it was sent: another change of
    # the pair not answered before then may land on either side of it
    enrolments = [c for c in ordered if c.kind == "enrol" and not c.setup]
    ambiguous = any(
        c is not e and c.answered > e.sent for e in enrolments for c in ordered if not c.setup
    )
    return state, ambiguous


def ever_channels(changes: list[Change]) -> set[str]:
    found: set[str] = set()
    for change in changes:
        found |= set(change.channels)
    return found


def may_see(cast: Cast, handle: str, post: PostRecord) -> bool:
    return post.visibility == "public" or cast[handle].employee


def expected_home(
    cast: Cast, ledger: Ledger, handle: str, follows: dict[str, FollowState]
) -> tuple[set[str], set[str]]:
    """(must hold, may hold) of a person's home."""
    required: set[str] = set()
    optional: set[str] = set()
    for post in ledger.posts.values():
        followed = post.as_account in follows and may_see(cast, handle, post)
        if followed or post.as_account == handle:
            required.add(post.id)
        elif post.author == handle:
            optional.add(post.id)
    return required, optional


def expected_post_deliveries(
    cast: Cast, ledger: Ledger, final: dict[tuple[str, str], FollowState]
) -> set[str]:
    found: set[str] = set()
    for post in ledger.posts.values():
        for (follower, account), state in final.items():
            if account != post.as_account or follower == post.author:
                continue
            person = cast[follower]
            if not may_see(cast, follower, post):
                continue
            changes = ledger.changes.get((follower, account), [])
            if any(change.answered >= post.sent for change in changes):
                continue  # the follow moved while (or after) the post was made
            for channel in OFFAPP:
                chosen = channel in state.channels or post.severity == "critical"
                if chosen and person.reachable(channel):
                    found.add(f"{post.id}.{follower}.{channel}")
    return found


def expected_dm_deliveries(cast: Cast, ledger: Ledger) -> set[str]:
    found: set[str] = set()
    for dm in ledger.dms.values():
        found |= dm_channels(cast, dm)
    return found


def dm_channels(cast: Cast, dm: DmRecord) -> set[str]:
    person = cast[dm.recipient]
    return {
        f"{dm.id}.{dm.recipient}.{c}"
        for c in OFFAPP
        if c in person.dm_channels and person.reachable(c)
    }


def possible_post_delivery(
    cast: Cast, ledger: Ledger, post: PostRecord, recipient: str, channel: str
) -> str | None:
    """Why a post's send to `recipient` on `channel` should not have happened, or None."""
    if recipient == post.author:
        return "sent to its own author"
    if not may_see(cast, recipient, post):
        return "an internal post sent to an external person"
    if not cast[recipient].reachable(channel):
        return f"sent on {channel}, which the recipient has no contact point for"
    changes = ledger.changes.get((recipient, post.as_account))
    if not changes:
        return f"the recipient never followed {post.as_account}"
    if post.severity != "critical" and channel not in ever_channels(changes):
        return f"the recipient never chose {channel} for {post.as_account}"
    return None
