"""The stream spec's own rules and the drift check's units, without a server."""

from __future__ import annotations

import pytest

from adapters.nats.connection import display_url
from adapters.nats.spec_fields import Drift, normalise, show
from adapters.nats.streams import ConsumerSpec, declared
from infra.settings import Settings


def test_durations_compare_in_whole_nanoseconds_whatever_float_noise_nats_py_returns() -> None:
    assert normalise("max_age", 0.1 + 0.2) == normalise("max_age", 0.3) == 300_000_000
    assert normalise("duplicate_window", None) == 0
    assert normalise("backoff", [10.0, 30]) == (10_000_000_000, 30_000_000_000)
    assert show("ack_wait", normalise("ack_wait", 1.5)) == "1.5s"


def test_unset_and_whole_stream_filters_are_the_same_and_subject_order_does_not_matter() -> None:
    assert normalise("filter_subject", None) == normalise("filter_subject", ">") == normalise("filter_subject", "")
    assert normalise("subjects", ["b.>", "a.>"]) == normalise("subjects", ["a.>", "b.>"])


def test_a_drift_reads_as_stream_field_declared_live() -> None:
    assert str(Drift("TITAN_CMD", "titan-intake", "max_deliver", 5, 9)) == (
        "TITAN_CMD/titan-intake.max_deliver: declared 5, live 9"
    )
    assert str(Drift("TITAN_EVT", None, "max_age", 0, 3_600_000_000_000)) == (
        "TITAN_EVT.max_age: declared 0s, live 3600s"
    )


def test_a_consumer_spec_refuses_what_jetstream_would_rewrite_or_refuse() -> None:
    with pytest.raises(ValueError, match="ack_wait to backoff"):
        ConsumerSpec("S", "c", ack_wait_s=30, max_deliver=5, backoff_s=(10, 30), max_ack_pending=1, why="")
    with pytest.raises(ValueError, match="more entries than max_deliver"):
        ConsumerSpec("S", "c", ack_wait_s=1, max_deliver=2, backoff_s=(1, 2, 3), max_ack_pending=1, why="")


def test_every_stream_takes_its_duplicate_window_from_the_settings() -> None:
    spec = declared(Settings(nats_duplicate_window_s=2))
    assert {stream.duplicate_window_s for stream in spec.streams} == {2}
    evt = next(stream for stream in spec.streams if stream.name == "TITAN_EVT")
    assert evt.max_age_s == 0 and evt.max_msgs == -1 and evt.max_bytes == -1  # the mirror is kept whole


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://u:pw@127.0.0.1:4222", "nats://u:***@127.0.0.1:4222"),
        ("nats://s3cret-token@127.0.0.1:4222", "nats://***@127.0.0.1:4222"),
        ("nats://127.0.0.1:4222,nats://a:b@127.0.0.1:4223", "nats://127.0.0.1:4222,nats://a:***@127.0.0.1:4223"),
    ],
)
def test_a_nats_url_is_shown_without_its_password_or_token(url: str, shown: str) -> None:
    assert display_url(url) == shown
