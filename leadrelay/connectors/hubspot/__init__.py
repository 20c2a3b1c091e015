"""The HubSpot connector (contacts, CRM v3, hubspot-api-client)."""

from __future__ import annotations

from leadrelay.connectors.hubspot.connector import HubSpotConnector, HubSpotOwner
from leadrelay.connectors.hubspot.fields import PropertySpec

__all__ = ["HubSpotConnector", "HubSpotOwner", "PropertySpec"]
