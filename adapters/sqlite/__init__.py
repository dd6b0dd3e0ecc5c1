"""The embedded ledger: eventsourcing's SQLite recorder, its read models and file leases."""
