"""The console's GraphQL schema, in modules per area, merged in `schema.py`."""
