"""Emulated HubSpot for the sandbox: CRM v3 contacts, companies, tasks, properties, owners,
OAuth and forms."""

from __future__ import annotations

from leadrelay.sandbox.hubspot.emulator import (
    SANDBOX_ACCESS_TOKEN,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_REFRESH_TOKEN,
    HubSpotEmulator,
)
from leadrelay.sandbox.hubspot.forms import SANDBOX_FORM_GUID, SANDBOX_PORTAL_ID

__all__ = [
    "SANDBOX_ACCESS_TOKEN",
    "SANDBOX_CLIENT_ID",
    "SANDBOX_CLIENT_SECRET",
    "SANDBOX_FORM_GUID",
    "SANDBOX_PORTAL_ID",
    "SANDBOX_REFRESH_TOKEN",
    "HubSpotEmulator",
]
