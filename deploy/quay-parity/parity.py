#!/usr/bin/env python3
"""The permission parity matrix: the same request to real Quay's own endpoint and to logexport.

Runs against a real Quay started by ../shared/tools/real-quay/start.sh (its creds.json) and a
logexport in `[auth] mode = "quay"` whose auth.quay_url is that Quay. For every credential
(session cookie with and without its CSRF token, OAuth tokens of many scope sets, a bad token, a
disabled user's token, no credential) and every endpoint Quay also has (user, organization and
repository logs / aggregatelogs / exportlogs, and the superuser logs), it sends the same method,
path, query and body to both and compares the HTTP status.

  parity.py --run-dir ~/.cache/logexport/real-quay/run --logexport http://127.0.0.1:8700 \
      [--label off] [--record tests/fixtures/quay-parity.json] [--markdown out.md]

Extra tokens (scope sets the seed does not mint) are made the way Quay's UI makes them
(POST /oauth/authorizeapp, response_type=token) and kept in RUN_DIR/parity-tokens.json.
--record merges Quay's answers for this Quay (--label: "off" or "on", its
FEATURE_SUPERUSERS_FULL_ACCESS) into the fixture the CI stand-in test replays
(tests/it/quay_parity.rs). Exits 1 when any cell differs.
"""

import argparse
import json
import os
import sys
import urllib.parse

import requests

PASSWORD = "password-123456"  # seed.py's
ALL = "org:admin repo:admin repo:create repo:read repo:write user:admin user:read"
RANGE = {"starttime": "12/01/2026", "endtime": "12/03/2026"}
BODY = {"callback_email": "auditor@example.com"}

# label -> (user, scopes); the seed's own tokens are used where it made them.
SEEDED = {
    "admin_all": ("ns0", ALL),
    "admin_user_read": ("ns0", "user:read"),
    "admin_org_admin": ("ns0", "org:admin"),
    "admin_org_admin_user_read": ("ns0", "org:admin user:read"),
    "admin_repo_admin_user_read": ("ns0", "repo:admin user:read"),
    "admin_user_admin_read": ("ns0", "user:admin user:read"),
    "bob_all": ("bob", ALL),
    "carol_all": ("carol", ALL),
    "super_all": ("quayadmin", ALL + " super:user"),
    "super_no_super_scope": ("quayadmin", ALL),
    "auditor_all": ("auditor", ALL + " super:user"),
    "auditor_user_read": ("auditor", "user:read"),
    "dave_all": ("dave", ALL + " (disabled user)"),
}
EXTRA = {
    "admin_user_admin": ("ns0", "user:admin"),
    "admin_repo_admin": ("ns0", "repo:admin"),
    "admin_org_admin_repo_admin": ("ns0", "org:admin repo:admin"),
    "bob_org_admin_user_read": ("bob", "org:admin user:read"),
    "carol_repo_admin": ("carol", "repo:admin"),
    "carol_user_read": ("carol", "user:read"),
    "super_super_user": ("quayadmin", "super:user"),
    "super_super_user_read": ("quayadmin", "super:user user:read"),
    "super_org_repo_user_read": ("quayadmin", "org:admin repo:admin user:read"),
    "super_all_admin_scopes": ("quayadmin", "super:user org:admin repo:admin user:admin user:read"),
    "auditor_repo_admin": ("auditor", "repo:admin"),
    "auditor_org_admin": ("auditor", "org:admin"),
    "auditor_super_user_read": ("auditor", "super:user user:read"),
}


class Browser:
    """A signed-in browser session (cookie jar + the CSRF token Quay's UI sends)."""

    def __init__(self, quay, user):
        self.quay, self.s = quay, requests.Session()
        self.csrf = self.s.get(f"{quay}/csrf_token", timeout=30).json()["csrf_token"]
        r = self.call("POST", "/api/v1/signin", json={"username": user, "password": PASSWORD})
        if r.status_code != 200:
            sys.exit(f"sign-in of {user}: {r.status_code} {r.text[:200]}")
        self.csrf = self.s.get(f"{quay}/csrf_token", timeout=30).json()["csrf_token"]

    def call(self, method, path, **kw):
        headers = {"X-CSRF-Token": self.csrf, "X-Requested-With": "XMLHttpRequest"}
        r = self.s.request(method, f"{self.quay}{path}", headers=headers, timeout=60, **kw)
        self.csrf = r.headers.get("X-Next-CSRF-Token", self.csrf)
        return r

    def token(self, client_id, scope):
        r = self.call("POST", "/oauth/authorizeapp", allow_redirects=False, data={
            "client_id": client_id, "redirect_uri": f"{self.quay}/oauth/localapp", "scope": scope,
            "response_type": "token", "_csrf_token": self.csrf})
        loc = urllib.parse.urlparse(r.headers.get("Location", ""))
        tok = urllib.parse.parse_qs(loc.fragment or loc.query).get("access_token", [None])[0]
        if not tok:
            sys.exit(f"token {scope!r}: {r.status_code} {r.text[:200]}")
        return tok


