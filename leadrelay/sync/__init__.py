"""Sync: engine, tagging, dedupe/identity, field rules, state store, plan."""
