"""The approval policy: how many approvals each kind of change needs, guardrail limits, expiry and cooldown."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Policy(BaseModel):
    """Limits every proposal is checked against (set through RISKROUTE_APPROVALS__* variables)."""

    required_approvals: dict[str, int] = Field(
        default_factory=lambda: {"rule_change": 1, "capacity_cut": 2, "model_promotion": 1, "rollback": 1},
        description="approvals needed per kind; a rule change that lowers a capacity cap is a capacity_cut",
    )
    expiry_hours: float = Field(default=168.0, gt=0, description="a pending proposal expires after this long")
    cooldown_hours: float = Field(
        default=24.0, ge=0, description="no new proposal for a target this soon after a rejection"
    )
    max_capacity_change: float = Field(default=0.30, gt=0, description="largest relative move of a capacity cap")
    max_weight_change: float = Field(default=0.50, gt=0, description="largest relative move of a scoring weight")
    max_risk_limit_change: float = Field(default=0.50, gt=0, description="largest relative move of a tier's risk limit")
    max_new_lane_adjustment: float = Field(default=10.0, gt=0, description="largest |amount| of a new lane adjustment")

    def approvals_for(self, kind: str) -> int:
        """Approvals a kind of change needs (at least one)."""
        return max(1, int(self.required_approvals.get(kind, 1)))
