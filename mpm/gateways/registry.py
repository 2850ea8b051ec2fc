"""Which gateways a company can send through now, in priority order."""
from sqlalchemy import select

from mpm.extensions import db
from mpm.gateways.catalog import PRIORITY
from mpm.models import GatewaySetting


def active_gateway_keys(company_id: int) -> list[str]:
    """Enabled and with valid credentials, in the fixed priority order."""
    rows = db.session.scalars(
        select(GatewaySetting.gateway).where(
            GatewaySetting.company_id == company_id,
            GatewaySetting.enabled.is_(True),
            GatewaySetting.valid.is_(True),
        )
    ).all()
    return [key for key in PRIORITY if key in set(rows)]
