"""The metric registry: gathered from field metadata, and everything that lists metrics derives from it."""

from dataclasses import dataclass, field, fields

import pytest

from archsearch import Cost
from archsearch._metric import Requirement, metric, metric_fields
from archsearch.metrics import CONSTRAINTS, METRICS, OBJECTIVES, cost_values, format_metric
from archsearch.proxy import TASKS, Metrics, ProxySettings
from archsearch.proxy.suite import Suite
from archsearch.study import TABLE_COLUMNS


def test_a_field_with_metric_metadata_is_a_metric_and_one_without_is_not():
    @dataclass
    class Measured:
        speed: float | None = field(default=None, metadata=metric("maximize", "tokens/s", "how fast", label="speed!"))
        note: str = ""

    (m,) = metric_fields(Measured, "proxy")
    assert (m.name, m.direction, m.unit, m.source, m.label) == ("speed", "maximize", "tokens/s", "proxy", "speed!")
    assert m.format(12345.6) == "12,346"


def test_the_registry_is_the_cost_fields_then_the_proxy_metrics_in_field_order_then_the_suites():
    cost = [f.name for f in fields(Cost) if f.name != "context"]
    proxy = [f.name for f in fields(Metrics) if f.metadata]
    suite = [f"{task}_accuracy" for task in TASKS] + ["suite_score"]  # one per registered task, not a hand-written list
    assert list(METRICS) == cost + proxy + suite
    assert all(METRICS[name].source == "suite" and name in OBJECTIVES for name in suite)
    assert tuple(cost) == CONSTRAINTS
    assert TABLE_COLUMNS[7:-1] == list(METRICS)  # trial, status, baseline, reason, summary, digest, arch; metrics; seed
    assert "tokens_trained" in METRICS and "tokens_trained" not in OBJECTIVES


def test_requirements_say_which_proxy_settings_measure_a_metric():
    assert METRICS["bits_per_byte"].problem(ProxySettings()) is None
    assert "proxy.task: lm" in METRICS["bits_per_byte"].problem(ProxySettings(task="mqar"))
    assert "inference: true" in METRICS["decode_tokens_per_s"].problem(ProxySettings())
    assert METRICS["decode_tokens_per_s"].problem(ProxySettings(inference=True)) is None
    assert "CUDA" in METRICS["peak_memory_bytes"].problem(ProxySettings(device="cpu"))
    assert Requirement(lambda s: False, "x").needs == "x"
    # a suite metric asks the suite: none, or one without the task, cannot measure it
    assert "the synthetic suite" in METRICS["suite_score"].problem(None)
    assert "mqar among the suite's tasks" in METRICS["mqar_accuracy"].problem(Suite.of(["compression"]))
    assert METRICS["mqar_accuracy"].problem(Suite.of(["mqar"])) is None and METRICS["suite_score"].problem(Suite.of("mad")) is None


@pytest.mark.parametrize(("name", "value", "shown"), [
    ("params", 21_300_000, "21.3M"), ("state_bytes", 3 * 2**20, "3.0MiB"), ("flops_per_token", 1.5e9, "1.5G"),
    ("train_tokens_per_s", 12345.4, "12,345"), ("bits_per_byte", 1.23456, "1.235"), ("val_loss", float("nan"), "nan"),
])
def test_formatting_follows_the_unit(name, value, shown):
    assert format_metric(name, value) == shown


def test_cost_values_are_the_cost_metrics_of_a_cost():
    cost = Cost(params=10, active_params=5, flops_per_token=2.0, state_bytes=8, context=16)
    assert cost_values(cost) == {"params": 10, "active_params": 5, "flops_per_token": 2.0, "state_bytes": 8}
