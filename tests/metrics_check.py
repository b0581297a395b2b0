#!/usr/bin/env python3
"""Checks a /metrics scrape of logexport and the monitoring files that go with it.

    python3 tests/metrics_check.py SCRAPE_FILE FAMILY [FAMILY ...]

- parses the scrape with the Prometheus project's own parser (PyPI prometheus-client,
  OpenMetrics), so what Prometheus would read is what is checked;
- each FAMILY named must be there with at least one sample;
- deploy/prometheus/logexport-alerts.yml: every rule has alert, expr, for, a severity and a
  summary, and every logexport_* metric its expr names exists in the scrape; `promtool check
  rules` runs too when promtool is installed;
- deploy/grafana/logexport-dashboard.json: every panel's queries name only existing metrics.
Prints one line per problem and exits 1 if there is any.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALERTS = os.path.join(ROOT, "deploy/prometheus/logexport-alerts.yml")
DASHBOARD = os.path.join(ROOT, "deploy/grafana/logexport-dashboard.json")
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def main():
    scrape_file, wanted = sys.argv[1], sys.argv[2:]
    with open(scrape_file) as f:
        families = {fam.name: fam for fam in text_string_to_metric_families(f.read())}
    problems = []
    for name in wanted:
        if name not in families:
            problems.append(f"scrape: no metric family {name}")
        elif not families[name].samples:
            problems.append(f"scrape: {name} has no sample")

    def known(metric):
        if metric in families:
            return True
        return any(metric.endswith(s) and metric[: -len(s)] in families for s in SUFFIXES)

    def check_expr(where, expr):
        for metric in set(re.findall(r"logexport_[a-z_]+", expr)):
            if not known(metric):
                problems.append(f"{where}: {metric} is not a metric logexport serves")

    with open(ALERTS) as f:
        rules = yaml.safe_load(f)
    count = 0
    for group in rules["groups"]:
        for rule in group["rules"]:
            count += 1
            name = rule.get("alert", "?")
            for key in ("alert", "expr", "for"):
                if key not in rule:
                    problems.append(f"alert {name}: no {key}")
            if "severity" not in rule.get("labels", {}):
                problems.append(f"alert {name}: no severity label")
            if "summary" not in rule.get("annotations", {}):
                problems.append(f"alert {name}: no summary")
            check_expr(f"alert {name}", rule.get("expr", ""))
    promtool = shutil.which("promtool")
    if promtool:
        run = subprocess.run([promtool, "check", "rules", ALERTS], capture_output=True, text=True)
        if run.returncode != 0:
            problems.append(f"promtool check rules: {run.stdout}{run.stderr}")

    with open(DASHBOARD) as f:
        dashboard = json.load(f)
    targets = 0
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            targets += 1
            check_expr(f"panel {panel['title']!r}", target["expr"])

    for p in problems:
        print(p)
    print(json.dumps({"families": len(families), "alert_rules": count, "panel_queries": targets,
                      "promtool": bool(promtool), "problems": len(problems)}))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
