"""EC2 instance shapes the operator sizes model server pods for (public AWS specifications).

Accelerators are what the device plugins advertise: ``nvidia.com/gpu`` (NVIDIA) and
``aws.amazon.com/neuron`` (Inferentia/Trainium devices, not cores).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

GPU = "nvidia.com/gpu"
NEURON = "aws.amazon.com/neuron"


@dataclass(frozen=True)
class InstanceShape:
    vcpu: int
    memory_gib: int
    accelerators: int = 0
    resource: str | None = None  # GPU or NEURON

    @property
    def taint_key(self) -> str | None:
        return self.resource


def _family(prefix: str, sizes: dict[str, tuple[int, int, int]], resource: str | None) -> dict[str, InstanceShape]:
    return {f"{prefix}.{size}": InstanceShape(c, m, a, resource if a else None) for size, (c, m, a) in sizes.items()}


CATALOG: dict[str, InstanceShape] = {
    **_family(
        "g5",
        {
            "xlarge": (4, 16, 1),
            "2xlarge": (8, 32, 1),
            "4xlarge": (16, 64, 1),
            "8xlarge": (32, 128, 1),
            "12xlarge": (48, 192, 4),
            "16xlarge": (64, 256, 1),
            "24xlarge": (96, 384, 4),
            "48xlarge": (192, 768, 8),
        },
        GPU,
    ),
    **_family(
        "g6",
        {
            "xlarge": (4, 16, 1),
            "2xlarge": (8, 32, 1),
            "4xlarge": (16, 64, 1),
            "8xlarge": (32, 128, 1),
            "12xlarge": (48, 192, 4),
            "16xlarge": (64, 256, 1),
            "24xlarge": (96, 384, 4),
            "48xlarge": (192, 768, 8),
        },
        GPU,
    ),
    **_family(
        "g6e",
        {
            "xlarge": (4, 32, 1),
            "2xlarge": (8, 64, 1),
            "4xlarge": (16, 128, 1),
            "8xlarge": (32, 256, 1),
            "12xlarge": (48, 384, 4),
            "16xlarge": (64, 512, 1),
            "24xlarge": (96, 768, 4),
            "48xlarge": (192, 1536, 8),
        },
        GPU,
    ),
    **_family("p4d", {"24xlarge": (96, 1152, 8)}, GPU),
    **_family("p5", {"48xlarge": (192, 2048, 8)}, GPU),
    **_family(
        "inf2",
        {"xlarge": (4, 16, 1), "8xlarge": (32, 128, 1), "24xlarge": (96, 384, 6), "48xlarge": (192, 768, 12)},
        NEURON,
    ),
    **_family("trn1", {"2xlarge": (8, 32, 1), "32xlarge": (128, 512, 16)}, NEURON),
    **_family("m5", {"xlarge": (4, 16, 0), "2xlarge": (8, 32, 0), "4xlarge": (16, 64, 0)}, None),
    **_family("m6i", {"xlarge": (4, 16, 0), "2xlarge": (8, 32, 0), "4xlarge": (16, 64, 0)}, None),
    **_family("c5", {"xlarge": (4, 8, 0), "2xlarge": (8, 16, 0), "4xlarge": (16, 32, 0)}, None),
    **_family("c7i", {"xlarge": (4, 8, 0), "2xlarge": (8, 16, 0), "4xlarge": (16, 32, 0)}, None),
}


class UnknownInstanceTypeError(ValueError):
    pass


def shape_of(instance_type: str) -> InstanceShape:
    """Shape of an EC2 type (a SageMaker ``ml.`` name maps to its EC2 twin)."""
    key = instance_type.removeprefix("ml.")
    try:
        return CATALOG[key]
    except KeyError:
        families = sorted({k.split(".")[0] for k in CATALOG})
        close = difflib.get_close_matches(key, list(CATALOG), n=1, cutoff=0.8)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownInstanceTypeError(
            f"unknown instance type {instance_type!r}{hint}; known families: {', '.join(families)}"
        ) from None
