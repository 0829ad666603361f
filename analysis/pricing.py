"""Prices: the shipped table (analysis/data/prices.yaml), the AWS Pricing API, spec overrides.

Precedence for an instance-priced variant: ``variants[].pricePerHour`` (used as given, no
discount) > the AWS Pricing API (``analysis.pricing.source: aws-pricing-api``, EC2 only; falls back
to the table with a note when unreachable) > the shipped table. Spot and savings-plan take a
discount off the on-demand price: ``analysis.pricing.discount`` or the table's default per type.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fmbench_k8s.api.spec import Pricing, Variant

AWS_PRICING_SOURCE = "aws-pricing-api"
SPEC_SOURCE = "spec.pricePerHour"
# Cross-region inference profiles prefix the model id with a geography.
_PROFILE_PREFIXES = ("us.", "eu.", "apac.", "us-gov.", "global.")


class PriceNotFoundError(LookupError):
    """No price for an instance type, model or region; the message says how to supply one."""


# ---- the table file ------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)


# A price is finite and positive: a zero, negative or NaN price would win every recommendation.
UsdPerHour = Annotated[float, Field(gt=0, le=10_000)]


class _Region(_Strict):
    factor: float = Field(gt=0)
    derived: bool
    note: str | None = None


class _Capacity(_Strict):
    discount: float = Field(ge=0, lt=1)
    note: str | None = None


class _Source(_Strict):
    description: str
    url: str | None = None


class _InstanceBlock(_Strict):
    service: Literal["ec2", "sagemaker"]
    source: str
    as_of: str = Field(alias="asOf")
    usd_per_hour: dict[str, UsdPerHour] = Field(alias="usdPerHour")


class _TokenRate(_Strict):
    input: float = Field(ge=0)
    output: float = Field(ge=0)


class _TokenBlock(_Strict):
    service: Literal["bedrock"]
    source: str
    as_of: str = Field(alias="asOf")
    usd_per_1k_tokens: dict[str, _TokenRate] = Field(alias="usdPer1kTokens")


class PriceTable(_Strict):
    """The parsed price table; see docs/cost-model.md for the format."""

    schema_version: Literal[1] = Field(alias="schemaVersion")
    currency: Literal["USD"]
    base_region: str = Field(alias="baseRegion")
    regions: dict[str, _Region]
    capacity_types: dict[str, _Capacity] = Field(alias="capacityTypes")
    sources: dict[str, _Source]
    instances: list[_InstanceBlock]
    tokens: list[_TokenBlock]

    def _region(self, region: str, what: str) -> _Region:
        if region not in self.regions:
            raise PriceNotFoundError(
                f"no {what} prices for region {region!r} in the price table "
                f"(known: {', '.join(sorted(self.regions))}); "
                "set variants[].pricePerHour or analysis.pricing.source: aws-pricing-api"
            )
        return self.regions[region]

    def instance(self, instance_type: str, region: str) -> InstancePrice:
        """On-demand USD/hour of ``instance_type`` in ``region``; PriceNotFoundError if unknown."""
        reg = self._region(region, "instance")
        for block in self.instances:
            if instance_type in block.usd_per_hour:
                return InstancePrice(
                    instance_type=instance_type,
                    usd_per_hour=block.usd_per_hour[instance_type] * reg.factor,
                    on_demand_usd_per_hour=block.usd_per_hour[instance_type] * reg.factor,
                    capacity_type="on-demand",
                    discount=0.0,
                    source=f"builtin:{block.source}",
                    as_of=block.as_of,
                    region=region,
                    derived=reg.derived and region != self.base_region,
                )
        raise PriceNotFoundError(
            f"no price for instance type {instance_type!r} in the price table; "
            "set variants[].pricePerHour (USD per instance-hour) for this variant"
        )

    def tokens_for(self, model_id: str, region: str) -> TokenPrice:
        """Bedrock per-1k-token prices of ``model_id``; profile prefixes (us., eu., ...) fall back."""
        reg = self._region(region, "token")
        candidates = [model_id] + [model_id[len(p) :] for p in _PROFILE_PREFIXES if model_id.startswith(p)]
        for block in self.tokens:
            for candidate in candidates:
                rate = block.usd_per_1k_tokens.get(candidate)
                if rate is not None:
                    return TokenPrice(
                        model_id=model_id,
                        input_per_1k=rate.input * reg.factor,
                        output_per_1k=rate.output * reg.factor,
                        source=f"builtin:{block.source}",
                        as_of=block.as_of,
                        region=region,
                        derived=reg.derived and region != self.base_region,
                    )
        raise PriceNotFoundError(f"no per-token price for Bedrock model {model_id!r} in the price table")

    def default_discount(self, capacity_type: str) -> float:
        capacity = self.capacity_types.get(capacity_type)
        return capacity.discount if capacity else 0.0


def parse_price_table(doc: Mapping[str, Any]) -> PriceTable:
    table = PriceTable.model_validate(doc)
    used = {b.source for b in table.instances} | {b.source for b in table.tokens}
    unknown = used - set(table.sources)
    if unknown:
        raise ValueError(f"price table blocks name undeclared sources: {sorted(unknown)}")
    if table.base_region not in table.regions:
        raise ValueError(f"price table baseRegion {table.base_region!r} is not under regions")
    return table


def load_price_table(path: Path) -> PriceTable:
    """A user's price table (the shipped table's format, e.g. with negotiated rates).

    Raises ValueError with one ``path: field: problem`` line per problem."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read a YAML price table: {err}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a price table is a mapping (see docs/cost-model.md), not {type(doc).__name__}")
    try:
        return parse_price_table(doc)
    except ValidationError as err:
        lines = [f"{path}: {'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in err.errors()]
        raise ValueError("\n".join(lines)) from None
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


@cache
def builtin_table() -> PriceTable:
    """The shipped table, parsed once per process."""
    text = resources.files("fmbench_k8s.analysis").joinpath("data/prices.yaml").read_text()
    return parse_price_table(yaml.safe_load(text))


# ---- price results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class InstancePrice:
    instance_type: str
    usd_per_hour: float  # what sizing uses: after the capacity-type discount
    on_demand_usd_per_hour: float | None  # None when the spec gave the price
    capacity_type: str
    discount: float
    source: str  # builtin:<source> | aws-pricing-api | spec.pricePerHour
    as_of: str | None
    region: str
    derived: bool  # scaled from the base region by a rough factor
    notes: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class TokenPrice:
    model_id: str
    input_per_1k: float
    output_per_1k: float
    source: str
    as_of: str | None
    region: str
    derived: bool

    def per_request(self, prompt_tokens: float, output_tokens: float) -> float:
        return (prompt_tokens * self.input_per_1k + output_tokens * self.output_per_1k) / 1000


@dataclass(frozen=True)
class VariantPrice:
    """How one variant is priced: per instance-hour, per token, or unknown (with the reason)."""

    kind: Literal["instance", "token", "unknown"]
    instance: InstancePrice | None = None
    tokens: TokenPrice | None = None
    reason: str | None = None


# ---- the AWS Pricing API ---------------------------------------------------------------------


def ec2_price_filters(instance_type: str, region: str) -> list[dict[str, str]]:
    """get_products filters selecting the on-demand Linux, shared-tenancy, no-software product."""
    wanted = {
        "instanceType": instance_type,
        "regionCode": region,
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
    }
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in wanted.items()]


