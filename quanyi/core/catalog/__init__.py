"""Catalogue: products, bundles, pricing, promotions, coupons and quotes."""
