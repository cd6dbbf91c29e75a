"""The `riskroute` command line. Commands stay thin: they parse, call a package function, and print."""

from __future__ import annotations

import json
import os
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from features.errors import FeaturesError
from serving.settings import Proposer, get_settings

app = typer.Typer(
    help="riskroute: risk-aware order routing with versioned rules, calibrated risk models and approvals.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
history_app = typer.Typer(help="Validate and summarise delivery history.", no_args_is_help=True)
features_app = typer.Typer(help="Build point-in-time features from history.", no_args_is_help=True)
models_app = typer.Typer(help="Compare and inspect registered risk models.", no_args_is_help=True)
rules_app = typer.Typer(help="Check rulesets.", no_args_is_help=True)
db_app = typer.Typer(help="Migrate and inspect riskroute's database.", no_args_is_help=True)
events_app = typer.Typer(help="The events the service has recorded.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens and their roles.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
app.add_typer(db_app, name="db")
app.add_typer(events_app, name="events")
app.add_typer(tokens_app, name="tokens")
app.add_typer(audit_app, name="audit")
app.add_typer(history_app, name="history")
app.add_typer(features_app, name="features")
app.add_typer(models_app, name="models")

console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, soft_wrap=True)


class Source(str, Enum):
    """Where history comes from."""

    file = "file"
    olist = "olist"


class TrainSource(str, Enum):
    """Where training history comes from."""

    twin = "twin"
    file = "file"
    olist = "olist"


class ModelChoice(str, Enum):
    """Which risk model(s) to train."""

    carrier_delay = "carrier_delay"
    node_congestion = "node_congestion"
    all = "all"


class Engine(str, Enum):
    """Where the booster is fitted."""

    local = "local"
    dask = "dask"


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
    out: Annotated[
        Path | None, typer.Option(help="folder to write the history into, replaced whole (default: data/history/NAME)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (default: the scenario's)")] = None,
) -> None:
    """Simulate a fulfilment network forward and write its history."""
    from features.twin.output import write_simulation
    from features.twin.scenario import load_scenario
    from features.twin.simulate import simulate as run_twin

    spec = load_scenario(source=scenario)
    seed = spec.seed if seed is None else seed
    out = out or get_settings().data_dir / "history" / spec.name
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
    for note, count in report.kept_notes.items():
        console.print(f"  {count:,} {note}")
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

    _check_table_suffix(out=out)
    history = _load(path=path, source=Source.file, mapping=None, lenient=False, quarantine=None)
    events = events_from_history(history=history)
    _write_table(frame=events, out=out)
    console.print(f"{len(events):,} events -> {out}")


def _check_table_suffix(*, out: Path) -> None:
    if out.suffix not in (".parquet", ".csv"):
        raise FeaturesError(f"{out}: write events to a .parquet or .csv file")


