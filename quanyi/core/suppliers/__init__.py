"""Recharge suppliers behind one interface, and the hub that holds the configured ones."""

from __future__ import annotations

from quanyi.core.errors import ConfigError
from quanyi.core.platform.config import Settings
from quanyi.core.suppliers.base import (
    STATES,
    TERMINAL,
    RechargeRequest,
    RechargeState,
    Supplier,
    SupplierHub,
    SupplierResult,
    advance,
    callback_url,
)

__all__ = [
    "STATES",
    "TERMINAL",
    "RechargeRequest",
    "RechargeState",
    "Supplier",
    "SupplierHub",
    "SupplierResult",
    "advance",
    "build_supplier_hub",
    "callback_url",
]


def build_supplier_hub(settings: Settings) -> SupplierHub:
    """The configured suppliers. Refuses to start when one is half configured or its secret is
    empty or a placeholder."""
    from quanyi.core.payments.base import require_secret
    from quanyi.core.suppliers.generic import GenericSupplier

    suppliers: list[Supplier] = []
    if settings.supplier_generic_url or settings.supplier_generic_secret:
        if not (settings.supplier_generic_url and settings.supplier_generic_secret):
            raise ConfigError("the generic supplier needs QUANYI_SUPPLIER_GENERIC_URL and _SECRET together")
        require_secret("QUANYI_SUPPLIER_GENERIC_SECRET", settings.supplier_generic_secret)
        suppliers.append(
            GenericSupplier(
                "generic",
                settings.supplier_generic_url,
                settings.supplier_generic_secret,
                timeout_seconds=settings.supplier_timeout_seconds,
            )
        )
    return SupplierHub(suppliers)
