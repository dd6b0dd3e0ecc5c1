"""The intake's Prometheus metrics (SPEC §4, issue 11): commands by outcome and reason, dead
letters by reason, retries, redeliveries, decision and commit latency, and the consumer's own
counts (pending, ack pending, redelivered) as JetStream reports them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from commands.handlers import Outcome

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class IntakeMetrics:
    """One intake's metrics, on the serve process's registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.commands = Counter(
            "titan_intake_commands", "Commands decided, by outcome and reason", ["outcome", "reason"], registry=r
        )
        self.dead_letters = Counter(
            "titan_intake_dead_letters", "Messages refused at the boundary and dead-lettered", ["reason"], registry=r
        )
        self.retried = Counter(
            "titan_intake_retried", "Messages nak'ed for redelivery (ledger or lease unavailable)", ["error"], registry=r
        )
        self.redeliveries = Counter(
            "titan_intake_redeliveries", "Messages received again (delivery count above 1)", registry=r
        )
        self.decision_latency = Histogram(
            "titan_intake_decision_seconds",
            "From fetching a command to its committed outcome",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.commit_latency = Histogram(
            "titan_writer_commit_seconds", "One group commit (append of a batch)", buckets=LATENCY_BUCKETS_S, registry=r
        )
        self.batch_size = Histogram(
            "titan_writer_batch_commands",
            "Commands per group commit",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=r,
        )
        self.num_pending = Gauge("titan_intake_consumer_pending", "Commands in TITAN_CMD not yet delivered (num_pending)", registry=r)
        self.num_ack_pending = Gauge("titan_intake_consumer_ack_pending", "Commands delivered and not yet acked", registry=r)
        self.num_redelivered = Gauge("titan_intake_consumer_redelivered", "Commands JetStream redelivered (num_redelivered)", registry=r)

    def decided(self, outcome: Outcome, seconds: float) -> None:
        """A command decided and committed (or answered as a duplicate)."""
        self.commands.labels(outcome.outcome, outcome.reason or "").inc()
        self.decision_latency.observe(seconds)

    def committed(self, commands: int, seconds: float) -> None:
        """A group commit of `commands` commands took `seconds` (the writer's on_commit)."""
        self.commit_latency.observe(seconds)
        self.batch_size.observe(commands)
