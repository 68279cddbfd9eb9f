"""Operator chat (QUANYI_ADMIN_IDS, and staff for verification): orders and refunds, stock and
channels, pricing, risk, partners, reconciliation, reports, the audit trail, withdrawals, and the
outbox messages addressed to operators."""
