"""Handoff rules: scoring, routing, SLA, rejection/recycle, reports."""
