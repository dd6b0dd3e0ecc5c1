"""titan on NATS JetStream: streams as code, the ledger mirror (and, later, intake and the gateway)."""
