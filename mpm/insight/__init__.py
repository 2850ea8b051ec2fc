"""Delivery insight: rollups, dashboard figures, charts and alerts."""
