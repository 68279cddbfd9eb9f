"""Sales: orders, fulfilment, refunds, recharges and redemption."""