def parse_on_demand_usd(price_list: list[str]) -> tuple[float, str | None]:
    """(USD per hour, publication date) from get_products' PriceList JSON strings.

    Several products can match the filters (license models, capacity blocks); the plain one
    (licenseModel "No License required", marketoption not CapacityBlock) is preferred.
    """
    found: list[tuple[int, float, str | None]] = []
    for raw in price_list:
        item = json.loads(raw)
        attrs = item.get("product", {}).get("attributes", {})
        rank = (attrs.get("licenseModel", "No License required") != "No License required") + (
            attrs.get("marketoption", "OnDemand") != "OnDemand"
        )
        published = item.get("publicationDate")
        for term in item.get("terms", {}).get("OnDemand", {}).values():
            for dim in term.get("priceDimensions", {}).values():
                usd = float(dim.get("pricePerUnit", {}).get("USD", "nan"))
                if dim.get("unit") == "Hrs" and math.isfinite(usd) and usd > 0:
                    found.append((int(rank), usd, published[:10] if isinstance(published, str) else None))
    if not found:
        raise PriceNotFoundError("the AWS Pricing API returned no on-demand hourly price")
    found.sort(key=lambda f: (f[0], f[1]))
    return found[0][1], found[0][2]


def aws_ec2_price(client: Any, instance_type: str, region: str) -> InstancePrice:
    """Live on-demand price via ``pricing.get_products`` (ServiceCode AmazonEC2)."""
    price_list: list[str] = []
    kwargs: dict[str, Any] = {
        "ServiceCode": "AmazonEC2",
        "Filters": ec2_price_filters(instance_type, region),
        "FormatVersion": "aws_v1",
        "MaxResults": 100,
    }
    for _ in range(10):  # a handful of products match; pages are a formality
        page = client.get_products(**kwargs)
        price_list.extend(page.get("PriceList", []))
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    if not price_list:
        raise PriceNotFoundError(
            f"the AWS Pricing API has no EC2 product {instance_type!r} in {region}; "
            "set variants[].pricePerHour for this variant"
        )
    usd, published = parse_on_demand_usd(price_list)
    return InstancePrice(instance_type, usd, usd, "on-demand", 0.0, AWS_PRICING_SOURCE, published, region, False)


