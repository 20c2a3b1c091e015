"""Local emulators of HubSpot, Salesforce, Zoho CRM, Meta and LinkedIn lead retrieval."""
