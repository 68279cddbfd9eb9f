"""The five back-office roles and what each may see and change, by area.

One table answers "may this role read / write this area" for the web console and the admin chat
alike. ``QUANYI_ADMIN_IDS`` are owners; everyone else has the role of their ``staff_members`` row.
"""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    OWNER = "owner"  # everything, and manages the staff
    OPERATOR = "operator"  # catalogue, stock, channels, distributors, partners, pricing, risk, orders
    FINANCE = "finance"  # ledger, settlement, reconciliation, withdrawals, reports
    SUPPORT = "support"  # orders: look up, re-send, refund up to a limit; tickets; manual tasks
    READ_ONLY = "read_only"  # sees what an operator sees, changes nothing


class Area(enum.StrEnum):
    DASHBOARD = "dashboard"
    ORDERS = "orders"
    CATALOG = "catalog"  # products, bundles
    STOCK = "stock"  # imports, voids, allocations, thresholds
    CHANNELS = "channels"
    DISTRIBUTORS = "distributors"
    PARTNERS = "partners"
    PRICING = "pricing"  # coupons, promotions, price lists
    RISK = "risk"
    BOOKS = "books"  # ledger, settlement, statements, reconciliation, withdrawals, commissions
    REPORTS = "reports"
    AUDIT = "audit"
    SUPPORT = "support"  # tickets, manual fulfilment queue
    STAFF = "staff"  # who may sign in, with which role; sessions


ROLES = tuple(Role)
_ALL = frozenset(Area)
_BACK_OFFICE = _ALL - {Area.STAFF}

# What each role may read, and what it may change.
READ: dict[Role, frozenset[Area]] = {
    Role.OWNER: _ALL,
    Role.OPERATOR: _BACK_OFFICE,
    Role.FINANCE: _BACK_OFFICE,
    Role.SUPPORT: frozenset({Area.DASHBOARD, Area.ORDERS, Area.SUPPORT}),
    Role.READ_ONLY: _BACK_OFFICE,
}
WRITE: dict[Role, frozenset[Area]] = {
    Role.OWNER: _ALL,
    Role.OPERATOR: frozenset(
        {
            Area.ORDERS,
            Area.CATALOG,
            Area.STOCK,
            Area.CHANNELS,
            Area.DISTRIBUTORS,
            Area.PARTNERS,
            Area.PRICING,
            Area.RISK,
            Area.SUPPORT,
        }
    ),
    Role.FINANCE: frozenset({Area.BOOKS, Area.REPORTS}),
    Role.SUPPORT: frozenset({Area.ORDERS, Area.SUPPORT}),
    Role.READ_ONLY: frozenset(),
}


def may(role: Role | str | None, area: Area | str, *, write: bool = False) -> bool:
    """Whether ``role`` may read (or, with ``write``, change) ``area``; no role may nothing."""
    if role is None:
        return False
    try:
        role, area = Role(role), Area(area)
    except ValueError:
        return False
    return area in (WRITE if write else READ)[role]


def parse_role(text: str) -> Role:
    """``owner``, ``operator``, ``finance``, ``support``, ``read-only`` (or ``read_only``)."""
    from quanyi.core.errors import InvalidInput

    cleaned = text.strip().lower().replace("-", "_")
    try:
        return Role(cleaned)
    except ValueError:
        names = ", ".join(r.value.replace("_", "-") for r in Role)
        raise InvalidInput(
            f"unknown role {text!r}; one of: {names}", key="err_staff.unknown_role", role=text, roles=names
        ) from None
