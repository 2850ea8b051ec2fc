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
    ("Plugins", "plugins.index", {}),
    ("SMS templates", "settings.sms", {}),
    ("Staff", "staff.index", {}),
]
# Pages a manager is refused (mpm.web.admin_required): not offered to them at all.
ADMIN_ONLY = frozenset({"plugins.index", "staff.index"})


def _link(label: str, endpoint: str, values: dict) -> dict:
    if endpoint in current_app.view_functions:
        href = url_for(endpoint, **values)
    else:
        href = url_for("main.coming_soon", page=label)
    return {"label": label, "href": href, "active": request.path == href}


def sidebar_context() -> dict:
    if not current_user.is_authenticated:
        return {"sidebar": [], "plugin_links": []}
    admin = current_user.is_admin
    links = [_link(*entry) for entry in SIDEBAR if admin or entry[1] not in ADMIN_ONLY]
    return {"sidebar": links, "plugin_links": _enabled_plugin_links() if admin else []}


def _enabled_plugin_links() -> list[dict]:
    """One sidebar entry per enabled gateway plugin, in priority order."""
    if "plugins.overview" not in current_app.view_functions:
        return []
    from sqlalchemy import select

    from mpm.extensions import db
    from mpm.models import GatewaySetting
    from mpm.plugins.setup import gateway_labels

    enabled = set(
        db.session.scalars(
            select(GatewaySetting.gateway).where(
                GatewaySetting.company_id == current_user.company_id, GatewaySetting.enabled.is_(True)
            )
        )
    )
    return [_link(label, "plugins.overview", {"gateway": key}) for key, label in gateway_labels() if key in enabled]