def _write_table(*, frame, out: Path) -> None:
    """A frame written whole to .parquet or .csv, or not at all."""
    from features.storage import write_atomically

    if out.suffix == ".parquet":
        write_atomically(path=out, writer=lambda target: frame.to_parquet(target, index=False))
    else:
        write_atomically(path=out, writer=lambda target: frame.to_csv(target, index=False))


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
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="start the service at the end")] = True,
    port: Annotated[int, typer.Option(help="port of the service")] = 8000,
) -> None:
    """The main job on the embedded default: simulate (once), build features, train (if no champion), propose, serve."""
    from features.offline import read_features
    from features.twin.output import read_manifest
    from training.runner import TrainRequest, run_training
    from training.tracking import alias_version, configure

    settings = get_settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
        # The service reads its settings from the environment: it must see the same folder.
        os.environ["RISKROUTE_DATA_DIR"] = str(data_dir)
    _upgrade(url=settings.database)
    if read_manifest(folder=settings.history_dir) is None:
        _ensure_twin(folder=settings.history_dir, settings=settings)
    else:
        console.print(f"using the simulated history in {settings.history_dir}")
    history = _load(path=settings.history_dir, source=Source.file, mapping=None, lenient=False, quarantine=None)
    _build(history=history, out=settings.features_dir, chunk_days=7)
    _summary(history=history)
    configure(tracking_uri=settings.mlflow_tracking_uri)
    missing = tuple(
        m for m in ("carrier_delay", "node_congestion") if alias_version(model_name=m, alias="champion") is None
    )
    if missing:
        console.print(f"training {', '.join(missing)} (no champion yet)")
        reports = run_training(
            request=TrainRequest(models=missing, history_source=str(settings.history_dir)),
            history=history,
            truth_folder=settings.history_dir,
            # The partitions just written hold the same features; reading them beats building again.
            tables={m: read_features(folder=settings.features_dir, model=m) for m in missing},
        )
        for report in reports:
            _print_report(report=report)
    else:
        console.print("champions already registered; `riskroute train` makes challengers")
    console.print("looking for changes to propose (pending proposals are kept, not repeated)")
    _propose(folder=settings.history_dir, proposer=settings.proposer, history=history)
    if not serve_after:
        return
    demo = _demo_tokens(url=settings.database)
    _print_examples(port=port, history=history, token=demo["router"])
    serve(host="127.0.0.1", port=port, workers=1, access_log=False)


def _demo_tokens(*, url: str) -> dict[str, str]:
    """Fresh demo tokens, one per role (the previous run's are revoked): for trying the service, not for production."""
    from approvals import tokens
    from approvals.db import open_database, transaction

    database = open_database(url=url)
    made = {}
    try:
        with transaction(sessions=database.sessions) as session:
            for record in tokens.listing(session=session):
                if record.name.startswith("demo-") and record.revoked_at is None:
                    tokens.revoke(
                        session=session, name=record.name, actor="make run", reason="replaced by a new demo run"
                    )
            stamp = f"{time.time_ns():x}"
            for role in tokens.ROLES:
                made[role] = tokens.create(
                    session=session, name=f"demo-{role}-{stamp}", role=role, created_by="make run"
                )
    finally:
        database.dispose()
    console.print(
        "\n[bold yellow]DEMO-ONLY tokens[/bold yellow] (revoked at the next `make run`; "
        "make real ones with `riskroute tokens create`):"
    )
    for role, token in made.items():
        console.print(f"  {role:15} {token}")
    return made


