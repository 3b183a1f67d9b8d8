"""Checks a running `sluice gateway`'s OpenAPI document: validates it with openapi-spec-validator, then runs
schemathesis against the gateway (coverage and fuzzing phases, every check but positive_data_acceptance: the
document says a pipeline's input is any JSON value, so a schema-valid body may still be the wrong input, which the
worker answers 400). Exits with schemathesis's status.

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
# schemathesis keeps its example database in the working directory: one that goes away with the run.
os.chdir(tempfile.mkdtemp(prefix="sluice-schemathesis-"))
schemathesis(
    ["run", f"{base}/openapi.json", "--phases", "coverage,fuzzing", "--max-examples", "30", "--max-time", "40",
     "--request-timeout", "30", "--exclude-checks", "positive_data_acceptance", "--seed", "7",
     "--suppress-health-check", "all", "--no-color"],
    prog_name="st")
