#!/usr/bin/env python3
"""Fidelity check: the official Splunk SDK (splunklib, unchanged) against splunk-emulator.

Run: pip install -r deploy/requirements-test.txt
     SPLUNK_EMULATOR_BIN=target/debug/splunk-emulator python3 tests/sdk_fidelity.py
Starts the emulator on a free port with a known NDJSON data set, then logs in, creates and
polls jobs, reads results and exports through splunklib.results.JSONResultsReader, checks
that invalid SPL raises HTTPError 400 and that Index.submit makes an event searchable.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import splunklib.binding as binding
import splunklib.client as client
import splunklib.results as results

TOKEN = "sdk-test-token"
USER, PASSWORD = "admin", "s3cret-pw"
INDEX = "quay_logs"
BASE = 1_718_000_000  # epoch seconds of the first event

# 30 events, one per minute, round-robin over three namespaces; datetime alternates forms.
EVENTS = []
for n in range(30):
    ns = f"org{n % 3}"
    secs = BASE + 60 * n
    dt = secs if n % 2 == 0 else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(secs))
    EVENTS.append({
        "kind": ["push_repo", "pull_repo", "create_tag"][n % 3 if n % 2 else (n // 2) % 3],
        "account": ns, "performer": f"user{n % 4}", "performer_kind": "user",
        "repository": f"repo{n % 2}", "ip": f"10.0.0.{n}", "metadata_json": {"n": n},
        "datetime": dt, "seq": n,
    })


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Emulator:
    def __init__(self):
        self.tmp = tempfile.TemporaryDirectory()
        data = os.path.join(self.tmp.name, "events.ndjson")
        with open(data, "w") as f:
            for e in EVENTS:
                f.write(json.dumps(e) + "\n")
        self.port = free_port()
        binary = os.environ.get("SPLUNK_EMULATOR_BIN", "target/debug/splunk-emulator")
        self.proc = subprocess.Popen(
            [binary, "--bind", f"127.0.0.1:{self.port}", "--token", TOKEN, "--user", USER,
             "--password", PASSWORD, "--index", INDEX, "--data", data],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if "listening" not in line:
            self.stop()
            raise RuntimeError(f"splunk-emulator did not start: {line!r}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.tmp.cleanup()


EMU = None


def connect(**auth):
    return client.connect(host="127.0.0.1", port=EMU.port, scheme="http", autologin=False, **auth)


def read_all(stream):
    reader = results.JSONResultsReader(stream)
    rows = [r for r in reader if isinstance(r, dict)]
    return rows, reader


def expected(ns, earliest, latest):
    return sorted(
        (e for e in EVENTS if e["account"] == ns and earliest <= BASE + 60 * e["seq"] < latest),
        key=lambda e: e["seq"], reverse=True)  # Splunk returns newest first


class SdkFidelity(unittest.TestCase):
    def check_rows(self, rows, want):
        self.assertEqual([json.loads(r["_raw"]) for r in rows], want)
        for r in rows:
            self.assertEqual(r["index"], INDEX)
            self.assertTrue(r["_time"].endswith("+00:00"), r["_time"])

    def test_login_and_version(self):
        service = connect(username=USER, password=PASSWORD)
        self.assertGreaterEqual(service.splunk_version, (9, 0, 2))
        self.assertFalse(service.disable_v2_api)
        self.assertTrue(service.token.startswith("Splunk "))

    def test_wrong_password_is_authentication_error(self):
        with self.assertRaises(binding.AuthenticationError):
            connect(username=USER, password="wrong")

    def test_job_with_password_login(self):
        service = connect(username=USER, password=PASSWORD)
        earliest, latest = BASE + 60 * 3, BASE + 60 * 21  # inclusive / exclusive edges on events
        job = service.jobs.create(f'search index="{INDEX}" account="org0"',
                                  earliest_time=str(earliest), latest_time=str(latest))
        deadline = time.time() + 30
        while not job.is_done():
            self.assertLess(time.time(), deadline, "job never finished")
            time.sleep(0.1)
        want = expected("org0", earliest, latest)
        self.assertEqual(int(job["resultCount"]), len(want))
        self.assertEqual(job["dispatchState"], "DONE")
        self.assertEqual(job.access.owner, USER)
        rows, reader = read_all(job.results(output_mode="json", count=0))
        self.assertFalse(reader.is_preview)
        self.check_rows(rows, want)
        page, _ = read_all(job.results(output_mode="json", offset=1, count=2))
        self.check_rows(page, want[1:3])
        job.cancel()
        with self.assertRaises(binding.HTTPError) as ctx:
            service.job(job.sid)
        self.assertEqual(ctx.exception.status, 404)

    def test_export_with_token(self):
        service = connect(splunkToken=TOKEN)
        earliest, latest = BASE, BASE + 60 * 30
        stream = service.jobs.export(f'search index="{INDEX}" account="org1"', output_mode="json",
                                     earliest_time=str(earliest), latest_time=str(latest))
        rows, reader = read_all(stream)
        self.assertFalse(reader.is_preview)
        self.check_rows(rows, expected("org1", earliest, latest))

    def test_time_bounds_in_iso_and_epoch_forms(self):
        # The same window written as epoch seconds, ISO 8601 with and without an offset (no
        # offset: the search user's zone, UTC here), as Quay's splunk_search_client sends them.
        service = connect(splunkToken=TOKEN)
        earliest, latest = BASE + 60 * 4, BASE + 60 * 17
        want = expected("org1", earliest, latest)
        iso = lambda t, fmt: time.strftime(fmt, time.gmtime(t))
        forms = [
            (str(earliest), str(latest)),
            (f"{earliest}.000", f"{latest}.000"),
            (iso(earliest, "%Y-%m-%dT%H:%M:%S"), iso(latest, "%Y-%m-%dT%H:%M:%S")),
            (iso(earliest, "%Y-%m-%dT%H:%M:%S.000"), iso(latest, "%Y-%m-%dT%H:%M:%S.000")),
            (iso(earliest, "%Y-%m-%dT%H:%M:%S+00:00"), iso(latest, "%Y-%m-%dT%H:%M:%SZ")),
            (iso(earliest - 7200, "%Y-%m-%dT%H:%M:%S-02:00"), iso(latest, "%Y-%m-%dT%H:%M:%S.000+0000")),
        ]
        for lo, hi in forms:
            with self.subTest(earliest=lo, latest=hi):
                job = service.jobs.create(f'search index="{INDEX}" account="org1"',
                                          earliest_time=lo, latest_time=hi, exec_mode="blocking")
                rows, _ = read_all(job.results(output_mode="json", count=0))
                self.check_rows(rows, want)
                stream = service.jobs.export(f'search index="{INDEX}" account="org1"',
                                             output_mode="json", earliest_time=lo, latest_time=hi)
                rows, _ = read_all(stream)
                self.check_rows(rows, want)
        # Relative modifiers: every event is long past.
        rows, _ = read_all(service.jobs.export(f'search index="{INDEX}" account="org1"',
                                               output_mode="json", earliest_time="-1d@d",
                                               latest_time="now"))
        self.assertEqual(rows, [])
        with self.assertRaises(binding.HTTPError) as ctx:
            service.jobs.create(f'search index="{INDEX}"', earliest_time="yesterday")
        self.assertEqual(ctx.exception.status, 400)

    def test_invalid_spl_is_http_400(self):
        service = connect(splunkToken=TOKEN)
        with self.assertRaises(binding.HTTPError) as ctx:
            service.jobs.create('search account="org1" OR account="org2"')
        self.assertEqual(ctx.exception.status, 400)
        self.assertIn("Error in 'search' command", str(ctx.exception))
        with self.assertRaises(binding.HTTPError) as ctx:
            read_all(service.jobs.export("search account=org1 | frobnicate", output_mode="json"))
        self.assertEqual(ctx.exception.status, 400)

    def test_index_submit_is_searchable(self):
        service = connect(username=USER, password=PASSWORD)
        index = service.indexes[INDEX]
        self.assertEqual(index.name, INDEX)
        event = {"kind": "push_repo", "account": "submitted", "repository": "r",
                 "datetime": BASE + 5, "performer": "sdk"}
        index.submit(json.dumps(event), sourcetype="_json")
        rows, _ = read_all(service.jobs.export("search account=submitted", output_mode="json"))
        self.assertEqual([json.loads(r["_raw"]) for r in rows], [event])
        job = service.jobs.create("search account=submitted | stats count", exec_mode="blocking")
        counts, _ = read_all(job.results(output_mode="json"))
        self.assertEqual(counts, [{"count": "1"}])
        with self.assertRaises(KeyError):
            service.indexes["no_such_index"]


def main():
    global EMU
    EMU = Emulator()
    try:
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(SdkFidelity)
        result = unittest.TextTestRunner(verbosity=2).run(suite)
    finally:
        EMU.stop()
    ok = result.wasSuccessful()
    print(f"sdk_fidelity: {result.testsRun} checks, {len(result.failures) + len(result.errors)} failed"
          f" -> {'OK' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
