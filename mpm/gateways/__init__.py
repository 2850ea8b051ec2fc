"""SMS gateways: one module per provider behind one interface, tried in priority order."""
