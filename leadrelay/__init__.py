"""leadrelay: lead-handoff integration middleware.

Takes leads from where marketing captures them (web forms, ad lead forms, event lists, a
marketing-automation platform) into the CRM, and carries sales' verdict back, so that no lead
leaks between marketing and sales.
"""

from __future__ import annotations

__version__ = "0.1.0"
