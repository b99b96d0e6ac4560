"""A compiled copy of a model's trees for batch scoring (the `[fast]` extra).

The bundle (LightGBM text + JSON) stays the source of truth. The compiled trees are a cache under
`LEADSCORE_HOME/cache/compiled/<model text's SHA-256>/`, built from that text by one of two
backends, the first one installed:
  lleaves   LLVM machine code for this CPU (llvmlite; no C compiler needed), loaded by LLVM's JIT;
  tl2cgen   C code from treelite's reading of the model, compiled by the system compiler.
The entry is checked against its manifest (backend, tool versions, CPU for lleaves, SHA-256 of
its files) before it is ever loaded (a damaged or foreign entry is rebuilt, not loaded), and
held to LightGBM's own raw scores on the first rows it predicts: more than 1e-9 apart and it is
dropped for this model, with LightGBM scoring as before. No extra, no compiler, a compile error,
a failed check: LightGBM scores, with one log line saying why.

Why: measured on the benchmark model (171 trees, 25 features; CPU seconds on one thread), tl2cgen
walks the trees ~2x faster than `Booster.predict`, lleaves ~6x, both with the same raw scores
bit for bit. Both release the GIL, so two scoring threads use both cores.
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

from leadscore.scoring import sha256_file

log = logging.getLogger(__name__)

CACHE_DIR = Path("cache") / "compiled"
LIBRARY = "model.so"  # tl2cgen: a shared library
OBJECT = "model.o"  # lleaves: an object file for LLVM's JIT, beside the model text it reads
MODEL_TEXT = "model.txt"
MANIFEST = "manifest.json"
BACKENDS = ("lleaves", "tl2cgen")  # in order of preference: the first installed builds
TOLERANCE = 1e-9  # the largest difference from LightGBM's raw score the compiled model may show
CHECK_ROWS = 4096  # rows compared with LightGBM the first time the compiled model predicts
FORMAT = 2
# tl2cgen's code generation: thresholds as integer bins ("quantize": the same comparisons, so
# the same leaves; ~15% faster than comparing doubles on the benchmark model), and the trees
# split over a few C files that compile in parallel
CODEGEN = {"quantize": 1}
# lleaves: raw margins, and every tree in one block: lleaves adds each block's sum to the total
# so far, which with its default blocks (34 trees) differs from LightGBM's tree-by-tree sum by
# ~1e-14, enough to move a lead sitting exactly on a percentile or tier cut; one block adds the
# trees in LightGBM's order from 0.0, the same doubles bit for bit (~12% slower on the benchmark
# model than blocks of 34, still ~6x LightGBM on one thread)
LLEAVES = {"raw_score": True, "fblocksize": 1 << 30}


class CompiledModel:
    """The compiled trees of one model: raw margins, as `Booster.predict(raw_score=True)`.

    tl2cgen's predictor may be used by one thread at a time, so each thread loads its own
    (the same library, opened once by the system loader); lleaves' compiled entry point keeps
    no state, so one loaded copy serves every thread. The first call is checked against
    LightGBM; a model that fails the check answers with LightGBM's scores from then on.
    """

    def __init__(
        self, library: Path, booster: lgb.Booster, key: str, backend: str = "tl2cgen"
    ) -> None:
        self.library = library
        self.booster = booster
        self.key = key
        self.backend = backend
        self._local = threading.local()
        self._lock = threading.Lock()
        self._jit: Any = None  # lleaves: one loaded model, its entry point pure (any thread)
        self._loading = threading.Lock()
        self.checked = False
        self.broken = False

    def _predictor(self) -> Any:
        predictor = getattr(self._local, "predictor", None)
        if predictor is None:
            import tl2cgen

            predictor = self._local.predictor = tl2cgen.Predictor(str(self.library), nthread=1)
        return predictor

    def _lleaves(self) -> Any:
        if self._jit is None:
            with self._loading:
                if self._jit is None:
                    import lleaves

                    model = lleaves.Model(model_file=str(self.library.with_name(MODEL_TEXT)))
                    model.compile(cache=str(self.library), **LLEAVES)
                    self._jit = model
        return self._jit

    def margins(self, matrix: np.ndarray) -> np.ndarray:
        """The compiled trees' raw scores, unchecked (tests and the check use it)."""
        rows = np.ascontiguousarray(matrix, dtype=np.float64)
        if self.backend == "lleaves":
            out = self._lleaves().predict(rows, n_jobs=1)  # the caller's thread, GIL released
            return np.asarray(out, dtype=np.float64).reshape(len(rows))
        import tl2cgen

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


def _installed(backend: str) -> bool:
    try:
        if backend == "lleaves":
            import lleaves  # noqa: F401
            from llvmlite import binding

            # lleaves 1.3 builds with the legacy pass manager, gone from llvmlite 0.44 on: such
            # a pair imports but cannot compile, so it counts as not installed
            return hasattr(binding, "PassManagerBuilder")
        import tl2cgen  # noqa: F401
        import treelite  # noqa: F401
    except ImportError:
        return False
    return True


def preferred_backend() -> str | None:
    """The first of `BACKENDS` installed, or None."""
    return next((name for name in BACKENDS if _installed(name)), None)


def available() -> str | None:
    """None when the extra is installed; else why not (one line)."""
    if preferred_backend() is None:
        return "the [fast] extra is not installed (neither lleaves nor tl2cgen)"
    return None