def _print_examples(*, port: int, history, token: str) -> None:
    """Example calls against the service about to start."""
    row = history.shipments.iloc[len(history.shipments) // 2]
    candidate = (
        f'{{"node_id": "{row.node_id}", "node_type": "{row.node_type}", "origin_region": "{row.origin_region}", '
        f'"carrier": "{row.carrier}", "service": "{row.service}", "dest_region": "{row.dest_region}", '
        f'"ship_by": "{row.ship_by.isoformat()}", "promised_delivery": "{row.promised_delivery.date().isoformat()}", '
        f'"decided_at": "{row.allocated_at.isoformat()}"}}'
    )
    base = f"http://127.0.0.1:{port}"
    console.print(
        f"\n[bold]ops console: {base}/console[/bold] (sign in with the ops_lead token above to decide on proposals)"
    )
    console.print(f"\n[bold]service on {base}[/bold] (docs at {base}/docs); try:")
    console.print(f"  curl -s {base}/readyz")
    console.print(
        f"  curl -s -X POST {base}/v1/risk-scores -H 'authorization: Bearer {token}' "
        f"-H 'content-type: application/json' "
        f'-d \'{{"candidates": [{candidate}], "explain": true}}\''
    )
    console.print(f"  curl -s {base}/metrics | grep riskroute_")


@app.command()
def train(
    model: Annotated[ModelChoice, typer.Option(help="which model to train")] = ModelChoice.all,
    source: Annotated[TrainSource, typer.Option(help="twin (simulated), file (your history) or olist")] = (
        TrainSource.twin
    ),
    history: Annotated[
        Path | None, typer.Option(help="history folder or shipments file (twin: simulated if absent)")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="the Olist folder, with --source olist")] = None,
    mapping: Annotated[Path | None, typer.Option(help="YAML column mapping, with --source file")] = None,
    valid_start: Annotated[str | None, typer.Option(help="first day of the validation window (YYYY-MM-DD)")] = None,
    test_start: Annotated[str | None, typer.Option(help="first day of the test window")] = None,
    test_end: Annotated[str | None, typer.Option(help="day after the test window")] = None,
    calibration: Annotated[str, typer.Option(help="isotonic or platt")] = "isotonic",
    engine: Annotated[Engine, typer.Option(help="local, or dask (LightGBM's Dask estimator)")] = Engine.local,
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler address, or 'local' for a local cluster")
    ] = None,
    features_dir: Annotated[Path | None, typer.Option(help="Parquet feature partitions (dask engine)")] = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (default MLFLOW_TRACKING_URI or the embedded store)")
    ] = None,
    json_line: Annotated[bool, typer.Option("--json", help="print the metrics as one JSON line at the end")] = False,
) -> None:
    """Train the risk models on point-in-time features with a time split; log and register them in MLflow."""
    from training.runner import TrainRequest, run_training

    if calibration not in ("isotonic", "platt"):
        raise FeaturesError(f"--calibration must be isotonic or platt, not {calibration!r}")
    if engine is Engine.dask and not scheduler:
        raise FeaturesError("--engine dask needs --scheduler ADDRESS (or 'local' for a local cluster)")
    if source is TrainSource.twin and (mapping or data):
        raise FeaturesError("--mapping and --data go with --source file and --source olist, not the twin")
    if engine is Engine.dask and source is not TrainSource.twin and features_dir is None:
        raise FeaturesError("--engine dask on your own history needs --features-dir (built by `features build`)")
    settings = get_settings()
    loaded = None
    truth_folder = None
    if engine is Engine.dask and source is TrainSource.twin:
        truth_folder = history or settings.history_dir
    if engine is Engine.local:
        if source is TrainSource.twin:
            folder = history or settings.history_dir
            _ensure_twin(folder=folder, settings=settings)
            loaded, truth_folder = (
                _load(path=folder, source=Source.file, mapping=None, lenient=False, quarantine=None),
                folder,
            )
        elif source is TrainSource.olist:
            loaded = _load(path=data or history, source=Source.olist, mapping=None, lenient=False, quarantine=None)
        else:
            loaded = _load(path=history, source=Source.file, mapping=mapping, lenient=False, quarantine=None)
    request = TrainRequest(
        models=("carrier_delay", "node_congestion") if model is ModelChoice.all else (model.value,),
        source=source.value,
        history_source=str(history or data or settings.history_dir),
        valid_start=valid_start,
        test_start=test_start,
        test_end=test_end,
        calibration=calibration,
        engine=engine.value,
        scheduler=scheduler,
        features_dir=features_dir or settings.features_dir,
        tracking_uri=tracking_uri,
    )
    with _progress() as progress:
        task = progress.add_task("training", total=None)

        def on_round(model_name: str, round_: int, loss: float) -> None:
            progress.update(
                task, description=f"{model_name}: round {round_}, valid log loss {loss:.4f}", completed=round_
            )

        reports = run_training(request=request, history=loaded, truth_folder=truth_folder, on_round=on_round)
    for report in reports:
        _print_report(report=report)
    if json_line:
        typer.echo(_json_line(reports=reports))


@rules_app.command("validate")
def rules_validate(
    path: Annotated[Path | None, typer.Argument(help="ruleset YAML or JSON file (default: the seed ruleset)")] = None,
) -> None:
    """Validate a ruleset file; clear errors naming the field, or its rules and content hash."""
    from rules.schema import load_ruleset, seed_ruleset_path

    ruleset = load_ruleset(path=path or seed_ruleset_path())
    console.print(f"{path or seed_ruleset_path()}: ruleset {ruleset.name!r} is valid")
    console.print(f"  rules: {', '.join(ruleset.rule_ids())}")
    console.print(f"  protected: {', '.join(ruleset.protected) or '-'}")
    console.print(
        f"  split: {ruleset.split.max_shipments} shipment(s) at most, split penalty "
        f"{ruleset.scoring.split_penalty}; late penalty by tier {ruleset.scoring.late_penalty_by_tier}"
    )
    console.print(f"  content hash {ruleset.content_hash()}")


