#!/usr/bin/env python3
"""Validates OpenShift Routes strictly against deploy/k8s/beside-quay/route.schema.json.

    python3 deploy/check_route.py FILE.yaml [...]

kubernetes-validate bundles only upstream Kubernetes kinds, so it skips route.openshift.io/v1
with a warning; this does the same strict check (unknown fields, enums, required fields) for
Routes. Prints one line per problem and exits 1 if there is any, or if a file holds no Route.
"""
import json
import os
import sys

import jsonschema
import yaml

SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "k8s/beside-quay/route.schema.json")


def main(paths):
    with open(SCHEMA) as f:
        validator = jsonschema.Draft202012Validator(json.load(f))
    problems = 0
    for path in paths:
        with open(path) as f:
            routes = [d for d in yaml.safe_load_all(f) if d and d.get("kind") == "Route"]
        if not routes:
            print(f"{path}: no Route in the file")
            problems += 1
        for doc in routes:
            name = doc.get("metadata", {}).get("name", "?")
            for error in validator.iter_errors(doc):
                where = "/".join(str(p) for p in error.absolute_path) or "<root>"
                print(f"{path}: Route {name}: {where}: {error.message}")
                problems += 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
