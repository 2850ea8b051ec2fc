"""Messaging domain: body encoding, status rules, queueing and dispatch of SMS."""
