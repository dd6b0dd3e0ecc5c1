"""The execution gateway's Prometheus metrics (SPEC §4): how far it has read the ledger, the last
position TITAN_EXEC holds, lag, messages sent by kind, publish errors, retries, readiness. One
registry per gateway; `serve` exposes it on its own port, or pass the process's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class GatewayMetrics:
    """Gauges and counters of one gateway."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.ledger_head = Gauge("titan_gateway_ledger_head_position", "Last position in the ledger", registry=r)
        self.scanned = Gauge(
            "titan_gateway_scanned_position", "Last ledger position the gateway has read and sent for", registry=r
        )
        self.sent_position = Gauge(
            "titan_gateway_sent_position", "Ledger position of the last message TITAN_EXEC holds", registry=r
        )
        self.stream_seq = Gauge("titan_gateway_stream_last_sequence", "Last sequence of TITAN_EXEC", registry=r)
        self.lag_positions = Gauge(
            "titan_gateway_lag_positions", "Ledger head minus the last position read and sent for", registry=r
        )
        self.ready = Gauge("titan_gateway_ready", "1 while the gateway reaches NATS and the ledger", registry=r)
        self.sent = Counter("titan_gateway_sent", "Messages acknowledged by JetStream", ["kind"], registry=r)
        self.publish_errors = Counter(
            "titan_gateway_publish_errors", "Publishes refused or unanswered", ["kind"], registry=r
        )
        self.retries = Counter(
            "titan_gateway_retries", "Times the gateway re-read TITAN_EXEC's tail and resumed", registry=r
        )
        self._head = 0
        self._scanned = 0

    def serve(self, port: int, address: str = "127.0.0.1") -> None:
        """Serve /metrics on a port (loopback by default)."""
        start_http_server(port, addr=address, registry=self.registry)

    def saw_head(self, position: int) -> None:
        """The ledger's head, as just read."""
        self._head = position
        self.ledger_head.set(position)
        self._refresh()

    def scanned_up_to(self, position: int) -> None:
        """Everything up to `position` is read and every message for it acknowledged."""
        self._scanned = position
        self.scanned.set(position)
        self._refresh()

    def stream_at(self, position: int, stream_seq: int) -> None:
        """TITAN_EXEC's last message is for `position`, at `stream_seq`."""
        self.sent_position.set(position)
        self.stream_seq.set(stream_seq)

    def _refresh(self) -> None:
        self.lag_positions.set(max(self._head - self._scanned, 0))
