"""`infra.bench.console` at a tiny size: the report's shape (never its speed), the cached ledger
reused by a second run, and the seeded choice of orders spread over the ledger."""

from __future__ import annotations

from pathlib import Path

from infra.bench.console import demo_orders, format_results, run, spread_choice, summary


def test_a_tiny_run_reports_every_figure_and_a_second_one_reuses_the_ledger(tmp_path: Path) -> None:
    first = run(records=300, cache=str(tmp_path), calls=(3, 4))
    assert first["records_wanted"] == 300 and first["demo_orders"] == demo_orders(300)
    assert first["ledger_records"] >= 300 and first["orders"] > 0
    assert first["reused"] is False and isinstance(first["build_s"], float)
    explain = first["explain"]
    assert explain["calls"] == 3
    assert {"p50_ms", "p99_ms", "max_ms", "cold_ms", "early_p50_ms", "middle_p50_ms", "late_p50_ms"} <= set(explain)
    for name in ("events", "events_filtered"):
        page = first[name]
        assert page["calls"] == 4 and page["first"] == 100
        assert page["p50_ms"] <= page["p99_ms"] <= page["max_ms"]
    assert first["events_filtered"]["types"] == ["order.filled.v1"]
    assert len(format_results(first)) == 4

    second = run(records=300, cache=str(tmp_path), calls=(3, 4))
    assert second["reused"] is True and second["build_s"] is None
    assert second["ledger"] == first["ledger"] and second["ledger_records"] == first["ledger_records"]


def test_the_orders_are_drawn_alike_from_each_third() -> None:
    items = [f"ord-{n:03d}" for n in range(90)]
    chosen = spread_choice(items, 9, seed=1)
    assert chosen == spread_choice(items, 9, seed=1)
    assert [third for third, _ in chosen] == ["early", "middle", "late"] * 3
    for third, item in chosen:
        index = items.index(item)
        assert {"early": 0, "middle": 1, "late": 2}[third] == index // 30


def test_the_summary_takes_nearest_ranks() -> None:
    figures = summary([0.001 * n for n in range(1, 101)])
    assert figures == {"calls": 100, "p50_ms": 51.0, "p99_ms": 100.0, "max_ms": 100.0}
    assert summary([]) == {"calls": 0}
