"""The HTTP side of titan (FastAPI): probes and metrics of `titan serve` now, the operator
console's GraphQL API and page next (SPEC §7)."""
