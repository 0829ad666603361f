"""Prices: the shipped table, spec overrides, capacity discounts and the AWS Pricing API."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from fmbench_k8s.analysis.pricing import (
    PriceNotFoundError,
    PriceResolver,
    aws_ec2_price,
    builtin_table,
    check_prices,
    ec2_price_filters,
)
from fmbench_k8s.api.spec import Pricing, Variant

SEED = "builtin:fmbench-2025-04-11"
SIZES = ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge")


def pricing(**kw: Any) -> Pricing:
    return Pricing.model_validate(kw)


def engine(instance_type: str, **kw: Any) -> Variant:
    return Variant.model_validate({"name": "v", "engine": "vllm", "instanceType": instance_type, **kw})


def test_every_table_price_has_a_declared_source_and_date() -> None:
    table = builtin_table()
    dated = [(b.source, b.as_of) for b in table.instances] + [(b.source, b.as_of) for b in table.tokens]
    for source, as_of in dated:
        assert source in table.sources
        assert len(as_of) == 10 and as_of.startswith("20")
    assert set(table.regions) >= {"us-east-1", "us-west-2", "eu-west-1"}
    assert table.default_discount("spot") == 0.6 and table.default_discount("savings-plan") == 0.3


@pytest.mark.parametrize(
    "family",
    [
        *(f"{f}.{s}" for f in ("g5", "g6", "g6e") for s in SIZES),
        "p4d.24xlarge", "p5.48xlarge", "inf2.xlarge", "inf2.8xlarge", "inf2.24xlarge", "inf2.48xlarge",
        "trn1.2xlarge", "trn1.32xlarge",
        *(f"{f}.{s}" for f in ("m5", "m6i", "c5", "c7i") for s in ("xlarge", "2xlarge", "4xlarge")),
        "ml.g5.2xlarge", "ml.inf2.xlarge", "ml.p4d.24xlarge",
    ],
)  # fmt: skip
def test_the_table_covers_the_instance_types_we_size(family: str) -> None:
    for region in ("us-east-1", "us-west-2", "eu-west-1"):
        assert builtin_table().instance(family, region).usd_per_hour > 0


def test_table_lookup_records_source_and_date() -> None:
    p = builtin_table().instance("g5.2xlarge", "us-east-1")
    assert (p.usd_per_hour, p.source, p.as_of, p.derived) == (1.212, SEED, "2025-04-11", False)


def test_other_regions_are_derived_with_the_documented_factor() -> None:
    p = builtin_table().instance("g5.2xlarge", "eu-west-1")
    assert p.usd_per_hour == pytest.approx(1.212 * 1.12)
    assert p.derived


def test_unknown_instance_type_names_it_and_says_to_set_price_per_hour() -> None:
    with pytest.raises(PriceNotFoundError, match=r"'x9.huge'.*pricePerHour"):
        PriceResolver(pricing()).variant(engine("x9.huge"))


def test_unknown_region_says_what_is_known() -> None:
    with pytest.raises(PriceNotFoundError, match=r"ap-south-9.*known: eu-west-1, us-east-1, us-west-2"):
        PriceResolver(pricing(region="ap-south-9")).instance("g5.xlarge")


def test_price_per_hour_override_wins_and_is_not_discounted() -> None:
    p = PriceResolver(pricing(capacityType="spot")).variant(engine("x9.huge", pricePerHour=1.5))
    assert p.kind == "instance" and p.instance is not None
    assert (p.instance.usd_per_hour, p.instance.source, p.instance.discount) == (1.5, "spec.pricePerHour", 0.0)


@pytest.mark.parametrize(
    ("capacity", "discount", "expected"),
    [
        ("on-demand", None, 1.212),
        ("spot", None, 1.212 * 0.4),
        ("spot", 0.5, 0.606),
        ("savings-plan", None, 1.212 * 0.7),
    ],
)
def test_capacity_type_discounts(capacity: str, discount: float | None, expected: float) -> None:
    p = PriceResolver(pricing(capacityType=capacity, discount=discount)).instance("g5.2xlarge")
    assert p.usd_per_hour == pytest.approx(expected)
    assert p.on_demand_usd_per_hour == 1.212
    assert p.capacity_type == capacity


def test_sagemaker_has_no_spot_so_on_demand_is_used() -> None:
    p = PriceResolver(pricing(capacityType="spot")).instance("ml.g5.2xlarge")
    assert p.usd_per_hour == 1.515 and "no spot" in p.notes[0]


def test_endpoint_variants() -> None:
    r = PriceResolver(pricing())
    bedrock = Variant.model_validate(
        {"name": "b", "endpoint": {"api": "bedrock", "modelId": "us.anthropic.claude-3-5-sonnet-20241022-v2:0"}}
    )
    tokens = r.variant(bedrock).tokens
    assert tokens is not None and (tokens.input_per_1k, tokens.output_per_1k) == (0.003, 0.015)
    assert tokens.per_request(1000, 200) == pytest.approx(0.003 + 0.003)
    sagemaker = Variant.model_validate({"name": "s", "instanceType": "ml.g5.2xlarge", "endpoint": {
        "api": "sagemaker", "endpointName": "e"}})  # fmt: skip
    assert r.variant(sagemaker).instance is not None
    openai = Variant.model_validate({"name": "o", "endpoint": {"api": "openai-chat", "url": "http://h/v1"}})
    unknown = r.variant(openai)
    assert unknown.kind == "unknown" and unknown.reason is not None and "cost unknown" in unknown.reason
    priced = Variant.model_validate({"name": "o", "pricePerHour": 2.0, "endpoint": {"api": "openai-chat",
                                     "url": "http://h/v1"}})  # fmt: skip
    assert r.variant(priced).kind == "instance"
    no_price = Variant.model_validate({"name": "n", "endpoint": {"api": "bedrock", "modelId": "acme.unknown-v1"}})
    assert r.variant(no_price).kind == "unknown"


def test_check_prices_lists_every_unpriced_variant() -> None:
    variants = [engine("g5.xlarge"), engine("x9.huge").model_copy(update={"name": "w"})]
    problems = check_prices(variants, pricing())
    assert len(problems) == 1 and problems[0].startswith("spec.variants[1] (w): no price for instance type 'x9.huge'")
    assert check_prices(variants, pricing(source="aws-pricing-api")) == []  # the live lookup may know it


# ---- the AWS Pricing API (botocore Stubber, responses shaped like the real API) -------------------


def price_item(instance_type: str, usd: str, *, license_model: str = "No License required") -> str:
    sku = "JRTCKXETXF2KZ8X3"
    return json.dumps({
        "product": {
            "productFamily": "Compute Instance",
            "attributes": {
                "instanceType": instance_type, "regionCode": "us-east-1", "operatingSystem": "Linux",
                "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used", "licenseModel": license_model,
                "marketoption": "OnDemand", "vcpu": "8", "memory": "32 GiB", "servicecode": "AmazonEC2",
            },
            "sku": sku,
        },
        "serviceCode": "AmazonEC2",
        "terms": {
            "OnDemand": {
                f"{sku}.JRTCKXETXF": {
                    "priceDimensions": {
                        f"{sku}.JRTCKXETXF.6YS6EN2CT7": {
                            "unit": "Hrs", "endRange": "Inf", "beginRange": "0", "appliesTo": [],
                            "description": f"${usd} per On Demand Linux {instance_type} Instance Hour",
                            "rateCode": f"{sku}.JRTCKXETXF.6YS6EN2CT7", "pricePerUnit": {"USD": usd},
                        }
                    },
                    "sku": sku, "effectiveDate": "2025-06-01T00:00:00Z", "offerTermCode": "JRTCKXETXF",
                    "termAttributes": {},
                }
            },
            "Reserved": {},
        },
        "version": "20250601000000",
        "publicationDate": "2025-06-02T18:03:11Z",
    })  # fmt: skip


def pricing_client() -> Any:
    return boto3.client("pricing", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")


def expected_params(instance_type: str) -> dict[str, Any]:
    return {"ServiceCode": "AmazonEC2", "Filters": ec2_price_filters(instance_type, "us-east-1"),
            "FormatVersion": "aws_v1", "MaxResults": 100}  # fmt: skip


def test_aws_pricing_api_parses_price_list_and_pages() -> None:
    client = pricing_client()
    with Stubber(client) as stub:
        stub.add_response(
            "get_products",
            {"FormatVersion": "aws_v1", "PriceList": [price_item("g5.xlarge", "2.5000000000", license_model="BYOL")],
             "NextToken": "page2"},
            expected_params("g5.xlarge"),
        )  # fmt: skip
        stub.add_response(
            "get_products",
            {"FormatVersion": "aws_v1", "PriceList": [price_item("g5.xlarge", "1.0060000000")]},
            {**expected_params("g5.xlarge"), "NextToken": "page2"},
        )
        p = aws_ec2_price(client, "g5.xlarge", "us-east-1")
        stub.assert_no_pending_responses()
    assert (p.usd_per_hour, p.source, p.as_of) == (1.006, "aws-pricing-api", "2025-06-02")


def test_aws_pricing_api_is_used_by_the_resolver_with_discount() -> None:
    client = pricing_client()
    with Stubber(client) as stub:
        page = {"FormatVersion": "aws_v1", "PriceList": [price_item("g6e.2xlarge", "2.24208")]}
        stub.add_response("get_products", page, expected_params("g6e.2xlarge"))
        resolver = PriceResolver(pricing(source="aws-pricing-api", capacityType="savings-plan"), client=client)
        p = resolver.instance("g6e.2xlarge")
        again = resolver.instance("g6e.2xlarge")  # cached: no second call
    assert p.usd_per_hour == pytest.approx(2.24208 * 0.7) and again == p
    assert p.source == "aws-pricing-api"


def test_aws_pricing_api_failure_falls_back_to_the_table_with_a_note() -> None:
    client = pricing_client()
    with Stubber(client) as stub:
        stub.add_client_error("get_products", "ThrottlingException", "Rate exceeded")
        p = PriceResolver(pricing(source="aws-pricing-api"), client=client).instance("g5.2xlarge")
    assert p.usd_per_hour == 1.212 and p.source == SEED
    assert "aws-pricing-api failed" in p.notes[0] and "ThrottlingException" in p.notes[0]


def test_aws_pricing_api_without_product_is_a_clear_error() -> None:
    client = pricing_client()
    with Stubber(client) as stub:
        stub.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": []}, expected_params("x9.huge"))
        with pytest.raises(PriceNotFoundError, match=r"x9\.huge.*pricePerHour"):
            aws_ec2_price(client, "x9.huge", "us-east-1")
