"""Capture service: the webhook endpoints for forms and ad lead forms."""
