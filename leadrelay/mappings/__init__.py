"""Mapping engine and the default mapping file of every built-in connector."""
