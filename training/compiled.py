"""Risk models compiled to native code for the hot path: the same trees, without an interpreter walking them.

`Booster.predict` walks every tree for every row through LightGBM's generic predictor; on a live
request of 50 candidates that walk is most of the model's time. lleaves compiles the saved model
with LLVM into one native function per forest. A compiled forest must agree with its booster: every
compile is checked against `Booster.predict` on probe rows (missing values, every category,
extreme numbers) and refused if any prediction differs by more than 1e-9. The object code is cached
by the forest's content and the host CPU, so a model version compiles once per machine; a cache
file is written whole (temporary file, then rename) or not at all, and loaded only if its sealed
checksum matches (LLVM would abort the process on damaged object code, not raise).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np

from training.errors import ModelLoadError
from training.model import RiskModel

AGREEMENT = 1e-9  # largest difference from Booster.predict a compiled forest may show on the probe rows
PROBE_ROWS = 512


class CompileError(ModelLoadError):
    """A model could not be compiled, or its compiled forest disagrees with the booster."""


@dataclass(frozen=True)
class CompiledForest:
    """A forest compiled to native code: P(late) before calibration, as `Booster.predict` gives it."""

    native: object  # lleaves.Model
    source: Path

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Uncalibrated probabilities for the rows of X, on the calling thread."""
        return self.native.predict(X, n_jobs=1)


def compile_model(*, model: RiskModel, cache_dir: Path) -> CompiledForest:
    """The model's forest compiled (or loaded from the cache), checked against its booster."""
    try:
        import lleaves
        from llvmlite import binding
    except ImportError as exc:  # the service still scores with Booster.predict
        raise CompileError(f"model compilation is not available here: {exc}") from exc
    text = model.booster_.model_to_string(num_iteration=model.best_iteration_)
    host = f"{binding.get_host_cpu_name()}:{binding.get_host_cpu_features().flatten()}"
    digest = hashlib.sha256(f"{text}\n{host}\nlleaves {version('lleaves')}".encode())
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{model.model_name}-{digest.hexdigest()[:20]}"
    source, binary = cache_dir / f"{stem}.txt", cache_dir / f"{stem}.o"
    _write_whole(path=source, data=text.encode())
    try:
        forest = _load(lleaves=lleaves, source=source, binary=binary)
        _check(model=model, forest=forest)
    except CompileError:
        # Cached code that disagrees (or cannot load) is compiled afresh, once.
        binary.unlink(missing_ok=True)
        forest = _load(lleaves=lleaves, source=source, binary=binary)
        _check(model=model, forest=forest)
    return forest


def _load(*, lleaves, source: Path, binary: Path) -> CompiledForest:
    """Compile the model text to native code, or load the cached object code when it is intact."""
    native = lleaves.Model(model_file=str(source))
    seal = binary.with_name(binary.name + ".sha256")
    try:
        # LLVM aborts the whole process on a damaged object file: only code whose seal matches is loaded.
        if binary.exists() and seal.exists() and seal.read_text() == _sha256(binary):
            native.compile(cache=str(binary))
        else:
            # lleaves writes its cache file as it goes: compile under a temporary name, seal, then rename into place.
            with tempfile.TemporaryDirectory(dir=binary.parent) as scratch:
                partial = Path(scratch) / binary.name
                native.compile(cache=str(partial))
                _write_whole(path=seal, data=_sha256(partial).encode())
                os.replace(partial, binary)
    except Exception as exc:  # noqa: BLE001 - LLVM reports failures with many exception types
        raise CompileError(f"{source.name}: compiling failed: {type(exc).__name__}: {exc}") from exc
    return CompiledForest(native=native, source=source)


def _sha256(path: Path) -> str:
    """The hex SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check(*, model: RiskModel, forest: CompiledForest) -> None:
    """Refuse a compiled forest whose predictions differ from the booster's on probe rows."""
    X = probe_rows(model=model, n=PROBE_ROWS)
    expected = model.booster_.predict(X, num_iteration=model.best_iteration_, num_threads=1)
    try:
        got = forest.predict(X)
    except Exception as exc:  # noqa: BLE001 - a binary that cannot run is as bad as a wrong one
        raise CompileError(f"{forest.source.name}: the compiled forest failed on probe rows: {exc}") from exc
    worst = float(np.max(np.abs(got - expected))) if len(X) else 0.0
    if not worst <= AGREEMENT:
        raise CompileError(f"{forest.source.name}: compiled predictions differ from Booster.predict by {worst:.3g}")


def probe_rows(*, model: RiskModel, n: int) -> np.ndarray:
    """Rows that exercise the forest: every category code, missing values, and numbers of every scale."""
    rng = np.random.default_rng(20_261_128)
    X = np.empty((n, len(model.features_)))
    for j, name in enumerate(model.features_):
        if name in model.codes_:
            X[:, j] = rng.integers(0, max(len(model.categories_[name]), 1), n)
        else:
            X[:, j] = rng.normal(0.0, 1.0, n) * 10.0 ** rng.integers(-2, 4, n)
    X[rng.random(X.shape) < 0.1] = np.nan
    return X


def _write_whole(*, path: Path, data: bytes) -> None:
    """Write a file so that readers see all of it or none of it."""
    if path.exists() and path.read_bytes() == data:
        return
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
        handle.write(data)
    os.chmod(handle.name, 0o644)
    os.replace(handle.name, path)
