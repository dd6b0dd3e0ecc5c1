"""The PostgreSQL ledger through asyncpg: ledger, leases, read models, migrations and SQL."""
