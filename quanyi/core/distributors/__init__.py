"""Distributors: the tree, invites, balances and bulk purchases."""
