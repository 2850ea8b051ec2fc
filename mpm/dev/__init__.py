"""Development tools, never used in production: the embedded runner, demo data and the gateway simulator."""
