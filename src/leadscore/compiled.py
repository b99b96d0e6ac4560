"""A compiled copy of a model's trees for batch scoring (the `[fast]` extra: tl2cgen and gcc).

The bundle (LightGBM text + JSON) stays the source of truth. The compiled library is a cache under
`LEADSCORE_HOME/cache/compiled/<model text's SHA-256>/`, built from that text with tl2cgen (C code
from treelite's reading of the LightGBM model, compiled by the system compiler), checked against
its manifest's SHA-256 before it is ever loaded (a damaged entry is rebuilt, not loaded), and
held to LightGBM's own raw scores on the first rows it predicts: more than 1e-9 apart and it is
dropped for this model, with LightGBM scoring as before. No extra, no compiler, a compile error,
a failed check: LightGBM scores, with one log line saying why.

Why: measured on the benchmark model (124 trees, 26 features), the compiled trees give the same
raw scores bit for bit and walk them ~2x faster than `Booster.predict` on one thread, and ctypes
releases the GIL, so two scoring threads use both cores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

log = logging.getLogger(__name__)

CACHE_DIR = Path("cache") / "compiled"
LIBRARY = "model.so"
MANIFEST = "manifest.json"
TOLERANCE = 1e-9  # the largest difference from LightGBM's raw score the compiled model may show
CHECK_ROWS = 4096  # rows compared with LightGBM the first time the compiled model predicts
FORMAT = 1
# tl2cgen's code generation: thresholds as integer bins ("quantize": the same comparisons, so
# the same leaves; ~15% faster than comparing doubles on the benchmark model), and the trees
# split over a few C files that compile in parallel
CODEGEN = {"quantize": 1}


class CompiledModel:
    """The compiled trees of one model: raw margins, as `Booster.predict(raw_score=True)`.

    tl2cgen's predictor may be used by one thread at a time, so each thread loads its own
    (the same library, opened once by the system loader). The first call is checked against
    LightGBM; a model that fails the check answers with LightGBM's scores from then on.
    """

    def __init__(self, library: Path, booster: lgb.Booster, key: str) -> None:
        self.library = library
        self.booster = booster
        self.key = key
        self._local = threading.local()
        self._lock = threading.Lock()
        self.checked = False
        self.broken = False

    def _predictor(self) -> Any:
        predictor = getattr(self._local, "predictor", None)
        if predictor is None:
            import tl2cgen

            predictor = self._local.predictor = tl2cgen.Predictor(str(self.library), nthread=1)
        return predictor

    def margins(self, matrix: np.ndarray) -> np.ndarray:
        """The compiled trees' raw scores, unchecked (tests and the check use it)."""
        import tl2cgen

        rows = np.ascontiguousarray(matrix, dtype=np.float64)
        out = self._predictor().predict(tl2cgen.DMatrix(rows, dtype="float64"), pred_margin=True)
        return np.asarray(out, dtype=np.float64).reshape(len(rows))

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Raw margins (n,); LightGBM's when this model failed its check."""
        if self.broken:
            return np.asarray(self.booster.predict(matrix, raw_score=True))
        if not self.checked:
            with self._lock:
                if not self.checked:
                    self.check(matrix[:CHECK_ROWS])
        if self.broken:
            return np.asarray(self.booster.predict(matrix, raw_score=True))
        return self.margins(matrix)

    def check(self, matrix: np.ndarray) -> bool:
        """Compare with LightGBM on `matrix`; mark the model broken past `TOLERANCE`."""
        try:
            ours = self.margins(matrix)
        except Exception as exc:  # a library that loads but fails: LightGBM scores
            log.warning("the compiled model failed (%s); scoring with LightGBM", exc)
            self.broken = True
            self.checked = True
            return False
        theirs = np.asarray(self.booster.predict(matrix, raw_score=True, num_threads=1))
        gap = float(np.max(np.abs(ours - theirs))) if len(ours) else 0.0
        if not gap <= TOLERANCE:  # NaN counts as a failure too
            log.warning(
                "the compiled model differs from LightGBM by %.3g (more than %g): scoring with "
                "LightGBM", gap, TOLERANCE
            )
            self.broken = True
        self.checked = True
        return not self.broken


