"""HTTP only: each blueprint parses input, calls one domain function, renders."""
from mpm.blueprints.auth import bp as auth
from mpm.blueprints.broadcasts import bp as broadcasts
from mpm.blueprints.customers import bp as customers
from mpm.blueprints.main import bp as main
from mpm.blueprints.plugins import bp as plugins
from mpm.blueprints.sms import bp as sms

ALL_BLUEPRINTS = [auth, main, customers, plugins, broadcasts, sms]
