"""Maintenance tickets and the SMS they send."""
