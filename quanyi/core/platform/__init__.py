"""Platform: database, outbox, audit trail, keys, leases, rate limits, configuration, logs, the scheduler."""
