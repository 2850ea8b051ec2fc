"""HTTP only: each blueprint parses input, calls one domain function, renders."""
from mpm.blueprints.auth import bp as auth
from mpm.blueprints.customers import bp as customers
from mpm.blueprints.main import bp as main

ALL_BLUEPRINTS = [auth, main, customers]
