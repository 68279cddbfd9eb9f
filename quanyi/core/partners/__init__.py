"""Partners: API accounts, signing, partner orders and partner webhooks."""
