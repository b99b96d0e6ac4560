"""The throwaway process that parses a model text with LightGBM before the real process does.

LightGBM's C++ loader aborts (SIGABRT) or segfaults on some damaged texts instead of reporting an
error, which would take the API server or a batch job down with it. `leadscore.modelcheck` runs
this file as a script in a short-lived child (`python -I -S modelprobe.py <lib_lightgbm>`, the
model text on stdin): if LightGBM dies here, only this process dies. Standard library only, and
the LightGBM library is opened with ctypes rather than through the `lightgbm` package: importing
that (with numpy, pandas and scikit-learn behind it) costs ~3 s; this whole probe 0.04-0.3 s.

Exit status: 0 parsed and predicted two rows (all zeros, all missing) as raw scores and as
contributions, every output finite; 3 LightGBM reported an error (its message on stderr);
4 a prediction was not finite; a negative status (seen by the parent) is the signal that
killed it.
"""

from __future__ import annotations

import ctypes
import math
import sys

PREDICT_RAW, PREDICT_CONTRIB = 1, 3  # C_API_PREDICT_RAW_SCORE, C_API_PREDICT_CONTRIB
FLOAT64, ROW_MAJOR = 1, 1
PARSE_FAILED, NOT_FINITE = 3, 4


def probe(lib_path: str, model_text: bytes) -> int:
    """Parse `model_text` with the LightGBM at `lib_path` and predict two rows; an exit status."""
    lib = ctypes.CDLL(lib_path)
    lib.LGBM_GetLastError.restype = ctypes.c_char_p

    def failed(status: int) -> bool:
        if status != 0:
            sys.stderr.write(lib.LGBM_GetLastError().decode("utf-8", "replace") + "\n")
        return status != 0

    handle = ctypes.c_void_p()
    iterations = ctypes.c_int(0)
    if failed(lib.LGBM_BoosterLoadModelFromString(
            ctypes.c_char_p(model_text), ctypes.byref(iterations), ctypes.byref(handle))):
        return PARSE_FAILED
    features, classes = ctypes.c_int(0), ctypes.c_int(0)
    if failed(lib.LGBM_BoosterGetNumFeature(handle, ctypes.byref(features))) or failed(
            lib.LGBM_BoosterGetNumClasses(handle, ctypes.byref(classes))):
        return PARSE_FAILED
    rows, columns = 2, features.value
    data = (ctypes.c_double * (rows * columns))(*([0.0] * columns + [math.nan] * columns))
    for kind, width in ((PREDICT_RAW, 1), (PREDICT_CONTRIB, columns + 1)):
        out = (ctypes.c_double * (rows * width * max(classes.value, 1)))()
        length = ctypes.c_int64(0)
        if failed(lib.LGBM_BoosterPredictForMat(
                handle, data, ctypes.c_int(FLOAT64), ctypes.c_int32(rows),
                ctypes.c_int32(columns), ctypes.c_int(ROW_MAJOR), ctypes.c_int(kind),
                ctypes.c_int(0), ctypes.c_int(-1), ctypes.c_char_p(b"num_threads=1"),
                ctypes.byref(length), out)):
            return PARSE_FAILED
        if not all(math.isfinite(v) for v in out[: length.value]):
            return NOT_FINITE
    lib.LGBM_BoosterFree(handle)
    return 0


if __name__ == "__main__":
    sys.exit(probe(sys.argv[1], sys.stdin.buffer.read()))
