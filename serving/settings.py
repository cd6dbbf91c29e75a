"""The one settings class: every knob of the service and the CLI, read from RISKROUTE_* variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from approvals.policy import Policy
from rules.schema import Tier


class Proposer(BaseModel):
    """How the proposer looks at history (RISKROUTE_PROPOSER__* variables), and whether the service runs it."""

    every_hours: float | None = Field(
        default=None, gt=0, description="run the proposer inside the service this often; off when unset"
    )
    days: int = Field(default=14, ge=1, description="recent days of history that lanes and nodes are judged on")
    backtest_orders: int = Field(default=20_000, ge=100, description="recent orders each proposal's backtest replays")
    late_cost: dict[Tier, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict, description="what a late order costs per tier (default: the late penalties in force)"
    )


class Settings(BaseSettings):
    """riskroute settings (environment variables prefixed RISKROUTE_)."""

    model_config = SettingsConfigDict(env_prefix="RISKROUTE_", env_nested_delimiter="__", extra="ignore")

    data_dir: Path = Path("data")
    scenario: str = "default"
    seed: int = 7
    ruleset_path: Path | None = Field(
        default=None, description="the ruleset that seeds version 1 of an empty database; default the seed ruleset"
    )
    mlflow_tracking_uri: str | None = Field(default=None, description="default MLFLOW_TRACKING_URI or mlruns/")
    freshness_limit_minutes: float = Field(default=180.0, gt=0, description="older features mean degraded mode")
    max_batch: int = Field(default=1_000, ge=1, description="candidates per risk-score request")
    warm_start_history: Path | None = Field(default=None, description="history that seeds the online features")
    model_poll_seconds: float = Field(default=30.0, gt=0, description="how often @champion is checked for a move")
    database_url: str | None = Field(default=None, description="default: a SQLite file in the data folder")
    events_poll_seconds: float = Field(
        default=2.0,
        gt=0,
        description="how often a worker applies events other workers recorded and picks up a new active ruleset",
    )
    open_routing: bool = Field(
        default=False, description="serve risk scores, decisions and events without a token (trusted networks only)"
    )
    auth_cache_seconds: float = Field(
        default=5.0, ge=0, description="how long a worker trusts a checked token (revocation takes at most this)"
    )
    compile_models: bool = Field(
        default=True,
        description="compile the models in service to native code, in the background (Booster.predict until ready)",
    )
    approvals: Policy = Field(default_factory=Policy, description="approvals needed, guardrails, expiry, cooldown")
    proposer: Proposer = Field(default_factory=Proposer, description="the proposer's look-back and its schedule")

    def as_environment(self) -> dict[str, str]:
        """These settings as RISKROUTE_* variables, for a child process to read back the same (unset ones left out)."""
        environment = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, BaseModel):
                text = value.model_dump_json()
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            environment[f"RISKROUTE_{name.upper()}"] = text
        return environment

    @property
    def database(self) -> str:
        """The database URL in use (the embedded SQLite file unless one is set)."""
        return self.database_url or f"sqlite:///{self.data_dir / 'riskroute.db'}"

    @property
    def history_dir(self) -> Path:
        """Where the embedded default keeps the simulated history."""
        return self.data_dir / "history" / self.scenario

    @property
    def compiled_dir(self) -> Path:
        """Where compiled models are cached, by content (a version compiles once per machine)."""
        return self.data_dir / "compiled"

    @property
    def features_dir(self) -> Path:
        """Where the embedded default keeps the built features."""
        return self.data_dir / "features" / self.scenario


def get_settings() -> Settings:
    """Settings from the environment."""
    return Settings()
