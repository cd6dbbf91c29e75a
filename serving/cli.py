"""The `riskroute` command line. Commands stay thin: they parse, call a package function, and print."""

from __future__ import annotations

import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from features.errors import FeaturesError
from serving.settings import get_settings

app = typer.Typer(
    help="riskroute: risk-aware order routing with versioned rules, calibrated risk models and approvals.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
history_app = typer.Typer(help="Validate and summarise delivery history.", no_args_is_help=True)
features_app = typer.Typer(help="Build point-in-time features from history.", no_args_is_help=True)
app.add_typer(history_app, name="history")
app.add_typer(features_app, name="features")

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


class Source(str, Enum):
    """Where history comes from."""

    file = "file"
    olist = "olist"


class Kind(str, Enum):
    """Which contract a file is checked against."""

    shipments = "shipments"
    events = "events"


def _progress() -> Progress:
    """A progress bar for long steps."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _rate(value: float) -> str:
    return "-" if value != value else f"{value:.1%}"


def _print_rates(*, title: str, frame, key: str) -> None:
    """A table of shipments and both outcome rates."""
    table = Table(title=title)
    for column in (key, "shipments", "carrier delay", "late handover"):
        table.add_column(column, justify="right" if column != key else "left")
    for index, row in frame.iterrows():
        table.add_row(
            str(index), f"{int(row['shipments']):,}", _rate(row["carrier_delay_rate"]), _rate(row["late_handover_rate"])
        )
    console.print(table)


@app.command()
def simulate(
    scenario: Annotated[str, typer.Option(help="'default', 'trouble' or a scenario YAML file")] = "default",
    out: Annotated[Path, typer.Option(help="folder to write the history into (replaced whole)")] = Path(
        "data/history/default"
    ),
    seed: Annotated[int | None, typer.Option(help="random seed (default: the scenario's)")] = None,
) -> None:
    """Simulate a fulfilment network forward and write its history."""
    from features.twin.output import write_simulation
    from features.twin.scenario import load_scenario
    from features.twin.simulate import simulate as run_twin

    spec = load_scenario(source=scenario)
    seed = spec.seed if seed is None else seed
    started = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task(f"simulating {spec.name} (seed {seed})", total=spec.days)
        result = run_twin(scenario=spec, seed=seed, on_day=lambda done, total: progress.update(task, completed=done))
    simulated = time.perf_counter() - started
    write_simulation(result=result, scenario=spec, seed=seed, out_dir=out)
    console.print(
        f"simulated {result.stats['shipments']:,} shipments ({result.stats['orders']:,} orders) "
        f"in {simulated:.1f}s; written to {out}"
    )


def _load(*, path: Path | None, source: Source, mapping: Path | None, lenient: bool, quarantine: Path | None):
    """Load history from a file, a folder or the Olist adapter, printing what was dropped."""
    from features.history import load_history
    from features.olist import load_olist

    if path is None:
        raise FeaturesError("give the history PATH (or --data for --source olist)")
    if source is Source.olist:
        history, report = load_olist(folder=path)
    else:
        history, report = load_history(path=path, mapping_path=mapping, lenient=lenient, quarantine_path=quarantine)
    console.print(f"{report.source}: {report.rows_read:,} rows read, {report.rows_kept:,} kept")
    for reason, count in report.dropped_by_reason.items():
        console.print(f"  dropped {count:,}: {reason}")
    if report.quarantine_path is not None:
        console.print(f"  bad rows quarantined to {report.quarantine_path}")
    return history


@history_app.command("validate")
def history_validate(
    path: Annotated[Path | None, typer.Argument(help="shipments CSV/Parquet file, or a history folder")] = None,
    source: Annotated[Source, typer.Option(help="file (the history schema) or olist (the Olist export)")] = Source.file,
    data: Annotated[Path | None, typer.Option(help="folder of the source's files (same as PATH)")] = None,
    mapping: Annotated[Path | None, typer.Option(help="YAML column mapping for your own export")] = None,
    lenient: Annotated[bool, typer.Option(help="quarantine bad rows to a side file instead of failing")] = False,
    quarantine: Annotated[Path | None, typer.Option(help="where --lenient writes bad rows")] = None,
    kind: Annotated[Kind, typer.Option(help="shipments (the history schema) or events (the event schema)")] = (
        Kind.shipments
    ),
) -> None:
    """Check a history file against the schema; one clear error listing bad rows, or a summary."""
    if kind is Kind.events:
        from features.history import load_events

        if path is None:
            raise FeaturesError("give the events file PATH")
        events, report = load_events(path=path, lenient=lenient, quarantine_path=quarantine)
        console.print(f"{report.source}: {report.rows_read:,} events read, {report.rows_kept:,} kept")
        for reason, count in report.dropped_by_reason.items():
            console.print(f"  dropped {count:,}: {reason}")
        console.print(events["event_type"].value_counts().to_string())
        return
    history = _load(path=path or data, source=source, mapping=mapping, lenient=lenient, quarantine=quarantine)
    _summary(history=history)


@history_app.command("events")
def history_events(
    path: Annotated[Path, typer.Argument(help="shipments file or history folder")],
    out: Annotated[Path, typer.Option(help="where to write the events (.parquet or .csv)")],
) -> None:
    """Unfold a history into the outcome events it implies, in time order (to replay into the service)."""
    from features.events import events_from_history
    from features.storage import write_atomically

    if out.suffix not in (".parquet", ".csv"):
        raise FeaturesError(f"{out}: write events to a .parquet or .csv file")
    history = _load(path=path, source=Source.file, mapping=None, lenient=False, quarantine=None)
    events = events_from_history(history=history)
    if out.suffix == ".parquet":
        write_atomically(path=out, writer=lambda target: events.to_parquet(target, index=False))
    else:
        write_atomically(path=out, writer=lambda target: events.to_csv(target, index=False))
    console.print(f"{len(events):,} events -> {out}")


@history_app.command("summary")
def history_summary(
    path: Annotated[Path | None, typer.Argument(help="shipments file or history folder")] = None,
    source: Annotated[Source, typer.Option(help="file or olist")] = Source.file,
    data: Annotated[Path | None, typer.Option(help="folder of the source's files (same as PATH)")] = None,
) -> None:
    """Print shipments and outcome rates by carrier and by week."""
    _summary(history=_load(path=path or data, source=source, mapping=None, lenient=False, quarantine=None))


def _summary(*, history) -> None:
    """Print the history summary."""
    from features.history import carrier_summary, weekly_summary

    shipments = history.shipments
    console.print(
        f"[bold]{len(shipments):,} shipments[/bold] from {shipments['allocated_at'].min()} "
        f"to {shipments['allocated_at'].max()}"
    )
    _print_rates(title="by carrier", frame=carrier_summary(shipments=shipments), key="carrier")
    _print_rates(title="by week (allocation week, Monday)", frame=weekly_summary(shipments=shipments), key="week")


@features_app.command("build")
def features_build(
    history: Annotated[Path, typer.Option(help="history folder or shipments file (or the Olist folder)")],
    out: Annotated[Path, typer.Option(help="folder for the Parquet feature partitions")],
    source: Annotated[Source, typer.Option(help="file or olist")] = Source.file,
    chunk_days: Annotated[int, typer.Option(help="days of history per chunk (each with its look-back)")] = 7,
) -> None:
    """Build point-in-time features for both models, chunk by chunk, as Parquet partitions."""
    loaded = _load(path=history, source=source, mapping=None, lenient=False, quarantine=None)
    _build(history=loaded, out=out, chunk_days=chunk_days)


def _build(*, history, out: Path, chunk_days: int) -> None:
    """Build feature partitions with a progress bar and report the row counts."""
    from features.offline import build_features_chunked

    started = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task("building features", total=None)
        rows = build_features_chunked(
            history=history,
            out_dir=out,
            chunk_days=chunk_days,
            on_chunk=lambda done, total: progress.update(task, completed=done, total=total),
        )
    elapsed = time.perf_counter() - started
    for model, count in rows.items():
        console.print(f"{model}: {count:,} feature rows -> {out / model}")
    console.print(f"built in {elapsed:.1f}s")


@app.command()
def run(
    data_dir: Annotated[Path | None, typer.Option(help="where history and features are kept")] = None,
) -> None:
    """The main job on the embedded default: simulate (once), build features, print the summary."""
    from features.twin.output import read_manifest

    settings = get_settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    if read_manifest(folder=settings.history_dir) is None:
        simulate(scenario=settings.scenario, out=settings.history_dir, seed=settings.seed)
    else:
        console.print(f"using the simulated history in {settings.history_dir}")
    history = _load(path=settings.history_dir, source=Source.file, mapping=None, lenient=False, quarantine=None)
    _build(history=history, out=settings.features_dir, chunk_days=7)
    _summary(history=history)


def main() -> None:
    """Entry point: domain errors become one clear message and exit code 2, never a traceback."""
    try:
        app()
    except FeaturesError as exc:
        errors.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
