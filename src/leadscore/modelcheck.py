"""Is a model text safe to hand to LightGBM in this process? A damaged one must be refused with a
plain message, never abort or segfault the API server or a batch job.

A checksum only proves the text is the one `bundle.json` names; a truncated or edited text with
a matching checksum made LightGBM's C++ loader abort (SIGABRT) or segfault (exit 139). Two lines
of defence, both before the in-process parse:

1. `check_structure`: in this process: the header keys, one `Tree=i` per entry of `tree_sizes`
   with each tree exactly as long as listed, `end of trees` where the sizes say, `end of
   parameters` after it, and every split on a feature the model has.
2. `probe_in_child`: the text is parsed and two rows predicted by LightGBM in a short-lived child
   process (`modelprobe.py`); whatever kills the child (abort, segfault, a hang) is a refusal
   here. This is what makes "any damaged text is refused" true.

Measured on the shared 2-core machine (idle .. busy): a 25 KB model, structure < 1 ms and child
0.04 .. 0.27 s; a 3.4 MB 1,000-tree model, structure 35 .. 100 ms and child 0.26 .. 0.8 s
(LightGBM's own in-process parse of it: ~0.09 s).

The verdict is cached per SHA-256 of the text, so each distinct model text costs the child once
per process (an API reload of the same model, the batch start and each Spark worker after it).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from leadscore.errors import ModelError

log = logging.getLogger(__name__)

PROBE_SCRIPT = Path(__file__).with_name("modelprobe.py")
PROBE_TIMEOUT_S = 60.0  # a parse that takes this long is a damaged text, not a big model
TIMED_OUT = f"LightGBM did not parse it within {PROBE_TIMEOUT_S:.0f} s"
HEADER_KEYS = ("version", "num_class", "max_feature_idx", "feature_names", "tree_sizes")
# anchored on "\n", not on ^ with re.MULTILINE: a tenth of the time on a model of a few MB
_TREE = re.compile(rb"\nTree=(\d+)\n")
_SPLITS = re.compile(rb"\nsplit_feature=([^\n]*)")

_verdicts: dict[str, str | None] = {}  # sha256 -> None (sound) or the refusal message's tail
_lock = threading.Lock()


def verify_model_text(text: bytes, sha256: str, where: str) -> None:
    """Raise `ModelError("<where>: model.txt is damaged: …")` unless LightGBM parses `text` and
    predicts with it without failing; `sha256` (of `text`) keys the per-process cache."""
    with _lock:
        cached = sha256 in _verdicts
        verdict = _verdicts.get(sha256)
    if not cached:
        verdict = check_structure(text) or probe_in_child(text)
        if verdict != TIMED_OUT:  # a busy machine may do better next time: not remembered
            with _lock:
                _verdicts[sha256] = verdict
    if verdict is not None:
        raise ModelError(f"{where}: model.txt is damaged: {verdict}")


def check_structure(text: bytes) -> str | None:
    """What is wrong with the text's layout (None: nothing found), without parsing a tree."""
    header, _, _ = text.partition(b"\nTree=")
    lines = header.split(b"\n")
    if lines[0].strip() != b"tree":
        return "it is not a LightGBM model text"
    keys = {line.split(b"=", 1)[0].decode("ascii", "replace") for line in lines if b"=" in line}
    absent = [key for key in HEADER_KEYS if key not in keys]
    if absent:
        return f"its header lacks {', '.join(absent)}"
    sizes_line = next(line for line in lines if line.startswith(b"tree_sizes="))
    try:
        sizes = [int(size) for size in sizes_line[len(b"tree_sizes="):].split()]
    except ValueError:
        return "its tree_sizes line is not a list of numbers"
    starts = [(int(m.group(1)), m.start() + 1) for m in _TREE.finditer(text)]
    if len(starts) != len(sizes):
        return f"it holds {len(starts)} trees where tree_sizes lists {len(sizes)}"
    if [number for number, _ in starts] != list(range(len(sizes))):
        return f"its trees are not numbered 0 to {len(sizes) - 1} in order"
    end = text.find(b"\nend of trees\n") + 1
    if end == 0:
        return "it has no 'end of trees' line (truncated?)"
    # LightGBM's writer always ends with its parameters; their absence means a cut-short file
    if text.find(b"\nend of parameters\n", end) < 0:
        return "it has no 'end of parameters' line (truncated?)"
    bounds = [start for _, start in starts] + [end]
    for i, size in enumerate(sizes):
        length = bounds[i + 1] - bounds[i]
        if length != size:
            return f"tree {i} is {length} bytes long where tree_sizes says {size}"
    # a split on a feature past the last one reads outside the row: LightGBM does not check
    fields = dict(line.split(b"=", 1) for line in lines if b"=" in line)
    tokens = {f for m in _SPLITS.finditer(text, 0, end) for f in m.group(1).split()}
    try:
        last = int(fields[b"max_feature_idx"])
        used = {int(token) for token in tokens}
    except ValueError:
        return "a max_feature_idx or split_feature line is not made of numbers"
    if used and not 0 <= min(used) <= max(used) <= last:
        return f"a tree splits on a feature outside 0..{last}"
    return None


def probe_in_child(text: bytes) -> str | None:
    """Parse and predict in a child process; why it failed, or None when it did not."""
    command = [sys.executable, "-I", "-S", str(PROBE_SCRIPT), _library_path()]
    try:
        done = subprocess.run(command, input=text, capture_output=True,
                              timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return TIMED_OUT
    except OSError as exc:  # no interpreter to start: say so rather than skip the check
        raise ModelError(f"cannot start the model check ({exc.strerror})") from None
    if done.returncode == 0:
        return None
    # LightGBM's own message may quote the text (feature names); it goes to the debug log only
    log.debug("model probe exited %d: %s", done.returncode,
              done.stderr.decode("utf-8", "replace")[-500:])
    if done.returncode < 0:
        name = _signal_name(-done.returncode)
        return f"LightGBM could not parse it (the check process died of {name})"
    if done.returncode == 4:
        return "LightGBM parsed it but predicts non-finite values"
    return "LightGBM could not parse it"


def _library_path() -> str:
    """The LightGBM library this process uses, so the child checks with the same parser."""
    import lightgbm.basic

    name = getattr(lightgbm.basic._LIB, "_name", None)
    if name and os.path.isfile(name):
        return str(name)
    from lightgbm.libpath import _find_lib_path

    return _find_lib_path()[0]


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
