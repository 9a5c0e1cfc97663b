"""A bootstrap list is parsed once and reaches every client as a list of hosts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.kafka.connection import client_options
from pipeline.settings import KafkaSettings, bootstrap_hosts


def test_a_comma_separated_list_becomes_one_host_per_entry() -> None:
    servers = " b1.example:9092, b2.example:9093 ,,b3.example:9094 "
    assert bootstrap_hosts(servers) == ["b1.example:9092", "b2.example:9093", "b3.example:9094"]


def test_a_host_without_a_port_gets_kafkas_default() -> None:
    assert bootstrap_hosts("kafka,[::1]:19092") == ["kafka:9092", "[::1]:19092"]


@pytest.mark.parametrize("servers", ["", " , ", "h1:port", "h1:0", "h1:70000", ":9092"])
def test_settings_refuse_a_list_that_names_no_usable_host(servers: str) -> None:
    with pytest.raises(ValidationError):
        KafkaSettings(bootstrap_servers=servers)


def test_every_aiokafka_client_is_handed_the_list_not_the_string() -> None:
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:49092,127.0.0.1:49102,127.0.0.1:49112")
    assert client_options(settings)["bootstrap_servers"] == [
        "127.0.0.1:49092",
        "127.0.0.1:49102",
        "127.0.0.1:49112",
    ]
