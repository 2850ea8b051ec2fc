"""Per-company API tokens for payment providers. Only a SHA-256 hash is stored; the token itself is
shown once, when it is created."""
import hashlib
import secrets

from sqlalchemy import select

from mpm.audit import audit
from mpm.extensions import db
from mpm.models import ApiToken

PREFIX = "mpm_"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenInvalid(ValueError):
    pass


def create_token(company_id: int, name: str, user_id: int | None = None) -> tuple[ApiToken, str]:
    """A new token; returns the row and the plain token (its only appearance)."""
    name = (name or "").strip()
    if not name:
        raise TokenInvalid("Name the token after who uses it, e.g. “M-Pesa payments”.")
    if len(name) > 80:
        raise TokenInvalid("The name is longer than 80 characters.")
    plain = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(company_id=company_id, name=name, token_hash=token_hash(plain), last_four=plain[-4:])
    db.session.add(row)
    db.session.flush()
    audit(company_id, user_id, "api_token.created", name, token_id=row.id, last_four=row.last_four)
    db.session.commit()
    return row, plain


def revoke_token(company_id: int, token_id: int, user_id: int | None = None) -> bool:
    row = db.session.get(ApiToken, token_id)
    if row is None or row.company_id != company_id:
        return False
    audit(company_id, user_id, "api_token.revoked", row.name, token_id=row.id, last_four=row.last_four)
    db.session.delete(row)
    db.session.commit()
    return True


def company_for_token(plain: str | None) -> int | None:
    """The company a bearer token belongs to, or None (missing, unknown or revoked)."""
    if not plain or not plain.startswith(PREFIX):
        return None
    return db.session.scalar(select(ApiToken.company_id).where(ApiToken.token_hash == token_hash(plain)))


def tokens(company_id: int) -> list[ApiToken]:
    return list(db.session.scalars(select(ApiToken).where(ApiToken.company_id == company_id)
                                   .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())))
