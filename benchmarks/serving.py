"""Benchmark: the risk-score endpoint beside `mlflow models serve` and the raw model, and routing decisions.

On the embedded default (the `make run` history, features and `@champion` models; made first if
missing) it starts two servers, each one uvicorn worker with OMP_NUM_THREADS=1:

- riskroute (`riskroute serve`), asked for the risk of 50 candidates: one order's real options
  (nodes x carrier services to one destination region, at the history's end), described as a
  routing engine describes them; riskroute looks up their online features and scores both models;
- `mlflow models serve` on the carrier-delay `@champion`, given the same 50 candidates' features
  already computed (it has no feature store, so it does strictly less work).

riskroute is timed once it scores with its compiled models (it compiles them in the background).
Both are called alternately in blocks from one keep-alive client (the standard library's
`http.client`, the same for both), so machine noise falls on both alike. The raw
`Booster.predict` of both models on the same 50 rows is the reference the issue names; the
compiled forests' time on those rows is printed beside it. Routing decisions are
timed for a 3-line order with 20 candidate nodes x 3 services, in-process and over HTTP. Last, the
risk scores are timed in-process twice: quiet, and with three network events applied before each
request, as a live service sees them; how many events per second the online features take in (a
worker catching up on the journal); and the stall of a full garbage collection beside the loaded
runtime, as loaded and after the service's startup freeze. Ends with one line of JSON.

    .venv/bin/python benchmarks/serving.py [--data-dir data] [--requests 2000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before LightGBM loads: the same setting as both servers
# Run as a script, this file's folder comes first on sys.path and its name would hide the serving package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(*, port: int, path: str, process: subprocess.Popen, seconds: float) -> None:
    """Block until GET path answers 200, or fail naming the server."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server on port {port} exited with code {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server on port {port} did not answer {path} within {seconds:.0f} s")


class Caller:
    """One keep-alive connection posting one prepared body."""

    def __init__(self, *, port: int, path: str, body: dict, headers: dict | None = None) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.path = path
        self.body = json.dumps(body).encode()
        self.headers = {"Content-Type": "application/json", **(headers or {})}

    def _post(self) -> http.client.HTTPResponse:
        self.connection.request("POST", self.path, body=self.body, headers=self.headers)
        return self.connection.getresponse()

    def __call__(self) -> bytes:
        try:
            response = self._post()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # The server closed a connection left idle past its keep-alive while the other server was timed.
            self.connection.close()
            response = self._post()
        payload = response.read()
        if response.status != 200:
            raise SystemExit(f"{self.path} answered {response.status}: {payload[:300]!r}")
        return payload


def timed(call, n: int) -> list[float]:
    """Milliseconds of n calls."""
    out = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000)
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def ensure_default_run(*, data_dir: Path) -> None:
    """The `make run` outputs (history, features, champions), made now if missing."""
    from training.tracking import alias_version, configure

    configure(tracking_uri=None)
    have_models = all(alias_version(model_name=m, alias="champion") for m in ("carrier_delay", "node_congestion"))
    if have_models and (data_dir / "history" / "default").exists():
        return
    print("no embedded default yet: running `riskroute run --no-serve` first", flush=True)
    subprocess.run([str(BIN / "riskroute"), "run", "--no-serve", "--data-dir", str(data_dir)], check=True)


def order_candidates(*, history, n: int) -> tuple[pd.DataFrame, pd.Timestamp]:
    """n options of one order, as a routing engine would ask: the network's most used (node, carrier, service)
    combinations, each shipping to the busiest destination region, decided at the history's end."""
    shipments = history.shipments
    decided = shipments["allocated_at"].max().floor("min")
    recent = shipments[shipments["allocated_at"] > decided - pd.Timedelta(days=7)]
    region = recent["dest_region"].value_counts().index[0]
    combos = recent.groupby(["node_id", "carrier", "service"], observed=True).size().sort_values(ascending=False)
    rows = recent.set_index(["node_id", "carrier", "service"]).loc[combos.head(n).index]
    rows = rows.groupby(level=[0, 1, 2], sort=False).tail(1).reset_index()
    # The node's typical distance to the region, where it has shipped there.
    into = recent[recent["dest_region"] == region].groupby("node_id", observed=True)["distance_km"].median()
    rows["distance_km"] = rows["node_id"].map(into).fillna(rows["distance_km"]).astype(float)
    rows["dest_region"] = region
    # Ship-by and promise move with the decision: same offsets from the order as the real shipment had.
    offset = decided - rows["allocated_at"]
    rows["ship_by"] = rows["ship_by"] + offset
    rows["promised_delivery"] = (rows["promised_delivery"] + offset).dt.normalize()
    rows["allocated_at"] = decided
    return rows, decided