class RiskSource(str, Enum):
    """Where a backtest's risk comes from."""

    models = "models"
    priors = "priors"


def _ruleset(*, reference: str):
    """A ruleset by reference: 'seed', 'active', a version number from the database, or a YAML/JSON file."""
    from approvals import rulesets
    from rules.schema import load_ruleset, seed_ruleset_path

    if reference == "seed":
        return load_ruleset(path=seed_ruleset_path()), "seed"
    if reference == "active" or reference.lstrip("v").isdigit():
        database = _database()
        try:
            with database.sessions() as session:
                version = (
                    rulesets.active(session=session)
                    if reference == "active"
                    else rulesets.get(session=session, number=int(reference.lstrip("v")))
                )
                return rulesets.to_ruleset(version=version), f"version {version.number}"
        finally:
            database.dispose()
    return load_ruleset(path=Path(reference)), reference


def _window(text: str | None):
    import pandas as pd

    if not text:
        return None, None
    if ".." not in text:
        raise typer.BadParameter(
            "give START..END (ISO dates or times; either side may be empty)", param_hint="--window"
        )
    start, end = text.split("..", 1)
    try:
        return (pd.Timestamp(start) if start else None, pd.Timestamp(end) if end else None)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r}: {exc}", param_hint="--window") from None


@app.command()
def backtest(
    ruleset: Annotated[str, typer.Option(help="the ruleset to try: seed, active, a version number, or a file")],
    against: Annotated[str, typer.Option(help="the ruleset to compare with (same forms)")] = "active",
    history: Annotated[Path | None, typer.Option(help="a twin history folder (default: the embedded one)")] = None,
    window: Annotated[str | None, typer.Option(help="START..END of decisions to replay (default: all)")] = None,
    max_orders: Annotated[int | None, typer.Option(help="replay only the newest N orders of the window")] = None,
    risk: Annotated[RiskSource, typer.Option(help="models (@champion) or rules-only priors")] = RiskSource.models,
    out: Annotated[Path | None, typer.Option(help="write the full report (JSON) here")] = None,
) -> None:
    """Replay recorded decisions through two rulesets with the live engine and compare what they would have done."""
    from features.history import load_history
    from features.storage import write_atomically
    from rules.backtest import compare, load_replay, prior_risk, recorded_truth, replay_ruleset

    settings = get_settings()
    folder = history or settings.history_dir
    start, end = _window(window)
    new, new_name = _ruleset(reference=ruleset)
    old, old_name = _ruleset(reference=against)
    started = time.perf_counter()
    replay = load_replay(folder=folder, start=start, end=end, max_orders=max_orders)
    if risk is RiskSource.models:
        from serving.runtime import load_models
        from serving.scorer import replay_risk

        models, _ = load_models(tracking_uri=settings.mlflow_tracking_uri)
        priced = replay_risk(replay=replay, history=load_history(path=folder)[0], models=models)
    else:
        priced = prior_risk(replay=replay)
    report = compare(
        replay=replay,
        old=replay_ruleset(replay=replay, ruleset=old, risk=priced),
        new=replay_ruleset(replay=replay, ruleset=new, risk=priced),
        truth=recorded_truth(folder=folder),
    )
    report["risk"] = priced.source
    report["seconds"] = round(time.perf_counter() - started, 2)
    table = Table("", f"against: {old_name}", f"ruleset: {new_name}")
    for key in ("routed", "expected_on_time", "cost_per_order", "objective_per_order", "split_rate"):
        table.add_row(key, f"{report['old'][key]}", f"{report['new'][key]}")
    console.print(
        f"{report['orders']:,} orders replayed ({report['window'][0]} .. {report['window'][1]}), "
        f"risk from {priced.source}, in {report['seconds']} s"
    )
    console.print(table)
    console.print(f"decisions that change: {report['changed_share']:.2%}")
    for side, name in (("old", old_name), ("new", new_name)):
        if report["truth"] and report["truth"][side]["true_on_time"] is not None:
            t = report["truth"][side]
            console.print(
                f"twin truth, {name}: expected on-time {t['expected_on_time']:.4f} vs true {t['true_on_time']:.4f} "
                f"(gap {t['gap']:+.4f}) on the {t['known_share']:.1%} of its shipments history made as planned"
            )
    for lane in report["lanes"][:5]:
        console.print(
            f"  lane {lane['carrier']} -> {lane['dest_region']}: "
            f"{int(lane['shipments_old'])} -> {int(lane['shipments_new'])} shipments"
        )
    console.print(f"[dim]{report['limitations']}[/dim]")
    if out is not None:
        write_atomically(path=out, writer=lambda target: target.write_text(json.dumps(report, indent=2, default=str)))
        console.print(f"report written to {out}")


