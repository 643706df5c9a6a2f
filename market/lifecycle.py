"""The bid lifecycle, as a transition table.

::

    draft ──approve──▶ approved ──submit──▶ submitted ──accept──▶ accepted ──award──▶ awarded
      ▲ │                 │  │                  └──refuse──▶ refused
      │ └──reject──▶ rejected │
      └──────edit──────┴──────┘   (an edit always makes a new version, back in draft)
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


class BidAction(StrEnum):
    EDIT = "edit"
    APPROVE = "approve"
    REJECT = "reject"
    SUBMIT = "submit"
    ACCEPT = "accept"
    REFUSE = "refuse"
    AWARD = "award"


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
}

EDITABLE = frozenset({BidStatus.DRAFT, BidStatus.APPROVED, BidStatus.REJECTED})


class LifecycleError(ValueError):
    pass


def allowed(status: BidStatus) -> list[BidAction]:
    return [action for (s, action) in TRANSITIONS if s == status]


def next_status(bid_id: str, status: BidStatus, action: BidAction) -> BidStatus:
    """The status after ``action``; :class:`LifecycleError` says what would be allowed."""
    try:
        return TRANSITIONS[(status, action)]
    except KeyError:
        can = ", ".join(a.value for a in allowed(status)) or "nothing (final)"
        raise LifecycleError(
            f"bid {bid_id}: cannot {action.value} a {status.value} bid (allowed: {can})"
        ) from None