def risk_body(*, rows: pd.DataFrame) -> dict:
    """The candidates as a routing engine sends them."""
    return {
        "candidates": [
            {
                "node_id": r.node_id,
                "node_type": r.node_type,
                "origin_region": r.origin_region,
                "carrier": r.carrier,
                "service": r.service,
                "dest_region": r.dest_region,
                "distance_km": float(r.distance_km),
                "ship_by": r.ship_by.isoformat(),
                "promised_delivery": r.promised_delivery.date().isoformat(),
                "decided_at": r.allocated_at.isoformat(),
            }
            for r in rows.itertuples()
        ]
    }


def decision_body(*, history, decided: pd.Timestamp) -> dict:
    """A 3-line order with 20 candidate nodes x 3 carrier services each."""
    shipments = history.shipments
    recent = shipments[shipments["allocated_at"] > decided - pd.Timedelta(days=7)]
    region = recent["dest_region"].value_counts().index[0]
    nodes = recent.drop_duplicates("node_id").head(20)
    services = recent.groupby(["carrier", "service"], observed=True).size().sort_values(ascending=False).head(3).index
    ship_by = (decided + pd.Timedelta(hours=8)).isoformat()
    rng = np.random.default_rng(7)
    lines = [{"line_id": f"L{i}", "sku": f"SKU{i}", "quantity": 1} for i in range(1, 4)]
    return {
        "order": {
            "order_id": "bench-order",
            "dest_region": region,
            "tier": "plus",
            "promised_delivery": (decided + pd.Timedelta(days=4)).date().isoformat(),
            "decided_at": decided.isoformat(),
            "lines": lines,
        },
        "candidates": [
            {
                "node_id": node.node_id,
                "node_type": node.node_type,
                "region": node.origin_region,
                "handling_cost": round(float(rng.uniform(0.8, 3.0)), 2),
                "available": {line["line_id"]: int(rng.integers(0, 3)) for line in lines},
                "distance_km": float(node.distance_km),
                "options": [
                    {
                        "carrier": carrier,
                        "service": service,
                        "cost": round(float(rng.uniform(5, 14)), 2),
                        "transit_days": {"next_day": 1, "two_day": 2}.get(service, 3),
                        "ship_by": ship_by,
                    }
                    for carrier, service in services
                ],
            }
            for node in nodes.itertuples()
        ],
    }


def live_events(*, history, after: pd.Timestamp):
    """An endless stream of events after `after`, as the network sends them: one every 2 s, each shipment
    allocated, handed over ten events later and delivered ten events after that."""
    recent = history.shipments.tail(500).to_dict("records")
    columns = ("node_id", "node_type", "carrier", "service", "origin_region", "dest_region")
    clock, i = after, 0
    while True:
        i += 1
        clock += pd.Timedelta(seconds=2)
        kind, number = [("allocated", i), ("handed_over", i - 10), ("delivered", i - 20)][i % 3]
        if number <= 0:
            continue
        event = {"event_id": f"live-{i}", "event_type": kind, "event_time": clock, "shipment_id": f"live-{number}"}
        if kind == "allocated":
            shipment = recent[number % len(recent)]
            event.update({c: shipment[c] for c in columns})
            promised = clock.normalize() + pd.Timedelta(days=3)
            event.update(ship_by=clock + pd.Timedelta(hours=6), promised_delivery=promised)
        yield event


