"""Sales: orders, risk rules, fulfilment, refunds, recharges and redemption."""
