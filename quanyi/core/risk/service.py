"""The risk rules' use cases: rules, lists, held decisions and challenges.

Each method is one use case: it takes plain values, opens and commits its own transaction and
returns plain values or frozen dataclasses (docs/architecture.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quanyi.core.wiring import Wiring


class RiskService:
    def __init__(self, wiring: Wiring) -> None:
        self._wiring = wiring
        self._db = wiring.db
