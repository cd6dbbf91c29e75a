"""Writing a twin run to disk: one folder of Parquet tables plus a manifest, swapped in atomically."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from features.storage import staged_folder
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
    with staged_folder(out_dir=out_dir) as staging:
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


def _sha256(path: Path) -> str:
    """Hex digest of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
