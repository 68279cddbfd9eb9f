"""Distributor chat: the /agent panel, invites, resale prices, bulk purchases and withdrawal requests."""