@app.command()
def propose(
    history: Annotated[Path | None, typer.Option(help="a twin history folder (default: the embedded one)")] = None,
    days: Annotated[
        int | None, typer.Option(help="recent days of history to judge lanes and nodes on [default: 14]")
    ] = None,
    backtest_orders: Annotated[
        int | None, typer.Option(help="recent orders each proposal's backtest replays [default: 20000]")
    ] = None,
    late_cost: Annotated[
        list[str] | None,
        typer.Option(
            help="what a late order costs, TIER=AMOUNT (repeatable); late penalties are tuned against it "
            "(default: the penalties in force)"
        ),
    ] = None,
    json_line: Annotated[
        bool, typer.Option("--json", help="end with one JSON line of what was filed (for schedulers)")
    ] = False,
) -> None:
    """File proposals from the champions with evidence and backtests: lanes, capacity caps, late penalties, models.

    Defaults come from RISKROUTE_PROPOSER__* settings, the same the service's scheduled proposer uses.
    """
    settings = get_settings()
    given = {"days": days, "backtest_orders": backtest_orders, "late_cost": _late_costs(given=late_cost or [])}
    try:
        proposer = Proposer.model_validate(
            {**settings.proposer.model_dump(), **{k: v for k, v in given.items() if v is not None and v != {}}}
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        raise typer.BadParameter(error["msg"], param_hint=f"--{str(error['loc'][0]).replace('_', '-')}") from None
    _propose(folder=history or settings.history_dir, proposer=proposer, json_line=json_line)


def _late_costs(*, given: list[str]) -> dict[str, float]:
    """`TIER=AMOUNT` pairs as a mapping; a bad pair is an error naming it."""
    from typing import get_args

    from rules.schema import Tier

    costs = {}
    for pair in given:
        tier, _, amount = pair.partition("=")
        try:
            value = float(amount)
        except ValueError:
            value = -1.0
        if tier not in get_args(Tier) or value < 0:
            raise typer.BadParameter(
                f"{pair!r}: expected TIER=AMOUNT with TIER one of {', '.join(get_args(Tier))} and AMOUNT >= 0",
                param_hint="--late-cost",
            )
        costs[tier] = value
    return costs


def _propose(*, folder: Path, proposer: Proposer, history=None, json_line: bool = False) -> None:
    """Lane, capacity, late-penalty and promotion proposals from the champions, filed with their backtests."""
    from serving.proposing.run import NoChampion, propose_all

    settings = get_settings()
    database = _database()
    try:
        run = propose_all(
            database=database,
            folder=folder,
            tracking_uri=settings.mlflow_tracking_uri,
            policy=settings.approvals,
            proposer=proposer,
            history=history,
        )
    except NoChampion as exc:
        raise typer.BadParameter(str(exc), param_hint="model") from None
    finally:
        database.dispose()
    console.print(f"{run.lanes} lane(s) above their peers since {run.since:%Y-%m-%d}")
    console.print(f"{run.nodes} node(s) whose congestion risk at their cap exceeds the target")
    if not any(item["target"] == "weights:late_penalty" for item in run.filed):
        console.print("late penalties: no setting within the guardrail lowers cost + lateness enough to propose")
    _print_filed(filed=run.filed)
    if json_line:
        print(json.dumps({"lanes": run.lanes, "nodes": run.nodes, "filed": run.filed}), flush=True)


def _print_filed(*, filed: list[dict]) -> None:
    """One line per proposal filed or not filed (and why)."""
    for item in filed:
        if "proposal" in item:
            console.print(f"  proposal {item['proposal']}: {item['target']} ({item['summary']})")
        else:
            console.print(f"  {item['target']}: not proposed ({item['skipped']})")


@models_app.command("compare")
def models_compare(
    model: Annotated[str, typer.Option(help="carrier_delay or node_congestion")] = "carrier_delay",
    runs: Annotated[list[str] | None, typer.Option("--runs", help="run ids to compare instead of the aliases")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
) -> None:
    """Champion vs challenger (or given runs) side by side, re-scored on the same test window."""
    from training.compare import COMPARED_METRICS, compare
    from training.tracking import configure

    configure(tracking_uri=tracking_uri)
    result = compare(model_name=model, runs=runs)
    table = Table(title=f"{model}: {result.rows:,} test rows of run {result.window_run_id}")
    table.add_column("model")
    for name in COMPARED_METRICS:
        table.add_column(name, justify="right")
        table.add_column("Δ", justify="right")
    for contender, delta in zip(result.contenders, result.deltas()):
        cells = []
        for name in COMPARED_METRICS:
            cells += [f"{contender.scores[name]:.4f}", f"{delta[name]:+.4f}" if delta[name] else ""]
        table.add_row(contender.label, *cells)
    table.add_row("historical rate", *[c for n in COMPARED_METRICS for c in (f"{result.baseline[n]:.4f}", "")])
    console.print(table)
    console.print("Δ is against the first row; lower is better for log loss, Brier and ECE.")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="one log line per request (latency is in /metrics)")
    ] = False,
) -> None:
    """Start the HTTP service (risk scores, routing decisions, events) on the embedded default or your settings."""
    import uvicorn

    from approvals.db import make_engine, require_current

    # Refuse here, with one clear line, rather than from inside every worker's startup.
    engine = make_engine(url=get_settings().database)
    try:
        require_current(engine=engine)
    finally:
        engine.dispose()
    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=access_log,
    )


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Option(help="migrate to this revision")] = "head",
) -> None:
    """Create or migrate the database named by RISKROUTE_DATABASE_URL (default: the embedded SQLite file)."""
    _upgrade(url=get_settings().database, revision=revision)


