"""Zoho CRM v7 emulator: Leads, Accounts, Tasks, search, COQL, metadata, users, OAuth tokens."""

from __future__ import annotations

from leadrelay.sandbox.zoho.emulator import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_REFRESH_TOKEN,
    ZohoEmulator,
)

__all__ = ["SANDBOX_CLIENT_ID", "SANDBOX_CLIENT_SECRET", "SANDBOX_REFRESH_TOKEN", "ZohoEmulator"]
