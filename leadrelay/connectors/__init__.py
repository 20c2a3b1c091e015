"""Connectors: one package per system; base.py holds the contract, registry and HTTP policy."""
