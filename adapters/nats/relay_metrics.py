"""The relay's Prometheus metrics (SPEC §4): ledger head, last mirrored position, lag in records
and in seconds, publish errors, retries, readiness. One registry per relay, served on
`titan relay run --metrics-port`."""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class RelayMetrics:
    """Gauges and counters of one relay, and how lag in seconds is measured.

    Lag in seconds is the age of the oldest ledger head the relay has seen and not yet mirrored,
    timed from when the relay first saw it (0 when the mirror holds the head).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.ledger_head = Gauge("titan_relay_ledger_head_position", "Last position in the ledger", registry=r)
        self.ledger_records = Gauge("titan_relay_ledger_records", "Records in the ledger", registry=r)
        self.mirrored = Gauge(
            "titan_relay_mirrored_position", "Last ledger position acknowledged by JetStream", registry=r
        )
        self.stream_seq = Gauge("titan_relay_stream_last_sequence", "Last sequence of the mirror stream", registry=r)
        self.lag_records = Gauge("titan_relay_lag_records", "Ledger records not yet mirrored", registry=r)
        self.lag_seconds = Gauge(
            "titan_relay_lag_seconds", "Age of the oldest ledger head not yet mirrored", registry=r
        )
        self.lag_seconds.set_function(self.lag_now_s)  # computed when scraped, also while stuck
        self.ready = Gauge("titan_relay_ready", "1 while the relay reaches NATS and the ledger", registry=r)
        self.published = Counter("titan_relay_published", "Records acknowledged by JetStream", registry=r)
        self.publish_errors = Counter(
            "titan_relay_publish_errors", "Publishes refused or unanswered", ["kind"], registry=r
        )
        self.retries = Counter("titan_relay_retries", "Times the relay re-read the stream and resumed", registry=r)
        self._heads: deque[tuple[int, float]] = deque()
        self._mirrored_position = 0
        self._mirrored_count = 0
        self._ledger_count = 0

    def serve(self, port: int, address: str = "127.0.0.1") -> None:
        """Serve /metrics on a port (loopback by default)."""
        start_http_server(port, addr=address, registry=self.registry)

    def saw_head(self, position: int, record_count: int) -> None:
        """The ledger's head, as just read."""
        self.ledger_head.set(position)
        self.ledger_records.set(record_count)
        self._ledger_count = record_count
        if position > self._mirrored_position and (not self._heads or self._heads[-1][0] < position):
            self._heads.append((position, time.monotonic()))
        self._refresh()

    def mirrored_up_to(self, position: int, stream_seq: int, mirrored_count: int) -> None:
        """Everything up to `position` is acknowledged; the stream holds `mirrored_count` records."""
        self._mirrored_position = position
        self._mirrored_count = mirrored_count
        self.mirrored.set(position)
        self.stream_seq.set(stream_seq)
        self._refresh()

    def lag_now_s(self) -> float:
        """The current lag in seconds."""
        while self._heads and self._heads[0][0] <= self._mirrored_position:
            self._heads.popleft()
        return time.monotonic() - self._heads[0][1] if self._heads else 0.0

    def _refresh(self) -> None:
        self.lag_records.set(max(self._ledger_count - self._mirrored_count, 0))
