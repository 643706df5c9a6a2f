"""The bid lifecycle, as a transition table.

::

    draft ──approve──▶ approved ──submit──▶ submitted ──accept──▶ accepted ──award──▶ awarded
      ▲ │                 │  │                  │  └──refuse──▶ refused      └──unaward──▶ unawarded
      │ └──reject──▶ rejected │                 ├──lose──▶ unknown (sent, no answer: ask the market)
      └──────edit──────┴──────┘               └──revert──▶ approved (never sent, gate open)
    draft / approved / submitted ──miss──▶ missed (the gate closed first)

(an edit always makes a new version, back in draft). ``missed``, ``unawarded`` and
``unknown`` are how the engine reconciles what would otherwise wait forever: a draft whose
gate passed, an accepted bid whose interval ended without an award, a submission cut off
by a crash whose outcome the market cannot tell.
"""

from __future__ import annotations

from enum import StrEnum


class BidStatus(StrEnum):
    DRAFT = "draft"
    APPROVED = "approved"
    REJECTED = "rejected"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    REFUSED = "refused"
    AWARDED = "awarded"
    MISSED = "missed"
    UNAWARDED = "unawarded"
    UNKNOWN = "unknown"


class BidAction(StrEnum):
    EDIT = "edit"
    APPROVE = "approve"
    REJECT = "reject"
    SUBMIT = "submit"
    ACCEPT = "accept"
    REFUSE = "refuse"
    AWARD = "award"
    MISS = "miss"
    UNAWARD = "unaward"
    LOSE = "lose"
    REVERT = "revert"


TRANSITIONS: dict[tuple[BidStatus, BidAction], BidStatus] = {
    (BidStatus.DRAFT, BidAction.EDIT): BidStatus.DRAFT,
    (BidStatus.DRAFT, BidAction.APPROVE): BidStatus.APPROVED,
    (BidStatus.DRAFT, BidAction.REJECT): BidStatus.REJECTED,
    (BidStatus.APPROVED, BidAction.EDIT): BidStatus.DRAFT,
    (BidStatus.APPROVED, BidAction.REJECT): BidStatus.REJECTED,
    (BidStatus.APPROVED, BidAction.SUBMIT): BidStatus.SUBMITTED,
    (BidStatus.REJECTED, BidAction.EDIT): BidStatus.DRAFT,
    (BidStatus.SUBMITTED, BidAction.ACCEPT): BidStatus.ACCEPTED,
    (BidStatus.SUBMITTED, BidAction.REFUSE): BidStatus.REFUSED,
    (BidStatus.ACCEPTED, BidAction.AWARD): BidStatus.AWARDED,
    (BidStatus.ACCEPTED, BidAction.UNAWARD): BidStatus.UNAWARDED,
    (BidStatus.DRAFT, BidAction.MISS): BidStatus.MISSED,
    (BidStatus.APPROVED, BidAction.MISS): BidStatus.MISSED,
    (BidStatus.SUBMITTED, BidAction.MISS): BidStatus.MISSED,
    (BidStatus.SUBMITTED, BidAction.LOSE): BidStatus.UNKNOWN,
    (BidStatus.SUBMITTED, BidAction.REVERT): BidStatus.APPROVED,
    (BidStatus.UNKNOWN, BidAction.ACCEPT): BidStatus.ACCEPTED,
    (BidStatus.UNKNOWN, BidAction.REFUSE): BidStatus.REFUSED,
    (BidStatus.UNKNOWN, BidAction.MISS): BidStatus.MISSED,
}

EDITABLE = frozenset({BidStatus.DRAFT, BidStatus.APPROVED, BidStatus.REJECTED})


class LifecycleError(ValueError):
    pass


# How an operator reads a status and an action (refusals speak these, not the state names).
STATUS_WORDS: dict[BidStatus, str] = {
    BidStatus.DRAFT: "a draft",
    BidStatus.APPROVED: "approved already",
    BidStatus.REJECTED: "rejected",
    BidStatus.SUBMITTED: "submitted and waiting for the market's answer",
    BidStatus.ACCEPTED: "accepted by the market",
    BidStatus.REFUSED: "refused by the market",
    BidStatus.AWARDED: "awarded",
    BidStatus.MISSED: "missed (its gate closed before it was submitted)",
    BidStatus.UNAWARDED: "over without an award",
    BidStatus.UNKNOWN: "at the market in an unknown state (its answer was lost)",
}
PAST: dict[BidAction, str] = {
    BidAction.EDIT: "edited",
    BidAction.APPROVE: "approved",
    BidAction.REJECT: "rejected",
    BidAction.SUBMIT: "submitted",
    BidAction.ACCEPT: "accepted",
    BidAction.REFUSE: "refused",
    BidAction.AWARD: "awarded",
    BidAction.MISS: "marked missed",
    BidAction.UNAWARD: "closed without an award",
    BidAction.LOSE: "marked unknown",
    BidAction.REVERT: "reverted",
}
OPERATOR_ACTIONS = (BidAction.EDIT, BidAction.APPROVE, BidAction.REJECT, BidAction.SUBMIT)


def allowed(status: BidStatus) -> list[BidAction]:
    return [action for (s, action) in TRANSITIONS if s == status]


def next_status(bid_id: str, status: BidStatus, action: BidAction) -> BidStatus:
    """The status after ``action``; :class:`LifecycleError` says what would be allowed."""
    try:
        return TRANSITIONS[(status, action)]
    except KeyError:
        ops = [a.value for a in allowed(status) if a in OPERATOR_ACTIONS]
        can = (
            f"an operator can {', '.join(ops[:-1]) + ' or ' if len(ops) > 1 else ''}{ops[-1]} it"
            if ops
            else "no operator action applies to it any more"
        )
        raise LifecycleError(
            f"bid {bid_id} is {STATUS_WORDS[status]}, so it cannot be {PAST[action]}; {can}"
        ) from None
