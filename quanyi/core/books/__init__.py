"""Books: ledger, commissions, settlement, reconciliation, withdrawals and reports."""
