"""The Zoho CRM connector (``kind = "zoho"``): httpx against the v7 REST API."""

from __future__ import annotations

from leadrelay.connectors.zoho.connector import ZohoConnector

__all__ = ["ZohoConnector"]
