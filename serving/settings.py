"""The one settings class: every knob of the service and the CLI, read from RISKROUTE_* variables."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """riskroute settings (environment variables prefixed RISKROUTE_)."""

    model_config = SettingsConfigDict(env_prefix="RISKROUTE_", extra="ignore")

    data_dir: Path = Path("data")
    scenario: str = "default"
    seed: int = 7

    @property
    def history_dir(self) -> Path:
        """Where the embedded default keeps the simulated history."""
        return self.data_dir / "history" / self.scenario

    @property
    def features_dir(self) -> Path:
        """Where the embedded default keeps the built features."""
        return self.data_dir / "features" / self.scenario


def get_settings() -> Settings:
    """Settings from the environment."""
    return Settings()
