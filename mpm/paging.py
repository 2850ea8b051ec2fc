"""Numbered pages of a query (lists where a page number in the URL makes sense)."""
from dataclasses import dataclass

from sqlalchemy import Select

from mpm.extensions import db


@dataclass(frozen=True)
class Page:
    rows: list
    total: int
    page: int  # 1-based; a number past the end shows the last page
    pages: int  # at least 1, so "page 1 of 1" for an empty list


def numbered_page(stmt: Select, page: int, per_page: int) -> Page:
    """`stmt` must carry its order_by; one COUNT and one LIMIT/OFFSET query (two past the end)."""
    found = db.paginate(stmt, page=max(page, 1), per_page=per_page, max_per_page=None, error_out=False, count=True)
    if not found.items and found.page > 1 and found.total:
        found = db.paginate(stmt, page=found.pages, per_page=per_page, max_per_page=None, error_out=False, count=True)
    return Page(list(found.items), found.total or 0, found.page, max(found.pages, 1))
