"""Emulated HubSpot CRM v3 for the sandbox (contacts, batch, search, properties, owners, OAuth)."""

from __future__ import annotations

from leadrelay.sandbox.hubspot.emulator import (
    SANDBOX_ACCESS_TOKEN,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_REFRESH_TOKEN,
    HubSpotEmulator,
)

__all__ = [
    "SANDBOX_ACCESS_TOKEN",
    "SANDBOX_CLIENT_ID",
    "SANDBOX_CLIENT_SECRET",
    "SANDBOX_REFRESH_TOKEN",
    "HubSpotEmulator",
]
