"""Staff accounts: log-in, passwords and set-password links, a company's staff, API tokens."""