def in_process_risk_ms(*, runtime, body, history, n: int) -> tuple[list[float], list[float]]:
    """Milliseconds of n risk-score answers in-process: quiet, then with three events applied before each."""
    from serving import runtime as service

    score = lambda: service.score_candidates(runtime=runtime, body=body, request_id="bench")  # noqa: E731
    timed(score, 200)
    quiet = timed(score, n)
    events = live_events(history=history, after=runtime.state.last_event_at)
    busy = []
    for _ in range(n):
        with runtime.state_lock:  # as the service applies a batch of events: ingested, then settled
            for _ in range(3):
                runtime.state.ingest(next(events))
            runtime.state.settle()
        started = time.perf_counter()
        score()
        busy.append((time.perf_counter() - started) * 1000)
    return quiet, busy


def events_per_s(*, runtime, history, n: int = 20_000) -> float:
    """Events applied to the online features per second, in batches of 1,000 as a worker catches up on the journal."""
    events = live_events(history=history, after=runtime.state.last_event_at)
    batches = [[next(events) for _ in range(1_000)] for _ in range(n // 1_000)]
    started = time.perf_counter()
    with runtime.state_lock:
        for batch in batches:
            for event in batch:
                runtime.state.ingest(event)
            runtime.state.settle()
    return n / (time.perf_counter() - started)


def full_collection_ms() -> tuple[float, float]:
    """How long a full garbage collection stalls a process holding the runtime: as loaded, then after the
    service's startup freeze (the median of five each)."""
    import gc

    from serving.app import spare_from_full_collections

    def median_pause() -> float:
        pauses = []
        for _ in range(5):
            started = time.perf_counter()
            gc.collect()
            pauses.append((time.perf_counter() - started) * 1000)
        return float(np.median(pauses))

    loaded = median_pause()
    spare_from_full_collections()
    try:
        return loaded, median_pause()
    finally:
        gc.unfreeze()


def predict_ms(*, rows: pd.DataFrame, history, n: int, compiled_dir: Path) -> tuple[float, float, pd.DataFrame]:
    """p50 of Booster.predict and of the compiled forest, both champions summed, on the 50 rows;
    and the carrier model's feature table."""
    from features.offline import features_for_rows, prepare
    from training.compiled import compile_model
    from training.tracking import load_registered

    features = features_for_rows(
        rows=rows, streams=prepare(history=history).streams, node_days=history.node_days, notices=history.notices
    )
    booster_ms, compiled_ms = 0.0, 0.0
    table = None
    for name in ("carrier_delay", "node_congestion"):
        model = load_registered(model_name=name, alias="champion").model
        matrix = model.encode(features)
        forest = compile_model(model=model, cache_dir=compiled_dir)  # the server's cache: compiled once for both
        booster = lambda m=model, x=matrix: m.booster_.predict(x, num_iteration=m.best_iteration_, num_threads=1)  # noqa: E731
        native = lambda f=forest, x=matrix: f.predict(x)  # noqa: E731
        timed(booster, 200)
        timed(native, 200)
        booster_ms += percentile(timed(booster, n), 50)
        compiled_ms += percentile(timed(native, n), 50)
        if name == "carrier_delay":
            table = pd.DataFrame({f: features[f] for f in model.features_})
    return booster_ms, compiled_ms, table


def wait_compiled(*, port: int, seconds: float) -> None:
    """Block until riskroute scores with its compiled models (it compiles them in the background)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/readyz")
        compiled = json.loads(connection.getresponse().read()).get("models_compiled", {})
        if compiled and all(compiled.values()):
            return
        time.sleep(0.5)
    raise SystemExit(f"riskroute did not compile its models within {seconds:.0f} s (see its log)")


def router_token(*, data_dir: Path) -> dict[str, str]:
    """A router token for this run (the scoring and routing endpoints need one)."""
    from approvals import tokens
    from approvals.db import open_database, transaction
    from serving.settings import Settings

    database = open_database(url=Settings(data_dir=data_dir).database)
    try:
        with transaction(sessions=database.sessions) as session:
            token = tokens.create(
                session=session, name=f"benchmark-{time.time_ns():x}", role="router", created_by="benchmark"
            )
    finally:
        database.dispose()
    return {"Authorization": f"Bearer {token}"}


def start_riskroute(*, port: int, data_dir: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RISKROUTE_DATA_DIR": str(data_dir)}
    command = [str(BIN / "riskroute"), "serve", "--port", str(port), "--workers", "1"]
    return subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)


def start_mlflow(*, port: int, tracking_uri: str, log: Path) -> subprocess.Popen:
    # MLflow starts its server by running `uvicorn` from PATH: the one of this environment.
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": tracking_uri, "PATH": path}
    command = [
        str(BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        "models:/carrier_delay@champion",
        "--env-manager",
        "local",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    return subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per server")
    args = parser.parse_args()
    os.chdir(ROOT)  # the embedded default's paths (data/, mlruns/) are relative to the project

    from features.history import load_history
    from serving import runtime as service
    from serving.schemas import DecisionCreate, RiskScoresCreate
    from serving.settings import Settings
    from training.tracking import configure

    ensure_default_run(data_dir=args.data_dir)
    tracking_uri = configure(tracking_uri=None)
    subprocess.run(
        [str(BIN / "riskroute"), "db", "upgrade"],
        check=True,
        env={**os.environ, "RISKROUTE_DATA_DIR": str(args.data_dir)},
    )
    history, _ = load_history(path=args.data_dir / "history" / "default")
    rows, decided = order_candidates(history=history, n=50)
    settings = Settings(data_dir=args.data_dir)
    raw_ms, compiled_ms, carrier_table = predict_ms(
        rows=rows, history=history, n=args.requests, compiled_dir=settings.compiled_dir
    )
    mlflow_body = {"dataframe_split": json.loads(carrier_table.to_json(orient="split", index=False))}

    logs = Path(tempfile.mkdtemp(prefix="riskroute-serving-bench-"))
    ours, theirs = free_port(), free_port()
    servers = [
        start_riskroute(port=ours, data_dir=args.data_dir, log=logs / "riskroute.log"),
        start_mlflow(port=theirs, tracking_uri=tracking_uri, log=logs / "mlflow.log"),
    ]
    try:
        wait_until(port=ours, path="/readyz", process=servers[0], seconds=300)
        wait_until(port=theirs, path="/ping", process=servers[1], seconds=300)
        wait_compiled(port=ours, seconds=600)
        auth = router_token(data_dir=args.data_dir)
        riskroute = Caller(port=ours, path="/v1/risk-scores", body=risk_body(rows=rows), headers=auth)
        mlflow = Caller(port=theirs, path="/invocations", body=mlflow_body)
        answer = json.loads(riskroute())
        if answer["degraded"]:
            raise SystemExit(f"riskroute answered in degraded mode: {answer['degraded_reasons']}")
        theirs_risk = np.array(json.loads(mlflow())["predictions"], dtype=float)
        ours_risk = np.array([s["carrier_delay_risk"] for s in answer["scores"]])
        agreement = float(np.max(np.abs(theirs_risk - ours_risk)))
        ours_ms, theirs_ms = [], []
        timed(riskroute, 200)
        timed(mlflow, 200)
        block = 100
        for _ in range(args.requests // block):
            riskroute()  # untimed: reopens a connection idle past its keep-alive
            ours_ms += timed(riskroute, block)
            mlflow()
            theirs_ms += timed(mlflow, block)

        decide = Caller(
            port=ours, path="/v1/routing/decisions", body=decision_body(history=history, decided=decided), headers=auth
        )
        timed(decide, 100)
        decision_http = timed(decide, max(args.requests // 2, 200))
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()

    runtime = service.start(settings=settings)
    while not all(runtime.models.compiled().values()):  # compiled code is cached: this takes a moment
        time.sleep(0.1)
    body = DecisionCreate.model_validate(decision_body(history=history, decided=decided))
    timed(lambda: service.decide(runtime=runtime, body=body, request_id="bench"), 100)
    decision_in_process = timed(lambda: service.decide(runtime=runtime, body=body, request_id="bench"), 1000)
    # Last: the events change the runtime's online features.
    quiet_ms, busy_ms = in_process_risk_ms(
        runtime=runtime, body=RiskScoresCreate.model_validate(risk_body(rows=rows)), history=history, n=args.requests
    )
    shutil.rmtree(logs, ignore_errors=True)
    ingest_rate = events_per_s(runtime=runtime, history=history)
    pause_ms, frozen_pause_ms = full_collection_ms()

    figures = {
        "candidates": len(rows),
        "requests": len(ours_ms),
        "riskroute_p50_ms": round(percentile(ours_ms, 50), 3),
        "riskroute_p99_ms": round(percentile(ours_ms, 99), 3),
        "mlflow_p50_ms": round(percentile(theirs_ms, 50), 3),
        "mlflow_p99_ms": round(percentile(theirs_ms, 99), 3),
        "raw_predict_ms": round(raw_ms, 3),
        "speedup_vs_mlflow": round(percentile(theirs_ms, 50) / percentile(ours_ms, 50), 2),
        "endpoint_over_raw": round(percentile(ours_ms, 50) / raw_ms, 2),
        "compiled_predict_ms": round(compiled_ms, 3),
        "raw_over_compiled_predict": round(raw_ms / compiled_ms, 2),
        "endpoint_over_compiled_predict": round(percentile(ours_ms, 50) / compiled_ms, 2),
        "max_abs_risk_difference_vs_mlflow": agreement,
        "decision_p50_ms_in_process": round(percentile(decision_in_process, 50), 3),
        "decision_p50_ms_http": round(percentile(decision_http, 50), 3),
        "decision_p99_ms_http": round(percentile(decision_http, 99), 3),
        "decisions_per_s_in_process": round(1000 / percentile(decision_in_process, 50), 1),
        "decisions_per_s_http": round(1000 / percentile(decision_http, 50), 1),
        "risk_scores_in_process_ms": round(percentile(quiet_ms, 50), 3),
        "risk_scores_with_events_in_process_ms": round(percentile(busy_ms, 50), 3),
        "with_events_over_quiet": round(percentile(busy_ms, 50) / percentile(quiet_ms, 50), 2),
        "events_applied_per_s": round(ingest_rate),
        "full_gc_pause_ms": round(pause_ms, 3),
        "full_gc_pause_frozen_ms": round(frozen_pause_ms, 4),
    }
    print(f"{'':34}{'p50 ms':>10}{'p99 ms':>10}")
    print(
        f"{'riskroute /v1/risk-scores (50)':34}{figures['riskroute_p50_ms']:>10.3f}{figures['riskroute_p99_ms']:>10.3f}"
    )
    print(f"{'mlflow models serve (50 rows)':34}{figures['mlflow_p50_ms']:>10.3f}{figures['mlflow_p99_ms']:>10.3f}")
    print(f"{'raw Booster.predict, both models':34}{figures['raw_predict_ms']:>10.3f}")
    print(f"mlflow p50 / riskroute p50: {figures['speedup_vs_mlflow']:.2f}x (target >= 3)")
    print(f"{'compiled forests, both models':34}{figures['compiled_predict_ms']:>10.3f}")
    print(f"riskroute p50 / raw predict: {figures['endpoint_over_raw']:.2f}x (target <= 3)")
    print(
        f"Booster.predict / compiled forests: {figures['raw_over_compiled_predict']:.2f}x; "
        f"riskroute p50 / compiled forests: {figures['endpoint_over_compiled_predict']:.2f}x"
    )
    print(f"largest carrier-delay risk difference riskroute vs mlflow: {agreement:.2e}")
    print(
        f"routing decision, 3 lines x 20 nodes x 3 services: p50 {figures['decision_p50_ms_in_process']:.3f} ms "
        f"in-process, {figures['decision_p50_ms_http']:.3f} ms over HTTP (target <= 5)"
    )
    print(
        f"risk scores in-process: p50 {figures['risk_scores_in_process_ms']:.3f} ms quiet, "
        f"{figures['risk_scores_with_events_in_process_ms']:.3f} ms with events arriving between requests "
        f"({figures['with_events_over_quiet']:.2f}x)"
    )
    print(f"events applied to the online features: {ingest_rate:,.0f} per second (batches of 1,000)")
    print(
        f"a full garbage collection beside the loaded runtime: {pause_ms:.1f} ms; "
        f"after the service's startup freeze: {frozen_pause_ms:.4f} ms"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
