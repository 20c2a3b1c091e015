"""Validation-test mode."""
