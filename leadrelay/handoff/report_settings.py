"""The ``[report]`` section of ``leadrelay.toml``: the funnel's goals and the score bands.

::

    [report]
    score_bands = [60, 70, 80]      # lower bounds: below 60, 60–69, 70–79, 80+
    calibration_min_leads = 20      # a band with fewer scored leads is not compared

    [report.goals]                  # shares, 0–1, each step against the one before it
    mql_to_sal = 0.8
    sal_to_sql = 0.4
    mql_to_sql = 0.3                # the SOP's goal
    sql_to_opportunity = 0.5
    opportunity_to_won = 0.25
    win_rate = 0.25                 # won ÷ (won + lost)

Only ``mql_to_sql`` is the lead-handoff SOP's own figure; the other defaults are starting
points to replace with the team's own.
"""

from __future__ import annotations

from itertools import pairwise

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ReportConfig", "ReportGoals"]


class ReportGoals(BaseModel):
    """The goal of each funnel step (a share of the step before it) and of the win rate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mql_to_sal: float = Field(default=0.8, gt=0, le=1)
    sal_to_sql: float = Field(default=0.4, gt=0, le=1)
    mql_to_sql: float = Field(default=0.3, gt=0, le=1)
    sql_to_opportunity: float = Field(default=0.5, gt=0, le=1)
    opportunity_to_won: float = Field(default=0.25, gt=0, le=1)
    win_rate: float = Field(default=0.25, gt=0, le=1)


class ReportConfig(BaseModel):
    """The ``[report]`` section: goals, score bands and the calibration's smallest sample."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    goals: ReportGoals = Field(default_factory=ReportGoals)
    score_bands: tuple[float, ...] = (60, 70, 80)
    calibration_min_leads: int = Field(default=20, ge=1)

    @field_validator("score_bands")
    @classmethod
    def _ascending_bands(cls, bands: tuple[float, ...]) -> tuple[float, ...]:
        if not bands:
            raise ValueError("needs at least one lower bound, e.g. [60, 70, 80]")
        if any(low <= 0 or low > 100 for low in bands):
            raise ValueError(f"must lie in (0, 100], got {list(bands)}")
        if any(high <= low for low, high in pairwise(bands)):
            raise ValueError(f"must rise strictly, got {list(bands)}")
        return bands