def extra_tokens(quay, run_dir, admin_client):
    path = os.path.join(run_dir, "parity-tokens.json")
    if os.path.exists(path):
        return json.load(open(path))
    tokens, browsers = {}, {}
    for label, (user, scope) in EXTRA.items():
        b = browsers.get(user) or browsers.setdefault(user, Browser(quay, user))
        if user == "ns0":
            client = admin_client
        else:  # the OAuth application seed.py made in the user's own organization
            apps = b.call("GET", f"/api/v1/organization/{user}apps/applications").json()
            client = apps["applications"][0]["client_id"]
        tokens[label] = b.token(client, scope)
    json.dump(tokens, open(path, "w"), indent=2)
    return tokens


def credentials(creds, extra):
    out = {
        "cookie_csrf": ("ns0", "session cookie + X-CSRF-Token + X-Requested-With",
                        {"Cookie": creds["admin_cookie"], "X-CSRF-Token": creds["admin_csrf"],
                         "X-Requested-With": "XMLHttpRequest"}),
        "cookie_no_csrf": ("ns0", "session cookie + X-Requested-With, no X-CSRF-Token",
                           {"Cookie": creds["admin_cookie"], "X-Requested-With": "XMLHttpRequest"}),
        "cookie_wrong_csrf": ("ns0", "session cookie + a wrong X-CSRF-Token",
                              {"Cookie": creds["admin_cookie"], "X-CSRF-Token": "not-the-token",
                               "X-Requested-With": "XMLHttpRequest"}),
        "bad_token": ("-", "a token Quay never issued",
                      {"Authorization": "Bearer not-a-real-token-0123456789"}),
        "no_credential": ("-", "nothing", {}),
    }
    for label, (user, scope) in SEEDED.items():
        out[label] = (user, scope, {"Authorization": f"Bearer {creds['tokens'][label]}"})
    for label, (user, scope) in EXTRA.items():
        out[label] = (user, scope, {"Authorization": f"Bearer {extra[label]}"})
    return out


ENDPOINTS = [
    ("GET", "/api/v1/user/logs"), ("GET", "/api/v1/user/aggregatelogs"),
    ("POST", "/api/v1/user/exportlogs"),
    ("GET", "/api/v1/organization/ns1/logs"), ("GET", "/api/v1/organization/ns1/aggregatelogs"),
    ("POST", "/api/v1/organization/ns1/exportlogs"),
    ("GET", "/api/v1/organization/ns0/logs"),
    ("GET", "/api/v1/repository/ns1/web/logs"), ("GET", "/api/v1/repository/ns1/web/aggregatelogs"),
    ("POST", "/api/v1/repository/ns1/web/exportlogs"),
    ("GET", "/api/v1/superuser/logs"),
]


def ask(base, method, path, headers):
    url = f"{base}{path}?{urllib.parse.urlencode(RANGE)}"
    body = json.dumps(BODY) if method == "POST" else None
    h = dict(headers, **({"Content-Type": "application/json"} if body else {}))
    return requests.request(method, url, headers=h, data=body, timeout=60).status_code


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", default=os.path.expanduser("~/.cache/logexport/real-quay/run"))
    ap.add_argument("--logexport", required=True)
    ap.add_argument("--label", default="off", help="Quay's FEATURE_SUPERUSERS_FULL_ACCESS: off/on")
    ap.add_argument("--record")
    ap.add_argument("--markdown")
    args = ap.parse_args()
    creds = json.load(open(os.path.join(args.run_dir, "creds.json")))
    quay = creds["quay"]
    extra = extra_tokens(quay, args.run_dir, creds["client_id"])
    rows, differ = [], 0
    for label, (user, scope, headers) in credentials(creds, extra).items():
        cells = []
        for method, path in ENDPOINTS:
            q, l = ask(quay, method, path, headers), ask(args.logexport, method, path, headers)
            differ += q != l
            cells.append((q, l))
        rows.append((label, user, scope, cells))
    head = "| credential | user | scopes | " + " | ".join(
        f"{m} {p.replace('/api/v1/', '')}" for m, p in ENDPOINTS) + " |"
    lines = [head, "|" + "---|" * (3 + len(ENDPOINTS))]
    for label, user, scope, cells in rows:
        shown = [f"{q}" if q == l else f"**{q} / {l}**" for q, l in cells]
        lines.append(f"| {label} | {user} | {scope} | " + " | ".join(shown) + " |")
    table = "\n".join(lines)
    print(f"Quay FEATURE_SUPERUSERS_FULL_ACCESS={args.label}: one number where Quay and "
          f"logexport agree, 'Quay / logexport' in bold where not\n")
    print(table)
    print(f"\n{len(rows)} credentials x {len(ENDPOINTS)} endpoints: {differ} cells differ")
    if args.markdown:
        open(args.markdown, "w").write(table + "\n")
    if args.record:
        fixture = json.load(open(args.record)) if os.path.exists(args.record) else {}
        fixture["_source"] = ("real Quay (quay/quay " + open(os.path.join(
            os.path.dirname(args.run_dir.rstrip("/")), "src", ".quay-commit")).read().split()[0]
            + ") answering deploy/quay-parity/parity.py")
        fixture["endpoints"] = [f"{m} {p}" for m, p in ENDPOINTS]
        fixture.setdefault("credentials", {})
        for label, user, scope, cells in rows:
            entry = fixture["credentials"].setdefault(label, {"user": user, "scopes": scope})
            entry[args.label] = [q for q, _ in cells]
        json.dump(fixture, open(args.record, "w"), indent=1)
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