def _upgrade(*, url: str, revision: str = "head") -> None:
    from approvals import rulesets
    from approvals.db import head_revision, open_database, transaction, upgrade
    from rules.schema import load_ruleset, seed_ruleset_path

    before, after = upgrade(url=url, revision=revision)
    where = url.split("@")[-1] if "@" in url else url
    if before == after:
        console.print(f"database {where} is at revision {after} (nothing to do)")
    else:
        console.print(f"database {where} migrated from {before or 'empty'} to revision {after}")
    if after != head_revision():
        return
    settings = get_settings()
    database = open_database(url=url)
    try:
        with transaction(sessions=database.sessions) as session:
            seed = load_ruleset(path=settings.ruleset_path or seed_ruleset_path())
            version = rulesets.ensure_seeded(session=session, ruleset=seed)
            active = rulesets.active_number(session=session)
    finally:
        database.dispose()
    console.print(f"active ruleset: version {active} ({version.name})")


def _database():
    """The configured database, migrated (or a clear error saying to migrate it)."""
    from approvals.db import open_database

    return open_database(url=get_settings().database)


@tokens_app.command("create")
def tokens_create(
    role: Annotated[str, typer.Option(help="router, ops_lead, data_scientist or admin")],
    name: Annotated[str, typer.Option(help="who or what holds the token (unique)")],
) -> None:
    """Create a token and print it once (only its hash is kept)."""
    from approvals import tokens
    from approvals.db import transaction

    database = _database()
    try:
        with transaction(sessions=database.sessions) as session:
            token = tokens.create(session=session, name=name, role=role, created_by="cli")
    finally:
        database.dispose()
    errors.print(f"token for {name} ({role}); shown once, store it now:")
    print(token)


