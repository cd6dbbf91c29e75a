"""Writing a twin run to disk: one folder of Parquet tables plus a manifest, swapped in atomically."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from features.twin.scenario import Scenario
from features.twin.simulate import SimulationResult

MANIFEST = "manifest.json"
# Columns only evaluation may read live under truth/, away from anything features load.
TRUTH_FOLDER = "truth"


def write_simulation(*, result: SimulationResult, scenario: Scenario, seed: int, out_dir: Path) -> dict:
    """Write every table of a run to out_dir (replacing it whole) and return the manifest."""
    tables = {
        "shipments": result.shipments,
        "orders": result.orders,
        "order_lines": result.order_lines,
        "candidates": result.candidates,
        "node_waves": result.node_waves,
        "node_days": result.node_days,
        "notices": result.notices,
        "nodes": result.network.nodes_frame(),
        "zones": result.network.zones_frame(),
        "services": result.network.services_frame(),
        f"{TRUTH_FOLDER}/shipment_truth": result.truth,
        f"{TRUTH_FOLDER}/disruptions": result.disruptions,
    }
    out_dir = out_dir.resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.staging-"))
    try:
        files = {}
        for name, frame in tables.items():
            target = staging / f"{name}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(target, index=False, compression="zstd")
            files[f"{name}.parquet"] = {"rows": len(frame), "sha256": _sha256(target)}
        manifest = {
            "kind": "riskroute-twin-history",
            "scenario": scenario.model_dump(mode="json"),
            "seed": seed,
            "stats": result.stats,
            "files": files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        _swap_in(staging=staging, out_dir=out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return manifest


def read_manifest(*, folder: Path) -> dict | None:
    """The manifest of a twin folder, or None when the folder holds no complete twin run."""
    path = folder / MANIFEST
    if not path.exists():
        return None
    return json.loads(path.read_text())


def read_truth(*, folder: Path) -> pd.DataFrame:
    """The twin's per-shipment probabilities; for evaluation code only."""
    return pd.read_parquet(folder / TRUTH_FOLDER / "shipment_truth.parquet")


def _swap_in(*, staging: Path, out_dir: Path) -> None:
    """Replace out_dir by staging so that a reader sees either the old run or the new one."""
    if out_dir.exists():
        retired = out_dir.with_name(f".{out_dir.name}.retired")
        if retired.exists():
            shutil.rmtree(retired)
        out_dir.rename(retired)
        staging.rename(out_dir)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(out_dir)


def _sha256(path: Path) -> str:
    """Hex digest of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
