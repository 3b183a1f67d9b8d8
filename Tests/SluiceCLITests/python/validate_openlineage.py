"""Checks OpenLineage events against OpenLineage's JSON schemas (Tests/SluiceCLITests/openlineage/), offline.

usage: validate_openlineage.py SCHEMAS_DIR < events.jsonl

Every line must be a RunEvent of OpenLineage.json (2-0-2), and every facet with a `_schemaURL` of the vendored
schemas must match its schema. Formats are checked: `uuid`, `date-time` (RFC 3339) and `uri`. Prints
{"events": N, "facets": M} and exits 0, or prints the first problem and exits 1.
"""
import datetime
import json
import pathlib
import re
import sys
import uuid

import jsonschema
import referencing

schemas = {}
for path in pathlib.Path(sys.argv[1]).glob("*.json"):
    schema = json.loads(path.read_text())
    schemas[schema["$id"]] = schema
registry = referencing.Registry().with_resources(
    (url, referencing.Resource.from_contents(schema)) for url, schema in schemas.items())

formats = jsonschema.FormatChecker()


@formats.checks("uuid", raises=ValueError)
def is_uuid(text):
    return str(uuid.UUID(text)) == text


@formats.checks("date-time", raises=ValueError)
def is_date_time(text):
    # RFC 3339: a date, T, a time with seconds, an optional fraction, and Z or an offset.
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", text):
        raise ValueError(text)
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")) is not None


@formats.checks("uri", raises=ValueError)
def is_uri(text):
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:\S+", text):
        raise ValueError(text)
    return True


def validator(url):
    """A validator of the schema at `url` (a `$id`, with a `#/$defs/...` pointer)."""
    base, _, pointer = url.partition("#")
    schema = {"$ref": url} if pointer else schemas[base]
    return jsonschema.Draft202012Validator(schema, registry=registry, format_checker=formats)


run_event = validator("https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent")
events = facets = 0
for number, line in enumerate(sys.stdin, 1):
    event = json.loads(line)
    problems = [f"{list(error.absolute_path)}: {error.message}" for error in run_event.iter_errors(event)]
    found = [event["run"].get("facets", {}), event["job"].get("facets", {})]
    found += [dataset.get("facets", {}) for dataset in event.get("inputs", []) + event.get("outputs", [])]
    for group in found:
        for name, facet in group.items():
            url = facet.get("_schemaURL", "")
            if url.partition("#")[0] in schemas:
                problems += [f"facet {name}: {error.message}" for error in validator(url).iter_errors(facet)]
                facets += 1
    if problems:
        print(f"event {number} ({event.get('eventType')} {event.get('job', {}).get('name')}): {problems}")
        sys.exit(1)
    events += 1
print(json.dumps({"events": events, "facets": facets}))
