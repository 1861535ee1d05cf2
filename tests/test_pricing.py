from __future__ import annotations

import pytest

from jobwidget.core.pricing import DEFAULT_PRICES, Pricing, split_sku


@pytest.mark.parametrize(
    ("sku", "base", "count"),
    [
        ("gpu-h100", "gpu-h100", 1),
        ("gpu-2x-l40s", "gpu-l40s", 2),
        ("gpu-l40s-2x", "gpu-l40s", 2),
        ("gpu-h100-4x", "gpu-h100", 4),
        ("gpu-a100-large-8x", "gpu-a100-large", 8),
        ("gpu-8x-a100-large", "gpu-a100-large", 8),
        ("cpu", "cpu", 1),
    ],
)
def test_split_sku(sku, base, count):
    assert split_sku(sku) == (base, count)


def test_prices_multiply_for_multi_gpu_and_unknowns_are_none():
    p = Pricing()
    assert p.price_per_second("gpu-h100-4x") == pytest.approx(4 * DEFAULT_PRICES["gpu-h100"])
    assert p.cost("gpu-2x-l40s", 100) == pytest.approx(200 * DEFAULT_PRICES["gpu-l40s"])
    assert p.cost("gpu-h100", 502.713876) == pytest.approx(0.766638661, rel=1e-6)
    assert p.cost("gpu-mystery", 10) is None and p.cost("gpu-h100", None) is None
    assert p.cost("gpu-h100", -5) == 0.0
    assert p.sku_for("ostris/flux-dev-lora-trainer") == "gpu-h100"
    assert p.sku_for("unknown/trainer") is None
    assert Pricing(default_sku="gpu-t4").sku_for("unknown/trainer") == "gpu-t4"


def test_config_overrides_and_errors():
    p = Pricing.from_config(
        {"prices": {"gpu-h100": 0.002}, "trainers": {"a/b": "gpu-t4"}, "default_sku": "cpu"}
    )
    assert (
        p.price_per_second("gpu-h100") == 0.002 and p.sku_for("a/b") == "gpu-t4" and p.sku_for("x/y") == "cpu"
    )
    for bad in (
        {"prices": {"gpu-h100": "cheap"}},
        {"prices": []},
        {"trainers": {"a/b": 3}},
        {"default_sku": 5},
    ):
        with pytest.raises(ValueError):
            Pricing.from_config(bad)