@tokens_app.command("revoke")
def tokens_revoke(
    name: Annotated[str, typer.Argument(help="the token's name")],
    reason: Annotated[str, typer.Option(help="why (kept in the audit log)")],
) -> None:
    """Revoke a token by name."""
    from approvals import tokens
    from approvals.db import transaction

    database = _database()
    try:
        with transaction(sessions=database.sessions) as session:
            tokens.revoke(session=session, name=name, actor="cli", reason=reason)
    finally:
        database.dispose()
    console.print(f"token {name} revoked")


@tokens_app.command("list")
def tokens_list() -> None:
    """Every token's name, role and state (never the token)."""
    from approvals import tokens

    database = _database()
    try:
        with database.sessions() as session:
            table = Table("name", "role", "created", "revoked")
            for t in tokens.listing(session=session):
                table.add_row(t.name, t.role, f"{t.created_at:%Y-%m-%d %H:%M}", f"{t.revoked_at or ''}")
    finally:
        database.dispose()
    console.print(table)


@audit_app.command("verify")
def audit_verify() -> None:
    """Walk the audit chain; exit 1 naming the first broken link if anyone edited the record."""
    from approvals import audit

    database = _database()
    try:
        with database.sessions() as session:
            report = audit.verify(session=session)
    finally:
        database.dispose()
    if report.ok:
        console.print(f"audit chain OK: {report.entries} entries, every link intact")
        return
    errors.print(f"[bold red]audit chain BROKEN at entry {report.broken_at}:[/bold red] {report.problem}")
    raise typer.Exit(1)


@db_app.command("current")
def db_current() -> None:
    """The database's revision and the one this version of riskroute needs."""
    from approvals.db import current_revision, head_revision, make_engine

    engine = make_engine(url=get_settings().database)
    try:
        current = current_revision(engine=engine)
    finally:
        engine.dispose()
    head = head_revision()
    state = "up to date" if current == head else "needs `riskroute db upgrade`"
    console.print(f"database at {current or 'no revision'}; code at {head}: {state}")
    if current != head:
        raise typer.Exit(1)


@events_app.command("export")
def events_export(
    out: Annotated[Path, typer.Option(help="file to write (.parquet or .csv), in the events schema")],
    since: Annotated[str | None, typer.Option(help="only events at or after this time (ISO)")] = None,
) -> None:
    """Write the recorded events as an events file that `history validate --kind events` reads."""
    import pandas as pd

    from approvals import journal
    from features.schema import EVENT_COLUMNS

    _check_table_suffix(out=out)
    database = _database()
    try:
        rows = [event for _, event in journal.events_after(sessions=database.sessions, seq=0)]
    finally:
        database.dispose()
    frame = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    for column in ("event_time", "ship_by", "start", "end"):
        frame[column] = pd.to_datetime(frame[column])
    if since is not None:
        frame = frame[frame["event_time"] >= pd.Timestamp(since)]
    _write_table(frame=frame.sort_values("event_time", kind="stable"), out=out)
    console.print(f"{len(frame):,} events written to {out}")


def _ensure_twin(*, folder: Path, settings) -> None:
    """Simulate the default scenario into folder when it is absent or empty; never over someone's files."""
    from features.twin.output import read_manifest

    if read_manifest(folder=folder) is not None:
        return
    if folder.exists() and any(folder.iterdir()):
        raise FeaturesError(
            f"{folder} holds files but no simulated history (no manifest.json); to train on your own history "
            "pass --source file, or give an empty folder for a simulated one"
        )
    simulate(scenario=settings.scenario, out=folder, seed=settings.seed)


