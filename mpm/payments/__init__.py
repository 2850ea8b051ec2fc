"""Payments: transactions posted through the API and their confirmation SMS."""
