"""The read side: projections fold ledger records into read models (docs/projections.md).

`audit.compare_digests` and `audit.model_rows` are what `titan replay verify` and `titan ledger
export` ask of it; the composition root (`infra.read_models.READ_SIDE`) opens the store beside a
ledger and hands them to replay.
"""