def cached_model(
    booster: lgb.Booster, meta: dict[str, Any] | None = None, *, home: Path | None = None
) -> CompiledModel | None:
    """The compiled model when the cache already holds it (milliseconds), else None."""
    if available() is not None:
        return None
    backend = preferred_backend()
    assert backend is not None
    try:
        key = model_key(booster, meta)
        library = _cached(cache_root(home) / key, key, backend)
    except Exception:  # a cache that cannot be read is a cache miss
        log.debug("compiled model cache unreadable", exc_info=True)
        return None
    return CompiledModel(library, booster, key, backend) if library is not None else None


def compile_model(
    booster: lgb.Booster,
    meta: dict[str, Any] | None = None,
    *,
    home: Path | None = None,
    toolchain: str | None = None,
    backend: str | None = None,
) -> CompiledModel | None:
    """The compiled model for `booster`, from the cache or built now (seconds of LLVM or of a C
    compile); None, with a log line saying why, when it cannot be had. Never raises.
    `backend`: one of `BACKENDS` (the first installed when None); `toolchain`: tl2cgen's C
    compiler ($CC or gcc when None)."""
    why = available()
    if why is None and backend is not None and not _installed(backend):
        why = f"the [fast] extra's {backend} is not installed"
    if why is not None:
        log.info("scoring with LightGBM: %s", why)
        return None
    backend = backend or preferred_backend()
    assert backend is not None
    try:
        key = model_key(booster, meta)
        folder = cache_root(home) / key
        library = _cached(folder, key, backend, quiet=True)  # `cached_model` said so already
        if library is None:
            library = _build(booster, folder, key, backend,
                             toolchain or os.environ.get("CC", "gcc"))
        return CompiledModel(library, booster, key, backend)
    except Exception as exc:  # any failure to build: LightGBM does the work, as without the extra
        log.warning("could not compile the model (%s: %s); scoring with LightGBM",
                    type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
        return None


def _versions(backend: str) -> dict[str, str]:
    if backend == "lleaves":
        from importlib.metadata import version

        return {"lleaves": version("lleaves"), "llvmlite": version("llvmlite")}
    import tl2cgen
    import treelite

    return {"tl2cgen": tl2cgen.__version__, "treelite": treelite.__version__}


def _target(backend: str) -> dict[str, Any]:
    """What the entry's code is specific to beyond the tools: tl2cgen's code generation options,
    or the CPU lleaves compiled for (its machine code uses this CPU's instructions, so a cache
    shared with another kind of machine is rebuilt there, never run)."""
    if backend != "lleaves":
        return {"codegen": CODEGEN}
    from llvmlite import binding

    binding.initialize()
    binding.initialize_native_target()
    binding.initialize_native_asmprinter()
    try:
        features = binding.get_host_cpu_features().flatten()
    except RuntimeError:  # LLVM could not read them: lleaves compiles for none
        features = ""
    digest = hashlib.sha256(features.encode("utf-8")).hexdigest()
    return {"options": LLEAVES, "cpu": binding.get_host_cpu_name(),
            "cpu_features_sha256": digest}


def _files(backend: str) -> list[str]:
    return [OBJECT, MODEL_TEXT] if backend == "lleaves" else [LIBRARY]


def _cached(folder: Path, key: str, backend: str, quiet: bool = False) -> Path | None:
    """The cached code when its manifest vouches for it (same model, backend, tools, target,
    bytes)."""
    names, manifest = _files(backend), folder / MANIFEST
    if not manifest.is_file() or not all((folder / name).is_file() for name in names):
        return None
    try:
        saved = json.loads(manifest.read_text(encoding="utf-8"))
        good = (
            isinstance(saved, dict)
            and saved.get("format") == FORMAT
            and saved.get("backend") == backend
            and saved.get("model_sha256") == key
            and saved.get("tools") == _versions(backend)
            and saved.get("target") == _target(backend)
            and saved.get("files") == {name: sha256_file(folder / name) for name in names}
        )
    except (OSError, ValueError):
        good = False
    if not good:
        if not quiet:
            log.warning("%s: the compiled model's cache entry is stale or damaged; "
                        "rebuilding it", folder)
        return None
    return folder / names[0]


def _build(booster: lgb.Booster, folder: Path, key: str, backend: str, toolchain: str) -> Path:
    """Compile the model text into `folder` (beside it first, renamed in when complete)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    log.info("compiling the model's trees once with %s (cached in %s)", backend, folder)
    staging = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=folder.parent))
    try:
        text = staging / MODEL_TEXT
        text.write_text(booster.model_to_string(), encoding="utf-8")
        if backend == "lleaves":
            import lleaves

            lleaves.Model(model_file=str(text)).compile(cache=str(staging / OBJECT), **LLEAVES)
        else:
            import tl2cgen
            import treelite

            model = treelite.frontend.load_lightgbm_model(str(text))
            tl2cgen.export_lib(model, toolchain=toolchain, libpath=str(staging / LIBRARY),
                               params={**CODEGEN,
                                       "parallel_comp": max(1, min(4, os.cpu_count() or 1))},
                               nthread=os.cpu_count() or 1)
            text.unlink()
        names = _files(backend)
        manifest = {"format": FORMAT, "backend": backend, "model_sha256": key,
                    "tools": _versions(backend), "target": _target(backend),
                    "files": {name: sha256_file(staging / name) for name in names}}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder / _files(backend)[0]
