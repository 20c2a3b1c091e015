"""The Salesforce connector (``kind = "salesforce"``): Leads via simple-salesforce.

:class:`SalesforceConnector` reads changed Leads by SystemModstamp, looks Leads and Contacts up
by email, upserts through sObject collections (by external id or after a batch lookup) and
through Bulk API 2.0 above ``bulk_threshold``. See :mod:`.connector` for the details.
"""

from __future__ import annotations

from leadrelay.connectors.salesforce.connector import SalesforceConnector

__all__ = ["SalesforceConnector"]
