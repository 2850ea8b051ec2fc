"""People (customers, agents, service providers): finding them and their phone numbers."""
