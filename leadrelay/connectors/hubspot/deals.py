"""HubSpot as the CRM: which deal is a contact's, and how its values ride on the contact.

A contact record carries its deal's properties as ``deal.<name>`` (``deal.dealstage``,
``deal.amount`` …), so a mapping reads the outcome from them like any other property and the
record id stays the contact's. The read cursor gets a second part, the deals' own keyset
position (:func:`join_cursor`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from leadrelay.connectors.hubspot.fields import DEAL_PREFIX

__all__ = [
    "DEAL_MODIFIED",
    "choose_deal",
    "epoch_ms",
    "join_cursor",
    "outcome_fields",
    "split_cursor",
]

#: When HubSpot last changed a deal (the deals' incremental reads run on it).
DEAL_MODIFIED = "hs_lastmodifieddate"
#: Between the contacts' part of a read cursor and the deals' part.
_DEALS_PART = "|deals="


def epoch_ms(value: Any) -> int:
    """HubSpot's datetime value (ISO-8601 or epoch ms) in epoch milliseconds (0: none)."""
    text = str(value or "").strip()
    if not text:
        return 0
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _id(deal: Mapping[str, Any]) -> int:
    raw = str(deal.get("hs_object_id") or "")
    return int(raw) if raw.isdigit() else 0


def choose_deal(deals: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The deal that is a contact's outcome, among its deals (None when it has none).

    A won deal when there is one (the latest to close): a lead that became a customer stays
    won, whatever later deals (an upsell, a renewal) do. Otherwise the most recently created
    deal, open or lost: a contact whose deal was lost and who came back with a new one is an
    opportunity again. Ties go to the higher record id.
    """
    if not deals:
        return None
    won = [d for d in deals if str(d.get("hs_is_closed_won") or "").lower() == "true"]
    if won:
        return max(
            won, key=lambda d: (epoch_ms(d.get("closedate")), epoch_ms(d.get("createdate")), _id(d))
        )
    return max(deals, key=lambda d: (epoch_ms(d.get("createdate")), _id(d)))


def outcome_fields(deal: Mapping[str, Any] | None, names: Sequence[str]) -> dict[str, Any]:
    """``deal.<name>`` for every deal property read: the chosen deal's values, or None for
    each when the contact has no deal (its outcome is then blank, not unknown)."""
    return {f"{DEAL_PREFIX}{name}": (deal or {}).get(name) for name in names}


def split_cursor(cursor: str | None) -> tuple[str | None, str | None]:
    """(contacts' part, deals' part) of a read cursor; either may be None."""
    if cursor is None:
        return None, None
    contacts, found, deals = cursor.partition(_DEALS_PART)
    if not found:
        return cursor, None
    return contacts or None, deals or None


def join_cursor(contacts: str | None, deals: str | None) -> str | None:
    """A read cursor of both parts (the contacts' alone when the deals have none yet)."""
    if deals is None:
        return contacts
    return f"{contacts or ''}{_DEALS_PART}{deals}"
