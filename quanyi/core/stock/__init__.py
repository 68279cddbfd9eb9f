"""Stock: items and their pool, channel allocations, imports and alerts."""
