"""HTTP only: each blueprint parses input, calls one domain function, renders. The providers'
callbacks are answered in front of Flask (mpm.blueprints.callbacks)."""
from mpm.blueprints.account import bp as account
from mpm.blueprints.alerts import bp as alerts
from mpm.blueprints.api import bp as api
from mpm.blueprints.auth import bp as auth
from mpm.blueprints.broadcasts import bp as broadcasts
from mpm.blueprints.customers import bp as customers
from mpm.blueprints.inbox import bp as sms_inbox
from mpm.blueprints.maintenance import bp as maintenance
from mpm.blueprints.main import bp as main
from mpm.blueprints.plugins import bp as plugins
from mpm.blueprints.settings import bp as settings
from mpm.blueprints.sms import bp as sms
from mpm.blueprints.staff import bp as staff
from mpm.blueprints.transactions import bp as transactions

ALL_BLUEPRINTS = [transactions, maintenance, settings, sms_inbox, api, auth, main, customers, plugins, broadcasts, sms,
                 staff, account, alerts]
