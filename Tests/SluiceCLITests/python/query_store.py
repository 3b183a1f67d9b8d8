"""Reads a Sluice store the way a data team would, and prints one JSON object of what it found.

usage: query_store.py STORE DOCS_STORE_MD [SHA256]

- "duckdb" and "pandas": every run line as DuckDB's read_json and pandas' read_json see it: run_id, attempt,
  status, and each step's name and status, in order.
- "queries": the results of the SQL blocks of docs/store.md (each starts with `-- name`), run by DuckDB on STORE
  (the docs' `store/` replaced by STORE's path, `<sha256>` by SHA256): the queries users copy are the ones tested.
"""
import glob
import json
import re
import sys

import duckdb
import pandas

store, docs = sys.argv[1], sys.argv[2]
sha256 = sys.argv[3] if len(sys.argv) > 3 else ""
segments = f"{store}/runs/**/*.jsonl"

connection = duckdb.connect()
rows = connection.sql(
    f"SELECT run_id, attempt, status, [{{'step': s.step, 'status': s.status}} FOR s IN steps] AS steps "
    f"FROM read_json('{segments}') ORDER BY run_id, attempt").fetchall()
from_duckdb = [{"run_id": r[0], "attempt": r[1], "status": r[2], "steps": r[3]} for r in rows]

frames = [pandas.read_json(path, lines=True, dtype={"run_id": str}) for path in sorted(glob.glob(segments, recursive=True))]
lines = pandas.concat(frames, ignore_index=True).sort_values(["run_id", "attempt"])
from_pandas = [
    {"run_id": row.run_id, "attempt": int(row.attempt), "status": row.status,
     "steps": [{"step": s["step"], "status": s["status"]} for s in row.steps]}
    for row in lines.itertuples()
]

queries = {}
text = open(docs, encoding="utf-8").read()
for block in re.findall(r"```sql\n(.*?)```", text, re.S):
    name = block.splitlines()[0].removeprefix("--").strip()
    sql = block.replace("'store/", f"'{store}/").replace("<sha256>", sha256)
    for statement in [part for part in sql.split(";") if part.strip()]:
        result = connection.sql(statement)
    queries[name] = [[str(value) for value in row] for row in result.fetchall()] if result else []

print(json.dumps({"duckdb": from_duckdb, "pandas": from_pandas, "queries": queries}))
