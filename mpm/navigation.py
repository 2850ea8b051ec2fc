"""The sidebar of DESIGN.md. An entry whose page is not built yet leads to a 'coming soon' page."""
from flask import current_app, request, url_for
from flask_login import current_user

# (label, endpoint, url values)
SIDEBAR = [
    ("Dashboard", "main.dashboard", {}),
    ("Alerts", "alerts.index", {}),
    ("Customers", "customers.index", {}),
    ("SMS history", "sms.history", {}),
    ("New message", "sms.new_message", {}),
    ("Inbox", "sms_inbox.index", {}),
    ("Broadcasts", "broadcasts.index", {}),
    ("Maintenance", "maintenance.index", {}),
    ("Transactions", "transactions.index", {}),
    ("Settings → Plugins", "plugins.index", {}),
    ("Settings → SMS", "settings.sms", {}),
]


def _link(label: str, endpoint: str, values: dict) -> dict:
    if endpoint in current_app.view_functions:
        href = url_for(endpoint, **values)
    else:
        href = url_for("main.coming_soon", page=label)
    return {"label": label, "href": href, "active": request.path == href}


def sidebar_context() -> dict:
    if not current_user.is_authenticated:
        return {"sidebar": [], "plugin_links": []}
    links = [_link(*entry) for entry in SIDEBAR]
    return {"sidebar": links, "plugin_links": _enabled_plugin_links()}


def _enabled_plugin_links() -> list[dict]:
    """One sidebar entry per enabled gateway plugin, in priority order."""
    if "plugins.overview" not in current_app.view_functions:
        return []
    from sqlalchemy import select

    from mpm.extensions import db
    from mpm.gateways.catalog import GATEWAY_LABELS, PRIORITY
    from mpm.models import GatewaySetting

    enabled = set(
        db.session.scalars(
            select(GatewaySetting.gateway).where(
                GatewaySetting.company_id == current_user.company_id, GatewaySetting.enabled.is_(True)
            )
        )
    )
    return [_link(GATEWAY_LABELS[key], "plugins.overview", {"gateway": key}) for key in PRIORITY if key in enabled]
