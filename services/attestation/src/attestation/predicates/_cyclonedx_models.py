"""Pydantic models for the parts of a CycloneDX BOM that `cyclonedx-python-lib`'s object model
drops: the ML model card (`component.modelCard`, 1.5+) and data components (`component.data`).

They are parsed only after the BOM passed the CycloneDX JSON Schema, so they can be lenient:
unknown fields are ignored and everything is optional. Field names mirror CycloneDX (camelCase
aliases) so the summary reads like the BOM. Large blobs (graphics, attachment contents) are
left out on purpose: the summary goes into the technical file, the BOM itself is kept whole.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    def summary(self) -> dict[str, Any]:
        """JSON-ready dict with CycloneDX field names, empty fields left out."""
        dumped: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        return dumped


class Property(_Model):
    name: str
    value: str | None = None


class OrganizationalEntity(_Model):
    name: str | None = None
    url: list[str] = []


class OrganizationalContact(_Model):
    name: str | None = None
    email: str | None = None


class GovernanceParty(_Model):
    organization: OrganizationalEntity | None = None
    contact: OrganizationalContact | None = None


class DataGovernance(_Model):
    custodians: list[GovernanceParty] = []
    stewards: list[GovernanceParty] = []
    owners: list[GovernanceParty] = []


class Attachment(_Model):
    content_type: str | None = None
    encoding: str | None = None
    # `content` (the data itself, often base64) is deliberately not modelled.


class DataContents(_Model):
    url: str | None = None
    attachment: Attachment | None = None
    properties: list[Property] = []


class ComponentData(_Model):
    """One entry of `component.data`, or an inline dataset of a model card."""

    bom_ref: str | None = None
    type: str | None = None
    name: str | None = None
    description: str | None = None
    contents: DataContents | None = None
    classification: str | None = None
    sensitive_data: list[str] = []
    governance: DataGovernance | None = None

    model_config = ConfigDict(
        alias_generator=lambda f: "bom-ref" if f == "bom_ref" else to_camel(f),
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )


class DatasetReference(_Model):
    """A model card dataset given by reference to a data component (`{"ref": "..."}`)."""

    ref: str


class Approach(_Model):
    type: str | None = None


class InputOutput(_Model):
    format: str | None = None


class ModelParameters(_Model):
    approach: Approach | None = None
    task: str | None = None
    architecture_family: str | None = None
    model_architecture: str | None = None
    datasets: list[
        Annotated[DatasetReference | ComponentData, Field(union_mode="left_to_right")]
    ] = []
    inputs: list[InputOutput] = []
    outputs: list[InputOutput] = []


class ConfidenceInterval(_Model):
    lower_bound: str | None = None
    upper_bound: str | None = None


class PerformanceMetric(_Model):
    """One model card metric. The SLA scorecard scores performance commitments on these
    (`type` = the metric; `value`, a string in CycloneDX, counts only as a plain number)."""

    type: str | None = None
    value: str | None = None
    slice: str | None = None
    confidence_interval: ConfidenceInterval | None = None


class QuantitativeAnalysis(_Model):
    performance_metrics: list[PerformanceMetric] = []
    # `graphics` (embedded images) is deliberately not modelled.


class Risk(_Model):
    name: str | None = None
    mitigation_strategy: str | None = None


class FairnessAssessment(_Model):
    group_at_risk: str | None = None
    benefits: str | None = None
    harms: str | None = None
    mitigation_strategy: str | None = None


class EnergyMeasure(_Model):
    value: float
    unit: str


class CO2Measure(_Model):
    value: float
    unit: str


class EnergyProvider(_Model):
    description: str | None = None
    organization: OrganizationalEntity | None = None
    energy_source: str | None = None
    energy_provided: EnergyMeasure | None = None


class EnergyConsumption(_Model):
    activity: str | None = None
    energy_providers: list[EnergyProvider] = []
    activity_energy_cost: EnergyMeasure | None = None
    co2_cost_equivalent: CO2Measure | None = None
    co2_cost_offset: CO2Measure | None = None


class EnvironmentalConsiderations(_Model):
    energy_consumptions: list[EnergyConsumption] = []
    properties: list[Property] = []


class Considerations(_Model):
    users: list[str] = []
    use_cases: list[str] = []
    technical_limitations: list[str] = []
    performance_tradeoffs: list[str] = []
    ethical_considerations: list[Risk] = []
    fairness_assessments: list[FairnessAssessment] = []
    environmental_considerations: EnvironmentalConsiderations | None = None


class ModelCard(_Model):
    bom_ref: str | None = None
    model_parameters: ModelParameters | None = None
    quantitative_analysis: QuantitativeAnalysis | None = None
    considerations: Considerations | None = None
    properties: list[Property] = []

    model_config = ComponentData.model_config