def aws_pricing_client() -> Any:
    import boto3

    # The Pricing API is served from a few regions only; us-east-1 answers for every region.
    return boto3.client("pricing", region_name="us-east-1")


# ---- resolving a variant ---------------------------------------------------------------------


@dataclass
class PriceResolver:
    """Resolves variant prices for one analysis; caches live lookups."""

    pricing: Pricing
    table: PriceTable = field(default_factory=builtin_table)
    client: Any = None  # a boto3 pricing client; made on first use
    _cache: dict[str, InstancePrice] = field(default_factory=dict)

    def on_demand(self, instance_type: str) -> InstancePrice:
        region = self.pricing.region
        if instance_type in self._cache:
            return self._cache[instance_type]
        price: InstancePrice | None = None
        note = None
        if self.pricing.source == AWS_PRICING_SOURCE and not instance_type.startswith("ml."):
            try:
                self.client = self.client or aws_pricing_client()
                price = aws_ec2_price(self.client, instance_type, region)
            except Exception as err:  # unreachable, no credentials, throttled: the table still answers
                note = f"aws-pricing-api failed ({type(err).__name__}: {err}); builtin table used"
        elif self.pricing.source == AWS_PRICING_SOURCE:
            note = "aws-pricing-api is queried for EC2 only; SageMaker price from the builtin table"
        if price is None:
            price = self.table.instance(instance_type, region)
            if note:
                price = _with_note(price, note)
        self._cache[instance_type] = price
        return price

    def instance(self, instance_type: str, price_per_hour: float | None = None) -> InstancePrice:
        """The price sizing uses for one instance of ``instance_type``."""
        capacity = self.pricing.capacity_type
        if price_per_hour is not None:
            return InstancePrice(
                instance_type, price_per_hour, None, capacity, 0.0, SPEC_SOURCE, None, self.pricing.region, False,
                ("the spec's pricePerHour is used as given (no capacity-type discount)",),
            )  # fmt: skip
        base = self.on_demand(instance_type)
        if capacity == "on-demand":
            return base
        if capacity == "spot" and instance_type.startswith("ml."):
            return _with_note(base, "SageMaker real-time inference has no spot capacity; on-demand price used")
        discount = self.pricing.discount if self.pricing.discount is not None else self.table.default_discount(capacity)
        assert base.on_demand_usd_per_hour is not None
        return InstancePrice(
            instance_type, base.on_demand_usd_per_hour * (1 - discount), base.on_demand_usd_per_hour, capacity,
            discount, base.source, base.as_of, base.region, base.derived, base.notes,
        )  # fmt: skip

    def variant(self, variant: Variant) -> VariantPrice:
        """Instance-priced (engine, or endpoint with instanceType/pricePerHour), token-priced
        (Bedrock), or unknown. Raises PriceNotFoundError for an instance type without a price."""
        if variant.price_per_hour is not None or variant.instance_type is not None:
            instance_type = variant.instance_type or "(endpoint)"
            return VariantPrice("instance", instance=self.instance(instance_type, variant.price_per_hour))
        endpoint = variant.endpoint
        if endpoint is not None and endpoint.api == "bedrock" and endpoint.model_id is not None:
            region = endpoint.region or self.pricing.region
            try:
                return VariantPrice("token", tokens=self.table.tokens_for(endpoint.model_id, region))
            except PriceNotFoundError as err:
                return VariantPrice("unknown", reason=f"cost unknown: {err}")
        api = endpoint.api if endpoint is not None else "?"
        return VariantPrice(
            "unknown",
            reason=f"cost unknown: {api} endpoint without instanceType or pricePerHour (latency still reported)",
        )


def _with_note(price: InstancePrice, note: str) -> InstancePrice:
    return InstancePrice(
        price.instance_type, price.usd_per_hour, price.on_demand_usd_per_hour, price.capacity_type, price.discount,
        price.source, price.as_of, price.region, price.derived, (*price.notes, note),
    )  # fmt: skip


def check_prices(variants: list[Variant], pricing: Pricing, table: PriceTable | None = None) -> list[str]:
    """Problems that would leave a variant unpriced, one line each (empty: all priced).

    Uses the table only (no network): ``validate`` and ``run`` say them before a run starts, as
    warnings (a variant without a price still gets its latency measured, but no cost answer).
    """
    resolver = PriceResolver(Pricing(region=pricing.region), table or builtin_table())
    live = pricing.source == AWS_PRICING_SOURCE
    problems = []
    for i, v in enumerate(variants):
        try:
            price = resolver.variant(v)
        except PriceNotFoundError as err:
            # with live prices an EC2 type missing from the table may still be found at run time
            if not (live and v.instance_type is not None and not v.instance_type.startswith("ml.")):
                problems.append(f"spec.variants[{i}] ({v.name}): {err}")
            continue
        if price.kind == "unknown":
            problems.append(f"spec.variants[{i}] ({v.name}): {price.reason}")
    return problems