def model_key(booster: lgb.Booster, meta: dict[str, Any] | None = None) -> str:
    """The cache key: the SHA-256 of the model text (the bundle's checksum when it has one)."""
    known = (meta or {}).get("model_sha256")
    if isinstance(known, str) and len(known) == 64:
        return known
    return hashlib.sha256(booster.model_to_string().encode("utf-8")).hexdigest()


def cache_root(home: Path | None = None) -> Path:
    if home is None:
        from leadscore.config import get_settings

        home = get_settings().resolved_home()
    return home / CACHE_DIR


def available() -> str | None:
    """None when the extra is installed; else why not (one line)."""
    try:
        import tl2cgen  # noqa: F401
        import treelite  # noqa: F401
    except ImportError as exc:
        return f"the [fast] extra is not installed ({exc.name})"
    return None


def cached_model(
    booster: lgb.Booster, meta: dict[str, Any] | None = None, *, home: Path | None = None
) -> CompiledModel | None:
    """The compiled model when the cache already holds it (milliseconds), else None."""
    if available() is not None:
        return None
    try:
        key = model_key(booster, meta)
        library = _cached(cache_root(home) / key, key)
    except Exception:  # a cache that cannot be read is a cache miss
        log.debug("compiled model cache unreadable", exc_info=True)
        return None
    return CompiledModel(library, booster, key) if library is not None else None


def compile_model(
    booster: lgb.Booster,
    meta: dict[str, Any] | None = None,
    *,
    home: Path | None = None,
    toolchain: str | None = None,
) -> CompiledModel | None:
    """The compiled model for `booster`, from the cache or built now (seconds: a C compile);
    None, with a log line saying why, when it cannot be had. Never raises."""
    why = available()
    if why is not None:
        log.info("scoring with LightGBM: %s", why)
        return None
    try:
        key = model_key(booster, meta)
        folder = cache_root(home) / key
        library = _cached(folder, key, quiet=True)  # `cached_model` said so already
        if library is None:
            library = _build(booster, folder, key, toolchain or os.environ.get("CC", "gcc"))
        return CompiledModel(library, booster, key)
    except Exception as exc:  # any failure to build: LightGBM does the work, as without the extra
        log.warning("could not compile the model (%s: %s); scoring with LightGBM",
                    type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
        return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    import tl2cgen
    import treelite

    return {"tl2cgen": tl2cgen.__version__, "treelite": treelite.__version__}


def _cached(folder: Path, key: str, quiet: bool = False) -> Path | None:
    """The cached library when its manifest vouches for it (same model, tools, bytes)."""
    library, manifest = folder / LIBRARY, folder / MANIFEST
    if not manifest.is_file() or not library.is_file():
        return None
    try:
        saved = json.loads(manifest.read_text(encoding="utf-8"))
        good = (
            isinstance(saved, dict)
            and saved.get("format") == FORMAT
            and saved.get("model_sha256") == key
            and saved.get("tools") == _versions()
            and saved.get("codegen") == CODEGEN
            and saved.get("library_sha256") == _sha256(library)
        )
    except (OSError, ValueError):
        good = False
    if not good:
        if not quiet:
            log.warning("%s: the compiled model's cache entry is stale or damaged; "
                        "rebuilding it", folder)
        return None
    return library


def _build(booster: lgb.Booster, folder: Path, key: str, toolchain: str) -> Path:
    """Compile the model text into `folder` (beside it first, renamed in when complete)."""
    import tl2cgen
    import treelite

    folder.parent.mkdir(parents=True, exist_ok=True)
    log.info("compiling the model's trees once (cached in %s)", folder)
    staging = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=folder.parent))
    try:
        text = staging / "model.txt"
        text.write_text(booster.model_to_string(), encoding="utf-8")
        model = treelite.frontend.load_lightgbm_model(str(text))
        library = staging / LIBRARY
        tl2cgen.export_lib(model, toolchain=toolchain, libpath=str(library),
                           params={**CODEGEN,
                                   "parallel_comp": max(1, min(4, os.cpu_count() or 1))},
                           nthread=os.cpu_count() or 1)
        text.unlink()
        manifest = {"format": FORMAT, "model_sha256": key, "tools": _versions(),
                    "codegen": CODEGEN, "library_sha256": _sha256(library)}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder / LIBRARY
