"""Batch rescoring of files: stream chunks through the shared scoring code into one output file.

Memory is bounded by the chunk size, whatever the input's size. Each completed chunk is kept as
a part file beside a small JSON checkpoint, so a job killed at any point continues from its
last completed chunk (`resume=True`); the output is assembled at `<output>.partial` and moved
into place only when complete. Rows that fail validation go to `<output>.rejects.csv` (row
number, line in the input, id and reason, never a value: `rejects.py`), and the summary accounts
for every row read. File faults are one plain line (`faults.py`).

One module per concern: `sources` (reading in chunks), `checks` (what is scored, what is
rejected; the output rows), `drift`, `job` (parts, checkpoint, lock, output), `rescore` (the
local engine) and `spark`. The names other code imports are re-exported here.
"""

from leadscore.batch.checks import Checked, check_chunk, output_schema, scores_table
from leadscore.batch.drift import DRIFT_MIN_ROWS, Drift
from leadscore.batch.job import BatchSummary, Job, _lock_output
from leadscore.batch.rescore import DEFAULT_CHUNK_ROWS, rescore
from leadscore.batch.sources import (
    Chunk,
    Source,
    absent_fields,
    iter_chunks,
    open_source,
    read_chunks,
)
from leadscore.batch.spark import (
    history_frame,
    read_spark,
    rescore_spark,
    score_spark,
    spark_session,
)

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "BatchSummary",
    "Checked",
    "Chunk",
    "DRIFT_MIN_ROWS",
    "Drift",
    "Job",
    "Source",
    "_lock_output",
    "absent_fields",
    "check_chunk",
    "history_frame",
    "iter_chunks",
    "open_source",
    "output_schema",
    "read_chunks",
    "read_spark",
    "rescore",
    "rescore_spark",
    "score_spark",
    "scores_table",
    "spark_session",
]
