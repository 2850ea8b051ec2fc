"""Gateway plugins: a company's choice of gateways, their settings, credentials and health."""
