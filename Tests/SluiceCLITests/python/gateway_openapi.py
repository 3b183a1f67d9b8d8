"""Checks a running `sluice gateway`'s OpenAPI document: validates it with openapi-spec-validator, then runs
schemathesis against the gateway (coverage and fuzzing phases, every check: the gateway runs with --pipeline, so the
document carries each pipeline's input schema, and a body that follows it must be answered 2xx). Exits with
schemathesis's status.

usage: python3 gateway_openapi.py BASE_URL
"""
import json
import os
import sys
import tempfile
import urllib.request

from openapi_spec_validator import validate
from schemathesis.cli import schemathesis

base = sys.argv[1]
document = json.load(urllib.request.urlopen(f"{base}/openapi.json", timeout=10))
validate(document)
assert document["openapi"].startswith("3.1"), document["openapi"]
print("the document is valid OpenAPI 3.1", flush=True)
for path, item in document["paths"].items():
    if path.startswith("/v1/pipelines/"):
        schema = item["post"]["requestBody"]["content"]["application/json"]["schema"]
        print(f"{path} takes {json.dumps(schema, sort_keys=True)}", flush=True)
# schemathesis keeps its example database in the working directory: one that goes away with the run.
os.chdir(tempfile.mkdtemp(prefix="sluice-schemathesis-"))
schemathesis(
    ["run", f"{base}/openapi.json", "--phases", "coverage,fuzzing", "--max-examples", "30", "--max-time", "40",
     "--request-timeout", "30", "--seed", "7",
     "--suppress-health-check", "all", "--no-color"],
    prog_name="st")