def _print_report(*, report) -> None:
    """A table of the model's test figures beside its yardsticks."""
    m = report.metrics
    table = Table(title=f"{report.model_name}: run {report.run_id}, registered version {report.version}")
    table.add_column("forecast")
    for column in ("AUC", "log loss", "Brier", "ECE", "top-decile lift"):
        table.add_column(column, justify="right")
    names = [("test", "model"), ("base", "base rate (train)"), ("baseline", "historical rate")]
    names += [("oracle", "oracle (twin, decision time)"), ("true", "clairvoyant p_true (info)")]
    for key, label in names:
        if f"{key}_logloss" not in m:
            continue
        table.add_row(
            label,
            *(f"{m.get(f'{key}_{k}', float('nan')):.4f}" for k in ("auc", "logloss", "brier", "ece")),
            f"{m.get(f'{key}_lift_top_decile', float('nan')):.2f}",
        )
    console.print(table)
    w = report.windows
    console.print(
        f"  windows: train < {w.valid_start:%Y-%m-%d}, valid {w.valid_start:%Y-%m-%d}..{w.valid_end:%Y-%m-%d}, "
        f"test {w.test_start:%Y-%m-%d}..{w.test_end:%Y-%m-%d} (embargo {w.embargo.days} d, the outcome latency); "
        f"rows {report.rows}; base rate {m['base_rate']:.2%}, test rate {m['test_rate']:.2%}"
    )
    if "logloss_vs_oracle" in m:
        console.print(
            f"  log loss model/oracle {m['logloss_vs_oracle']:.3f}, AUC gap to oracle {m['auc_gap_oracle']:+.4f}"
        )
    verdict = "beats" if m["beats_baseline"] else "does NOT beat"
    console.print(f"  the model {verdict} the historical-rate baseline on log loss")
    if report.unavailable:
        console.print(f"  features this history cannot provide (left out): {', '.join(report.unavailable)}")


def _json_line(*, reports) -> str:
    """Every run's figures as one JSON object, with flat MODEL_metric keys for scripts."""
    figures: dict[str, object] = {"runs": []}
    for report in reports:
        figures["runs"].append(
            {"model": report.model_name, "run_id": report.run_id, "version": report.version, "rows": report.rows}
        )
        m = report.metrics
        prefix = report.model_name
        figures.update(
            {
                f"{prefix}_auc": m["test_auc"],
                f"{prefix}_logloss": m["test_logloss"],
                f"{prefix}_brier": m["test_brier"],
                f"{prefix}_ece": m["test_ece"],
                f"{prefix}_lift": m["test_lift_top_decile"],
                f"{prefix}_base_rate": m["base_rate"],
                f"{prefix}_baseline_auc": m["baseline_auc"],
                f"{prefix}_baseline_logloss": m["baseline_logloss"],
            }
        )
        if "oracle_logloss" in m:
            figures.update(
                {
                    f"{prefix}_oracle_auc": m["oracle_auc"],
                    f"{prefix}_oracle_logloss": m["oracle_logloss"],
                    f"{prefix}_true_auc": m["true_auc"],
                    f"{prefix}_true_logloss": m["true_logloss"],
                }
            )
    return json.dumps(figures)


def main() -> None:
    """Entry point: domain errors become one clear message and exit code 2, never a traceback."""
    from approvals.errors import ApprovalsError
    from rules.errors import RulesError
    from training.errors import TrainingError

    try:
        app()
    except (FeaturesError, TrainingError, RulesError, ApprovalsError) as exc:
        errors.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:
        # MLflow is imported only by the commands that need it, so it is recognised by name here.
        if type(exc).__name__ != "MlflowException":
            raise
        errors.print(f"[bold red]error:[/bold red] the MLflow store answered: {exc}", highlight=False)
        sys.exit(2)
