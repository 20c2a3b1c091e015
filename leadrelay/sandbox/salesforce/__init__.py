"""Salesforce REST emulator: OAuth, sObjects, SOQL, composite collections and Bulk API 2.0."""

from leadrelay.sandbox.salesforce.app import (
    SANDBOX_CONSUMER_KEY,
    SANDBOX_CONSUMER_SECRET,
    SANDBOX_PASSWORD,
    SANDBOX_REFRESH_TOKEN,
    SANDBOX_SECURITY_TOKEN,
    SANDBOX_USERNAME,
    SalesforceEmulator,
)

__all__ = [
    "SANDBOX_CONSUMER_KEY",
    "SANDBOX_CONSUMER_SECRET",
    "SANDBOX_PASSWORD",
    "SANDBOX_REFRESH_TOKEN",
    "SANDBOX_SECURITY_TOKEN",
    "SANDBOX_USERNAME",
    "SalesforceEmulator",
]
