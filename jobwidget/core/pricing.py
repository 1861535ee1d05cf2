"""Hardware prices and the trainer -> hardware map: pure data plus the cost rule.

A Replicate training says neither its hardware nor its cost, so cost = predict_time x the price of the
hardware its trainer runs on. Prices drift: these defaults are overridable from configuration
(`pricing: {prices: {...}, trainers: {...}, default_sku: ...}`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

MONEY_DECIMALS = 6  # micro-dollars: finer than any bill, coarse enough to read

__all__ = [
    "DEFAULT_PRICES",
    "DEFAULT_TRAINER_SKUS",
    "MONEY_DECIMALS",
    "Pricing",
]

# $/second, from Replicate's public pricing page (replicate.com/pricing), per hardware SKU.
DEFAULT_PRICES: Mapping[str, float] = {
    "cpu": 0.000100,
    "gpu-t4": 0.000225,
    "gpu-a40-small": 0.000575,
    "gpu-a40-large": 0.000725,
    "gpu-l40s": 0.000975,
    "gpu-a100-large": 0.001400,
    "gpu-h100": 0.001525,
}

# Trainer ("owner/name") -> SKU, as each model's train page states.
DEFAULT_TRAINER_SKUS: Mapping[str, str] = {
    "ostris/flux-dev-lora-trainer": "gpu-h100",
    "replicate/fast-flux-trainer": "gpu-h100",
    "lucataco/flux-dev-lora-trainer": "gpu-h100",
    "stability-ai/sdxl": "gpu-a40-large",
    "zsxkib/hunyuan-video-lora": "gpu-h100",
    "lucataco/ai-toolkit": "gpu-h100",
    "replicate/lora-training": "gpu-a100-large",
    "bghira/simpletuner": "gpu-l40s",
    "kohya/sd-scripts": "gpu-a40-large",
    "huggingface/trainer": "gpu-a100-large",
}

# gpu-2x-l40s, gpu-l40s-2x, gpu-h100-4x, gpu-a100-large-8x ...
_MULTI = re.compile(r"^(?P<pre>.*?)-?(?:(?P<n1>\d+)x-|-(?P<n2>\d+)x$)(?P<post>.*)$")


def split_sku(sku: str) -> tuple[str, int]:
    """`gpu-2x-l40s` -> (`gpu-l40s`, 2); `gpu-h100-4x` -> (`gpu-h100`, 4); plain SKUs count 1."""
    m = _MULTI.match(sku)
    if not m:
        return sku, 1
    count = int(m.group("n1") or m.group("n2"))
    base = f"{m.group('pre')}-{m.group('post')}" if m.group("n1") else m.group("pre") + m.group("post")
    return base, count


@dataclass(frozen=True, slots=True)
class Pricing:
    """The price table and trainer map in force; build with `Pricing.from_config(...)` for overrides."""

    prices: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    trainers: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_TRAINER_SKUS))
    default_sku: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, object] | None) -> Pricing:
        """Defaults overlaid with a `pricing:` config section; bad values raise naming the setting."""
        if not config:
            return cls()
        prices = dict(DEFAULT_PRICES)
        trainers = dict(DEFAULT_TRAINER_SKUS)
        raw_prices = config.get("prices")
        raw_trainers = config.get("trainers")
        raw_prices = {} if raw_prices is None else raw_prices
        raw_trainers = {} if raw_trainers is None else raw_trainers
        if not isinstance(raw_prices, Mapping):
            raise ValueError("pricing.prices must be a mapping of SKU -> dollars per second")
        if not isinstance(raw_trainers, Mapping):
            raise ValueError("pricing.trainers must be a mapping of 'owner/name' -> SKU")
        for sku, price in raw_prices.items():
            if isinstance(price, bool) or not isinstance(price, int | float) or price < 0:
                raise ValueError(f"pricing.prices.{sku} must be a non-negative number ($/s), got {price!r}")
            prices[str(sku)] = float(price)
        for trainer, sku in raw_trainers.items():
            if not isinstance(sku, str) or not sku:
                raise ValueError(f"pricing.trainers.{trainer} must be a hardware SKU string, got {sku!r}")
            trainers[str(trainer)] = sku
        default_sku = config.get("default_sku")
        if default_sku is not None and not isinstance(default_sku, str):
            raise ValueError(f"pricing.default_sku must be a SKU string, got {default_sku!r}")
        return cls(prices=prices, trainers=trainers, default_sku=default_sku)

    def sku_for(self, model: str | None) -> str | None:
        """The SKU a trainer runs on (None: unknown, so no cost rather than a made-up one)."""
        if model:
            sku = self.trainers.get(model) or self.trainers.get(model.split(":", 1)[0])
            if sku:
                return sku
        return self.default_sku

    def price_per_second(self, sku: str | None) -> float | None:
        if not sku:
            return None
        if sku in self.prices:
            return self.prices[sku]
        base, count = split_sku(sku)
        if base in self.prices:
            return self.prices[base] * count
        return None

    def cost(self, sku: str | None, seconds: float | None) -> float | None:
        """seconds x price, to the micro-dollar; None when either is unknown. Negative seconds count as zero.

        Rounded so that 0.0530788267 never shows up as 0.053078826700000005 in JSON or a DataFrame.
        """
        price = self.price_per_second(sku)
        if price is None or seconds is None:
            return None
        return round(max(0.0, float(seconds)) * price, MONEY_DECIMALS)
