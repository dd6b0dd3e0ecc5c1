"""The console's GraphQL API over a real demo ledger: every query and mutation, the auth matrix,
bad input, the explain trace against `titan explain --json`, cursor pagination, subscriptions."""

from __future__ import annotations

import concurrent.futures
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.console.graphql.schema import sdl
from commands.envelope import command_stream
from infra.bench.console import EXPLAIN_QUERY
from infra.submit import default_policy

from .conftest import ROOT, Titan
from .console_support import ConsoleWorld, console_world

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleWorld]:
    with console_world(tmp_path_factory.mktemp("console")) as built:
        yield built


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[ConsoleWorld]:
    """A world of its own, for tests that need the demo's ending state (breaker DEFENSIVE)."""
    with console_world(tmp_path) as built:
        yield built


def receive(ws: Any, timeout_s: float = 15.0) -> Any:
    """The next WebSocket message, or a failure after `timeout_s` (never a hung test)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(ws.receive_json)
        try:
            return future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            ws.close()
            raise AssertionError(f"no WebSocket message in {timeout_s} s") from None


def head(world: ConsoleWorld) -> int:
    return world.ledger.head()[0]


def test_the_committed_sdl_matches_the_schema() -> None:
    committed = (ROOT / "schemas" / "console.graphql").read_text(encoding="utf-8")
    assert committed == sdl(), "the schema drifted from schemas/console.graphql: run `titan console sdl > schemas/console.graphql`"


def test_every_query_answers_on_the_demo_ledger(world: ConsoleWorld) -> None:
    data = world.data(
        """{
          me { subject roles }
          accounts
          positions { venue symbol quantity avgPrice realizedPnl lastFillTsNs }
          orders(last: 5) { orderId status symbol phaseId createdTsNs createdPosition }
          openOrders: orders(status: "OPEN") { orderId }
          rejected: orders(status: "REJECTED", last: 3) { orderId reason }
          decisions(last: 3) { orderId outcome reason checks { check value limit verdict } }
          truth { venue score equity history(last: 3) { score tsNs } }
          breaker { state mode sinceTsNs activeTriggers { trigger level values } transitions(last: 5) { fromState toState trigger actor reason } }
          budget { day dayPnl equity drawdownBps regime days { date pnl fees fills } }
          venues { venue status meanAckLatencyMs samples }
          dlq { entryId status }
          policy { activeHash active { policyId actor document } history { policyHash positionTsNs: tsNs } }
        }""",
        role="auditor",
    )
    assert data["me"] == {"subject": "auditor-user", "roles": ["auditor"]}
    assert data["accounts"] == ["main"]
    assert {p["symbol"] for p in data["positions"]} == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    assert len(data["orders"]) == 5 and all(o["orderId"].startswith("ord-") for o in data["orders"])
    created = [int(o["createdPosition"]) for o in data["orders"]]
    assert created == sorted(created, reverse=True)
    assert all(o["reason"] for o in data["rejected"])
    assert data["decisions"][0]["checks"], "a decision lists its checks"
    assert data["truth"] and 0 <= data["truth"][0]["score"] <= 100 and data["truth"][0]["history"]
    assert data["breaker"]["state"] in ("NORMAL", "DEFENSIVE", "HALTED")
    assert [t["toState"] for t in data["breaker"]["transitions"]], "the demo moves the breaker"
    assert data["policy"]["activeHash"]
    assert data["policy"]["active"]["policyId"] == "titan-default"
    assert data["budget"]["days"] and data["venues"][0]["venue"] == "paper"
    assert data["dlq"] == []


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


JSON_FIELDS = {"command", "data", "state", "detail", "position_before", "position_after"}
BIG_INTS = {"position", "ts_ns", "issued_ts_ns", "as_of_position"}


def _normalise(value: Any, key: str = "") -> Any:
    if key in JSON_FIELDS:
        return value
    if isinstance(value, dict):
        return {_snake(k): _normalise(v, _snake(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(item, key) for item in value]
    if key in BIG_INTS and isinstance(value, str):
        return int(value)
    return value


def _strip_fill_refs(trace: dict[str, Any]) -> dict[str, Any]:
    """`titan explain` repeats type, command id and actor on each fill; the typed fill keeps its own fields."""
    for fill in (trace.get("lifecycle") or {}).get("fills", []):
        for name in ("type", "command_id", "actor"):
            fill.pop(name, None)
    return trace


def test_explain_decision_equals_titan_explain_json(world: ConsoleWorld, titan: Titan) -> None:
    answer = world.data(EXPLAIN_QUERY, {"id": world.order_to_explain}, role="auditor")["explainDecision"]
    cli = titan.json("explain", world.order_to_explain, "--ledger", f"sqlite:///{world.path}", "--json")
    assert _normalise(answer) == _strip_fill_refs(cli)
    checks = answer["decision"]["checks"]
    assert checks and checks[0]["check"] == "policy_hash" and checks[0]["verdict"] == "pass"


def test_explain_by_command_id_and_unknown_ids(world: ConsoleWorld) -> None:
    command_id = world.order_to_explain.removeprefix("ord-")
    found = world.data("query($c: String!) { explainDecision(commandId: $c) { orderId commandId } }", {"c": command_id}, role="operator")
    assert found["explainDecision"] == {"orderId": world.order_to_explain, "commandId": command_id}
    missing = world.gql('{ explainDecision(orderId: "ord-nope") { orderId } }', role="auditor")
    assert missing.status_code == 404 and missing.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    both = world.gql('{ explainDecision(orderId: "a", commandId: "b") { orderId } }', role="auditor")
    assert both.status_code == 400 and both.json()["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT"
    viewer = world.gql('{ explainDecision(orderId: "ord-x") { orderId } }', role="viewer")
    assert viewer.status_code == 403


PAGE = """query($after: String, $types: [String!], $account: String, $cmd: String, $from: BigInt, $to: BigInt) {
  events(first: 100, after: $after, types: $types, account: $account, commandId: $cmd, fromTsNs: $from, toTsNs: $to) {
    edges { cursor node { position type commandId tsNs streamId } } pageInfo { hasNextPage endCursor } headPosition } }"""


def _all_pages(world: ConsoleWorld, **variables: Any) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    after = None
    for _ in range(10_000):
        page = world.data(PAGE, {**variables, "after": after}, role="auditor")["events"]
        nodes.extend(edge["node"] for edge in page["edges"])
        if not page["pageInfo"]["hasNextPage"]:
            return nodes
        after = page["pageInfo"]["endCursor"]
    raise AssertionError("pagination did not end")


def test_events_pages_visit_every_record_once_in_order(world: ConsoleWorld) -> None:
    nodes = _all_pages(world)
    positions = [int(n["position"]) for n in nodes]
    assert positions == sorted(set(positions)) and positions[-1] == head(world)
    assert len(positions) == len(world.ledger.read_all(0, 1_000_000))


def test_events_filters(world: ConsoleWorld) -> None:
    breaker = _all_pages(world, types=["breaker.transitioned.v1"])
    assert breaker and all(n["type"] == "breaker.transitioned.v1" for n in breaker)
    command_id = world.order_to_explain.removeprefix("ord-")
    own = _all_pages(world, cmd=command_id)
    assert own and all(n["commandId"] == command_id for n in own)
    assert any(n["type"] == "command.recorded.v1" for n in own)
    t0 = int(breaker[0]["tsNs"])
    timed = _all_pages(world, **{"from": str(t0), "to": str(t0)})
    assert timed and all(int(n["tsNs"]) == t0 for n in timed)
    assert _all_pages(world, account="nobody") == []
    injected = _all_pages(world, types=["x' OR '1'='1"], cmd="x' OR '1'='1")
    assert injected == []


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("{ events(after: \"not-a-cursor\") { headPosition } }", "BAD_CURSOR"),
        ("{ events(after: \"cDp4eA\") { headPosition } }", "BAD_CURSOR"),
        ("{ events(first: 0) { headPosition } }", "INVALID_ARGUMENT"),
        ("{ events(first: 5000) { headPosition } }", "INVALID_ARGUMENT"),
        ("{ events(fromTsNs: \"12x\") { headPosition } }", "INVALID_ARGUMENT"),
        ("{ events { nosuchfield } }", "GRAPHQL_VALIDATION_FAILED"),
        ("{ events(first: 1 { headPosition } }", "GRAPHQL_PARSE_FAILED"),
        ("{ orders(last: -1) { orderId } }", "INVALID_ARGUMENT"),
        ("mutation { halt(reason: \"\") { outcome } }", "REASON_REQUIRED"),
        ("mutation { halt { outcome } }", "GRAPHQL_VALIDATION_FAILED"),
        ("mutation { activatePolicy(policy: {policy_id: \"x\"}, reason: \"r\") { outcome } }", "POLICY_INVALID"),
        ("mutation { dlqPurge(entryIds: [], reason: \"r\") { removed } }", "INVALID_ARGUMENT"),
    ],
)
def test_bad_input_is_a_coded_4xx_and_records_nothing(world: ConsoleWorld, query: str, code: str) -> None:
    before = head(world)
    role = "auditor" if query.startswith("{") else "risk" if "activatePolicy" in query else "operator"
    response = world.gql(query, role=role)
    body = response.json()
    assert 400 <= response.status_code < 500, body
    assert body["errors"][0]["extensions"]["code"] == code, body
    assert head(world) == before


def test_a_query_with_no_token_a_bad_token_or_get_is_refused(world: ConsoleWorld) -> None:
    none = world.gql("{ breaker { state } }", role=None)
    assert none.status_code == 401 and none.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    bad = world.gql("{ breaker { state } }", token="not-a-token")
    assert bad.status_code == 401
    over_get = world.client.get("/graphql", params={"query": "{ me { subject } }"}, headers={"Authorization": f"Bearer {world.tokens['viewer']}"})
    assert over_get.status_code in (400, 404, 405) and "viewer-user" not in over_get.text
    assert world.client.get("/health").status_code == 200
    assert world.client.get("/").status_code == 200
    assert world.client.get("/static/../../infra/settings.py").status_code == 404


MUTATIONS = {
    "halt": ('mutation { halt(reason: "matrix") { outcome commandId } }', "operator"),
    "flatten": ('mutation { flatten(reason: "matrix") { outcome commandId } }', "operator"),
    "resume": ('mutation { resume(reason: "matrix") { outcome commandId } }', "operator"),
    "arm": ('mutation { arm(reason: "matrix") { outcome commandId } }', "operator"),
    "disarm": ('mutation { disarm(reason: "matrix") { outcome commandId } }', "operator"),
    "activatePolicy": ("mutation($p: JSON!) { activatePolicy(policy: $p, reason: \"matrix\") { outcome commandId reason } }", "risk"),
    "dlqReplay": ('mutation { dlqReplay(entryIds: ["cmd-1-0000000000000000"], reason: "matrix") { entryId } }', "operator"),
    "dlqPurge": ('mutation { dlqPurge(entryIds: ["cmd-1-0000000000000000"], reason: "matrix") { removed } }', "operator"),
}


def _policy() -> dict[str, Any]:
    document = default_policy().model_dump(mode="json")
    document["policy_id"] = "console-matrix"
    return document


@pytest.mark.parametrize("role", ["viewer", "operator", "risk", "auditor", "none", "bad", "revoked"])
@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_auth_matrix(world: ConsoleWorld, mutation: str, role: str) -> None:
    query, allowed_role = MUTATIONS[mutation]
    variables = {"p": _policy()} if mutation == "activatePolicy" else None
    before = head(world)
    if role == "none":
        response = world.gql(query, variables, role=None)
    elif role == "bad":
        response = world.gql(query, variables, token="x" * 43)
    elif role == "revoked":
        response = world.gql(query, variables, token="revoked-" + "y" * 35)
    else:
        response = world.gql(query, variables, role=role)
    body = response.json()
    if role != allowed_role:
        expected = 401 if role in ("none", "bad", "revoked") else 403
        assert response.status_code == expected, body
        assert body["errors"][0]["extensions"]["code"] == ("UNAUTHENTICATED" if expected == 401 else "FORBIDDEN")
        assert head(world) == before, "a refused call recorded nothing"
        return
    if mutation.startswith("dlq"):  # allowed, but this console has no NATS: the DLQ lives in TITAN_DLQ
        assert response.status_code == 503 and body["errors"][0]["extensions"]["code"] == "NATS_UNAVAILABLE"
        assert head(world) == before
        return
    assert response.status_code == 200, body
    outcome = body["data"][mutation]
    assert outcome["outcome"] in ("accepted", "rejected")
    record = world.ledger.read_stream(command_stream(outcome["commandId"]))[0]
    command = record.envelope["data"]["command"]
    assert command["actor"] == f"{role}-user"
    if mutation != "activatePolicy":
        assert command["reason"] == "matrix"


def test_a_revoked_token_stops_working_at_once(world: ConsoleWorld) -> None:
    token = world.tokens["revocable"]
    assert world.gql("{ me { subject } }", token=token).status_code == 200
    original = world.token_file.read_text(encoding="utf-8")
    try:
        kept = [line for line in original.splitlines() if not line.startswith("temp-user")]
        world.token_file.write_text("\n".join(kept) + "\n", encoding="utf-8")
        time.sleep(1.1)  # the book re-reads a changed file at most once a second
        response = world.gql("{ me { subject } }", token=token)
        assert response.status_code == 401 and response.json()["errors"][0]["message"] == "unknown or revoked token"
    finally:
        world.token_file.write_text(original, encoding="utf-8")
        time.sleep(1.1)  # and re-reads the restored file


def test_halt_is_recorded_with_the_subject_and_the_breaker_shows_it(fresh: ConsoleWorld) -> None:
    world = fresh
    assert world.data("{ breaker { state } }")["breaker"]["state"] == "DEFENSIVE"
    halted = world.data('mutation { halt(reason: "console test: stop") { outcome reason position events { type } commandId } }')["halt"]
    assert halted["outcome"] == "accepted"
    # Before the read models caught up, the breaker names the halt's actor, not the last mover's.
    ahead = world.data("{ breaker { state actor reason trigger } }", role="viewer")["breaker"]
    assert ahead == {"state": "HALTED", "actor": "operator-user", "reason": "console test: stop", "trigger": "operator"}
    world.catch_up()
    breaker = world.data("{ breaker { state actor reason } }", role="viewer")["breaker"]
    assert breaker == {"state": "HALTED", "actor": "operator-user", "reason": "console test: stop"}
    record = world.ledger.read_stream(command_stream(halted["commandId"]))[0]
    assert record.envelope["data"]["command"]["actor"] == "operator-user"
    assert record.envelope["data"]["command"]["reason"] == "console test: stop"
    resumed = world.data('mutation { resume(reason: "console test: go") { outcome reason } }')["resume"]
    assert resumed["outcome"] == "rejected" and resumed["reason"] == "RESUME_BLOCKED"  # the tail-risk trigger still holds


def test_activate_policy_records_the_document_and_shows_in_history(world: ConsoleWorld) -> None:
    document = _policy()
    document["policy_id"] = "console-history"
    done = world.data('mutation($p: JSON!) { activatePolicy(policy: $p, reason: "tighter") { outcome commandId } }', {"p": document}, role="risk")
    assert done["activatePolicy"]["outcome"] == "accepted"
    policy = world.data("{ policy { activeHash active { policyId actor } history { policyId } } }", role="viewer")["policy"]
    assert policy["active"] == {"policyId": "console-history", "actor": "risk-user"}
    assert policy["history"][0]["policyId"] == "console-history"


def test_the_subscription_streams_new_records_and_ends_for_a_revoked_token(fresh: ConsoleWorld) -> None:
    world = fresh
    token = world.tokens["revocable"]
    with world.client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        assert receive(ws)["type"] == "connection_ack"
        ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": "subscription { events(types: [\"breaker.transitioned.v1\"]) { position type actor } }"}})
        world.data('mutation { halt(reason: "live") { outcome } }')
        message = receive(ws)
        assert message["type"] == "next", message
        assert message["payload"]["data"]["events"]["type"] == "breaker.transitioned.v1"
        original = world.token_file.read_text(encoding="utf-8")
        try:
            world.token_file.write_text("\n".join(l for l in original.splitlines() if not l.startswith("temp-user")) + "\n", encoding="utf-8")
            time.sleep(1.1)
            world.data('mutation { resume(reason: "live") { outcome } }')
            ended = receive(ws)
            assert ended["type"] == "next" and ended["payload"]["data"] is None, ended
            assert ended["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        finally:
            world.token_file.write_text(original, encoding="utf-8")


@pytest.mark.parametrize("payload", [{}, {"authorization": "Bearer not-a-token"}])
def test_a_websocket_without_a_good_token_is_closed_at_connection_init(world: ConsoleWorld, payload: dict[str, str]) -> None:
    from starlette.websockets import WebSocketDisconnect

    with world.client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init", "payload": payload})
        with pytest.raises(WebSocketDisconnect) as closed:
            receive(ws)
        assert closed.value.code == 4403


def test_titan_console_token_grants_a_hashed_line(titan: Titan, tmp_path: Path) -> None:
    result = titan("console", "token", "--subject", "carol", "--role", "viewer", "--tokens", str(tmp_path / "t"))
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    stored = (tmp_path / "t").read_text(encoding="utf-8")
    assert token not in stored and stored.startswith("carol viewer sha256:")
    assert oct((tmp_path / "t").stat().st_mode & 0o777) == "0o600"
    bad = titan("console", "token", "--subject", "bad name", "--role", "viewer", "--tokens", str(tmp_path / "t"))
    assert bad.returncode == 2 and "subject" in bad.stderr
    role = titan("console", "token", "--subject", "dave", "--role", "admin", "--tokens", str(tmp_path / "t"))
    assert role.returncode == 2 and "accepted: viewer, operator, risk, auditor" in role.stderr
    json.dumps(stored)


def test_metrics_count_console_requests(world: ConsoleWorld) -> None:
    world.gql("{ me { subject } }", role="viewer")
    text = world.client.get("/metrics").text
    assert 'titan_console_requests_total{path="/graphql",status="200"}' in text
    assert "titan_console_request_seconds_bucket" in text


def test_a_mutation_document_takes_one_action(world: ConsoleWorld) -> None:
    before = head(world)
    response = world.gql('mutation { a: halt(reason: "x") { outcome } b: activatePolicy(policy: {}, reason: "y") { outcome } }')
    assert response.status_code == 400 and response.json()["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT"
    assert head(world) == before


def test_a_document_that_asks_for_too_many_rows_is_refused_before_it_runs(world: ConsoleWorld) -> None:
    many = " ".join(f"a{n}: orders(last: 1000) {{ orderId }}" for n in range(6))
    response = world.gql("{ " + many + " }", role="viewer")
    assert response.status_code == 400 and response.json()["errors"][0]["extensions"]["code"] == "TOO_COSTLY"
    aliases = " ".join(f"a{n}: me {{ subject }}" for n in range(40))
    response = world.gql("{ " + aliases + " }", role="viewer")
    assert response.status_code == 400


def test_an_unknown_account_is_not_found_and_never_acted_on(world: ConsoleWorld) -> None:
    before = head(world)
    response = world.gql('mutation { halt(account: "ghost", reason: "typo") { outcome } }')
    assert response.status_code == 404 and response.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert world.gql('{ breaker(account: "ghost") { state } }', role="viewer").status_code == 404
    assert head(world) == before


def test_an_action_sent_twice_with_its_own_command_id_is_recorded_once(world: ConsoleWorld) -> None:
    query = 'mutation { disarm(reason: "once", commandId: "ops-disarm-0001") { outcome commandId position } }'
    first = world.data(query)["disarm"]
    before = head(world)
    again = world.data(query)["disarm"]
    assert first["commandId"] == again["commandId"] == "ops-disarm-0001"
    assert again["outcome"] == "duplicate" and again["position"] == first["position"]
    assert head(world) == before
    bad = world.gql('mutation { disarm(reason: "x", commandId: "no spaces allowed") { outcome } }')
    assert bad.status_code == 400 and bad.json()["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ('{ events(fromTsNs: "99999999999999999999") { headPosition } }', "INVALID_ARGUMENT"),
        ('{ events(after: "cDo5OTk5OTk5OTk5OTk5OTk5OTk5") { headPosition } }', "BAD_CURSOR"),
    ],
)
def test_numbers_past_64_bits_are_refused(world: ConsoleWorld, query: str, code: str) -> None:
    response = world.gql(query, role="auditor")
    assert response.status_code == 400 and response.json()["errors"][0]["extensions"]["code"] == code


def test_a_policy_too_deep_to_read_is_invalid(world: ConsoleWorld) -> None:
    deep: Any = {}
    for _ in range(300):
        deep = {"x": deep}
    response = world.gql("mutation($p: JSON!) { activatePolicy(policy: $p, reason: \"deep\") { outcome } }", {"p": deep}, role="risk")
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["extensions"]["code"] in ("POLICY_INVALID", "INVALID_ARGUMENT")


def test_no_token_is_refused_before_the_body_is_read(world: ConsoleWorld) -> None:
    response = world.client.post("/graphql", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 401 and response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    huge = world.client.post(
        "/graphql", content=b" " * 2_000_001, headers={"Content-Type": "application/json", "Authorization": f"Bearer {world.tokens['viewer']}"}
    )
    assert huge.status_code == 413
    introspection = world.gql("{ __schema { types { name } } }", role="viewer")
    assert introspection.status_code == 400


def test_titan_console_never_makes_a_ledger(titan: Titan, tmp_path: Path) -> None:
    result = titan("console", "--ledger", f"sqlite:///{tmp_path / 'typo.db'}", "--port", "0")
    assert result.returncode == 2 and "no ledger at" in result.stderr
    assert not (tmp_path / "typo.db").exists()
