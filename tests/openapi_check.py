#!/usr/bin/env python3
"""Checks the served OpenAPI document, and real responses against it.

    tests/openapi_check.py BASE_URL TOKEN [EXPORT_ID] [SCHEDULE_ID]

1. GET BASE_URL/api/v1/openapi.json (no credential) and validate it as OpenAPI 3.1
   (openapi-spec-validator).
2. Every route of the API is in it (the list below is the router's, kept beside it in
   src/api/mod.rs; a route added there and not annotated fails here).
3. Real responses of the documents built with `json!` (export status and listing, schedule,
   logs, superuser logs, aggregates, manifest, keys, errors) validate against the document's
   schemas, which forbid unknown members: a field added on one side only fails here.
   EXPORT_ID should be a succeeded export and SCHEDULE_ID a schedule, made by the caller
   (deploy/fuzz-api.sh seeds them), so the documents have their fields filled.
"""

import json
import sys
import urllib.error
import urllib.request

from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

ROUTES = {
    ("post", "/api/v1/user/exportlogs"),
    ("post", "/api/v1/organization/{orgname}/exportlogs"),
    ("post", "/api/v1/repository/{namespace}/{repository}/exportlogs"),
    ("get", "/api/v1/exportlogs"),
    ("get", "/api/v1/exportlogs/{export_id}"),
    ("delete", "/api/v1/exportlogs/{export_id}"),
    ("get", "/api/v1/exportlogs/{export_id}/download"),
    ("get", "/api/v1/exportlogs/{export_id}/manifest"),
    ("get", "/api/v1/exportlogs/signing-keys"),
    ("get", "/api/v1/exportlogs/chain"),
    ("get", "/api/v1/user/exportschedules"),
    ("post", "/api/v1/user/exportschedules"),
    ("get", "/api/v1/organization/{orgname}/exportschedules"),
    ("post", "/api/v1/organization/{orgname}/exportschedules"),
    ("get", "/api/v1/repository/{namespace}/{repository}/exportschedules"),
    ("post", "/api/v1/repository/{namespace}/{repository}/exportschedules"),
    ("get", "/api/v1/exportschedules/{schedule_id}"),
    ("patch", "/api/v1/exportschedules/{schedule_id}"),
    ("delete", "/api/v1/exportschedules/{schedule_id}"),
    ("get", "/api/v1/user/logs"),
    ("get", "/api/v1/user/aggregatelogs"),
    ("get", "/api/v1/organization/{orgname}/logs"),
    ("get", "/api/v1/organization/{orgname}/aggregatelogs"),
    ("get", "/api/v1/repository/{namespace}/{repository}/logs"),
    ("get", "/api/v1/repository/{namespace}/{repository}/aggregatelogs"),
    ("get", "/api/v1/superuser/logs"),
    ("get", "/api/v1/superuser/aggregatelogs"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/exportedlogs/{file}"),
}


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(NoRedirect)


def call(base, path, token=None):
    request = urllib.request.Request(base + path)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with OPENER.open(request, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def main():
    base, token = sys.argv[1].rstrip("/"), sys.argv[2]
    export_id = sys.argv[3] if len(sys.argv) > 3 else None
    schedule_id = sys.argv[4] if len(sys.argv) > 4 else None
    failures = []

    status, _, body = call(base, "/api/v1/openapi.json")
    assert status == 200, f"GET /api/v1/openapi.json without a credential: {status}"
    doc = json.loads(body)
    assert doc["openapi"].startswith("3.1"), f"not OpenAPI 3.1: {doc['openapi']}"
    validate(doc)  # raises on an invalid document, naming the place
    print(f"openapi.json: valid OpenAPI {doc['openapi']}, {len(doc['paths'])} paths")

    documented = {(m, p) for p, item in doc["paths"].items() for m in item if m in
                  ("get", "post", "put", "patch", "delete")}
    for missing in sorted(ROUTES - documented):
        failures.append(f"route not in the document: {missing[0].upper()} {missing[1]}")
    for extra in sorted(documented - ROUTES):
        failures.append(f"documented but not a route: {extra[0].upper()} {extra[1]}")

    def check(path, method, want_status, who=token):
        status, headers, body = call(base, path, who)
        if status != want_status:
            failures.append(f"GET {path}: {status}, expected {want_status}: {body[:300]!r}")
            return None
        responses = doc["paths"][template(path)][method]["responses"]
        declared = responses.get(str(status))
        if declared is None:
            failures.append(f"GET {path}: status {status} not documented")
            return None
        content = declared.get("content", {})
        if "application/json" not in content:
            return None
        schema = dict(content["application/json"]["schema"])
        schema["components"] = doc["components"]
        instance = json.loads(body)
        errors = sorted(Draft202012Validator(schema).iter_errors(instance), key=str)
        for e in errors[:5]:
            where = "/".join(str(p) for p in e.absolute_path)
            failures.append(f"GET {path} ({status}): at /{where}: {e.message}")
        if not errors:
            print(f"  conforms: GET {path} -> {status}")
        return instance

    def template(path):
        """The document's path for a concrete one: exact first, then with {parameters}."""
        path = path.split("?")[0]
        if path in doc["paths"]:
            return path
        want = path.split("/")
        for p in doc["paths"]:
            parts = p.split("/")
            if len(parts) == len(want) and all(a == b or a.startswith("{") for a, b in zip(parts, want)):
                return p
        raise KeyError(path)

    range_q = "starttime=01/01/2000&endtime=12/31/2099"
    check("/api/v1/exportlogs?namespace=ns0&limit=1", "get", 200)
    check("/api/v1/exportlogs/signing-keys", "get", 200, None)
    check("/api/v1/exportlogs/chain?namespace=ns0", "get", 200)
    check("/api/v1/organization/ns0/logs", "get", 200)
    check("/api/v1/superuser/logs", "get", 200)
    check("/api/v1/repository/ns0/repo0/logs", "get", 200)
    check("/api/v1/organization/ns0/aggregatelogs", "get", 200)
    check(f"/api/v1/organization/ns0/logs?{range_q}", "get", 400)
    check("/api/v1/exportlogs/00000000-0000-0000-0000-000000000000", "get", 404)
    check("/api/v1/organization/ns0/logs", "get", 401, "not-a-token")
    check("/api/v1/user/exportschedules", "get", 200)
    check("/api/v1/organization/ns0/exportschedules", "get", 200)
    if export_id:
        status_doc = check(f"/api/v1/exportlogs/{export_id}", "get", 200)
        if status_doc and status_doc.get("state") == "succeeded":
            check(f"/api/v1/exportlogs/{export_id}/manifest", "get", 200)
            check(f"/api/v1/exportlogs/{export_id}/download", "get", 302)
        elif status_doc:
            failures.append(f"seeded export {export_id} is {status_doc.get('state')}, not succeeded")
    if schedule_id:
        check(f"/api/v1/exportschedules/{schedule_id}", "get", 200)

    for f in failures:
        print(f"FAIL {f}")
    print(f"openapi check: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
