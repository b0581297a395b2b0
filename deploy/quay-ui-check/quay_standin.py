#!/usr/bin/env python3
"""A stand-in for the parts of Project Quay that Quay's React UI (quay/quay `web/`) and
logexport's `[auth] mode = "quay"` call, for the by-hand UI check in run.sh. Not a Quay.

Answer shapes follow quay/quay:
- `/config`, `/csrf_token`: endpoints/web.py `config()`, `csrf_token()`; the session cookie is
  named `_csrf_token` as Quay's `SESSION_COOKIE_NAME` (config.py).
- `/api/v1/signin`, `/api/v1/signout`, `/api/v1/user/`: endpoints/api/user.py (`Signin.post`
  -> `conduct_signin` -> `{"success": true}`; `user_view` for the current user).
- `/api/v1/organization/{org}`: endpoints/api/organization.py `org_view`.
- `/api/v1/repository/{ns}/{repo}`, `/api/v1/repository?namespace=`: endpoints/api/repository.py
  (`RepositoryBaseElement.to_dict` / `ImageRepositoryRepository.to_dict` + `can_write`, `can_admin`).
- Errors: endpoints/api/__init__.py (`{"error_message", "error_type", "title", "status", "detail"}`).
Non-GET API calls need the session's CSRF token in `X-CSRF-Token` (endpoints/csrf.py), as Quay.

Fixture: alice (admin of organization ns0, member of ns1 with admin rights on ns1/web only, own
namespace alice), root (superuser). OAuth bearer tokens `alice-oauth` / `root-oauth` for curl.
"""
import argparse
import hashlib
import http.cookies
import json
import mimetypes
import os
import re
import secrets
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

USERS = {
    "alice": {"password": "alice-pw", "email": "alice@example.com", "super_user": False},
    "root": {"password": "root-pw", "email": "root@example.com", "super_user": True},
}
OAUTH = {"alice-oauth": "alice", "root-oauth": "root"}
# org -> {user: "admin" | "member"}
ORGS = {
    "ns0": {"alice": "admin"},
    "ns1": {"alice": "member"},
    "ns2": {},
}
# (namespace, repo) -> {user: "admin" | "write" | "read"}
REPOS = {
    ("ns0", "web"): {},
    ("ns0", "api"): {},
    ("ns1", "web"): {"alice": "admin"},
    ("ns1", "api"): {"alice": "read"},
    ("ns2", "web"): {},
    ("alice", "app"): {},
}

SESSIONS = {}  # sid -> {"csrf": str, "user": str | None}
LOCK = threading.Lock()
STATS = {"user_calls_by_logexport": 0, "question_calls_by_logexport": 0, "unknown": [], "hooks": []}


def repo_admin(ns, repo, user):
    """AdministerRepositoryPermission: a direct admin role, its organization's admin, its user."""
    return (REPOS.get((ns, repo), {}).get(user) == "admin" or ORGS.get(ns, {}).get(user) == "admin"
            or ns == user)


def avatar(name, email=None):
    h = hashlib.md5((email or name).encode()).hexdigest()
    return {"name": name, "hash": h, "color": "#1f77b4", "kind": "user"}


def org_role(org, user):
    return ORGS.get(org, {}).get(user)


def is_super(user):
    return bool(user and USERS[user]["super_user"])


def user_view(user):
    """endpoints/api/user.py user_view (with FEATURE_SUPER_USERS)."""
    u = USERS[user]
    orgs = [
        {
            "name": o,
            "avatar": avatar(o),
            "can_create_repo": org_role(o, user) == "admin",
            "public": False,
            "is_org_admin": org_role(o, user) == "admin",
            "preferred_namespace": False,
        }
        for o in ORGS
        if org_role(o, user)
    ]
    return {
        "anonymous": False,
        "username": user,
        "avatar": avatar(user, u["email"]),
        "can_create_repo": True,
        "is_me": True,
        "verified": True,
        "email": u["email"],
        "logins": [],
        "invoice_email": False,
        "invoice_email_address": None,
        "preferred_namespace": False,
        "tag_expiration_s": 1209600,
        "prompts": [],
        "company": None,
        "family_name": None,
        "given_name": None,
        "location": None,
        "is_free_account": True,
        "has_password_set": True,
        "organizations": orgs,
        "super_user": u["super_user"],
        "global_readonly_super_user": False,
    }


def org_view(org, user):
    """endpoints/api/organization.py org_view (FEATURE_SUPERUSERS_FULL_ACCESS off)."""
    role = org_role(org, user)
    is_admin = role == "admin"
    view = {
        "name": org,
        "email": f"{org}@example.com" if is_admin else "",
        "avatar": avatar(org),
        "is_admin": is_admin,
        "is_member": role is not None,
    }
    if role:
        view["teams"] = {"owners": {"name": "owners", "role": "admin", "member_count": 1,
                                    "repo_count": 0, "is_synced": False, "can_view": is_admin,
                                    "avatar": avatar("owners"), "description": ""}}
        view["ordered_teams"] = ["owners"]
    if is_admin:
        view.update({"invoice_email": False, "invoice_email_address": None,
                     "tag_expiration_s": 1209600, "is_free_account": True})
    return view


def repo_perm(ns, repo, user):
    if user is None:
        return None
    if ns == user or org_role(ns, user) == "admin":
        return "admin"
    return REPOS.get((ns, repo), {}).get(user)


def repo_view(ns, repo, user):
    perm = repo_perm(ns, repo, user)
    return {
        "namespace": ns,
        "name": repo,
        "kind": "image",
        "description": f"{ns}/{repo} (stand-in)",
        "is_public": False,
        "is_organization": ns in ORGS,
        "is_starred": False,
        "status_token": "",
        "trust_enabled": False,
        "tag_expiration_s": 1209600,
        "is_free_account": True,
        "state": "NORMAL",
        "tags": {},
        "can_write": perm in ("admin", "write"),
        "can_admin": perm == "admin",
    }


def frontend_config(host):
    """endpoints/web.py config(): the keys the React UI reads."""
    return {
        "config": {
            "SERVER_HOSTNAME": host,
            "PREFERRED_URL_SCHEME": "http",
            "REGISTRY_TITLE": "Project Quay",
            "REGISTRY_TITLE_SHORT": "Quay",
            "AUTHENTICATION_TYPE": "Database",
            "DOCUMENTATION_ROOT": "https://docs.projectquay.io/",
            "TAG_EXPIRATION_OPTIONS": ["0s", "1d", "1w", "2w", "4w"],
            "FOOTER_LINKS": {},
            "BRANDING": {"logo": "/static/img/quay-horizontal-color.svg"},
            "CONTACT_INFO": [],
        },
        "features": {
            "SUPER_USERS": True,
            "SUPERUSERS_FULL_ACCESS": False,
            "USER_CREATION": True,
            "DIRECT_LOGIN": True,
            "BILLING": False,
            "QUOTA_MANAGEMENT": False,
            "EDIT_QUOTA": False,
            "REPO_MIRROR": False,
            "ORG_MIRROR": False,
            "BUILD_SUPPORT": False,
            "ANONYMOUS_ACCESS": False,
            "UI_V2": True,
            "AUDIT_LOG": True,
            "CHANGE_TAG_EXPIRATION": True,
            "USER_METADATA": False,
            "PROXY_CACHE": False,
            "IMAGE_EXPIRY_TRIGGER": False,
            "AUTO_PRUNE": False,
            "SECURITY_SCANNER": False,
        },
        "oauth": {},
        "external_login": [],
        "registry_state": "normal",
        "account_recovery_mode": False,
        "version_number": "Quay (stand-in for the logexport UI check)",
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    ui_dir = None

    def log_message(self, fmt, *args):
        sys.stderr.write("standin: %s %s\n" % (self.address_string(), fmt % args))

    # --- helpers -------------------------------------------------------------------------
    def send_json(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, error_type, message):
        self.send_json(status, {"status": status, "error_type": error_type, "title": error_type,
                                "detail": message, "error_message": message,
                                "type": f"/api/v1/error/{error_type}"})

    def session(self):
        raw = self.headers.get("Cookie")
        if not raw:
            return None, None
        c = http.cookies.SimpleCookie()
        try:
            c.load(raw)
        except http.cookies.CookieError:
            return None, None
        sid = c.get("_csrf_token")
        if not sid:
            return None, None
        with LOCK:
            return sid.value, SESSIONS.get(sid.value)

    def new_session(self, user=None):
        sid = secrets.token_urlsafe(24)
        sess = {"csrf": secrets.token_urlsafe(48), "user": user}
        with LOCK:
            SESSIONS[sid] = sess
        cookie = f"_csrf_token={sid}; Path=/; HttpOnly; SameSite=Lax"
        return sid, sess, cookie

    def current_user(self):
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return OAUTH.get(auth[7:].strip()), True
        _, sess = self.session()
        return (sess or {}).get("user"), False

    def from_logexport(self):
        # The browser reaches the stand-in through nginx (X-Forwarded-For); logexport asks it
        # directly (auth.quay_url), so these counters are logexport's identity/permission calls.
        return "X-Forwarded-For" not in self.headers

    def count_question(self):
        if self.from_logexport():
            STATS["question_calls_by_logexport"] += 1

    def body_json(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            return {}

    def csrf_ok(self):
        _, sess = self.session()
        if self.headers.get("Authorization", "").startswith("Bearer "):
            return True
        return bool(sess) and secrets.compare_digest(sess["csrf"], self.headers.get("X-CSRF-Token", ""))

    # --- routes --------------------------------------------------------------------------
    def do_GET(self):
        url = urlsplit(self.path)
        path = url.path
        if path == "/config":
            return self.send_json(200, frontend_config(self.headers.get("Host", "localhost")))
        if path == "/csrf_token":
            sid, sess = self.session()
            if sess:
                return self.send_json(200, {"csrf_token": sess["csrf"]})
            _, sess, cookie = self.new_session()
            return self.send_json(200, {"csrf_token": sess["csrf"]}, [("Set-Cookie", cookie)])
        if path == "/_standin/stats":
            return self.send_json(200, STATS)
        if path.startswith("/api/"):
            return self.api_get(path, parse_qs(url.query))
        return self.static(path)

    def api_get(self, path, query):
        user, _ = self.current_user()
        if path == "/api/v1/user/":
            if self.from_logexport():
                STATS["user_calls_by_logexport"] += 1
            if not user:
                return self.error(401, "invalid_token", "Requires authentication")
            return self.send_json(200, user_view(user))
        if user is None:
            return self.error(401, "invalid_token", "Requires authentication")
        # logexport's permission questions (src/access/quay.rs `Question`), each guarded as the
        # Quay endpoint it stands for; the fixture's users sign in (every scope), so roles decide.
        m = re.fullmatch(r"/api/v1/organization/([a-z0-9_.-]+)/members", path)
        if m:
            self.count_question()
            org = m.group(1)
            if ORGS.get(org, {}).get(user) == "admin" or org == user:
                if org not in ORGS:
                    return self.error(404, "not_found", "Not Found")
                return self.send_json(200, {"members": []})
            return self.error(403, "insufficient_scope", "Unauthorized")
        m = re.fullmatch(r"/api/v1/repository/([a-z0-9_.-]+)/([a-z0-9_.-]+)/permissions/user/", path)
        if m:
            self.count_question()
            if not repo_admin(*m.groups(), user):
                return self.error(403, "insufficient_scope", "Unauthorized")
            return self.send_json(200, {"permissions": {}})
        m = re.fullmatch(r"/api/v1/organization/([a-z0-9_.-]+)", path)
        if m:
            org = m.group(1)
            if org not in ORGS:
                return self.error(404, "not_found", "Not Found")
            return self.send_json(200, org_view(org, user))
        m = re.fullmatch(r"/api/v1/repository/([a-z0-9_.-]+)/([a-z0-9_.-]+)", path)
        if m:
            ns, repo = m.groups()
            if (ns, repo) not in REPOS:
                return self.error(404, "not_found", "Not Found")
            # require_repo_read(allow_for_superuser=True): every fixture repository is private.
            if repo_perm(ns, repo, user) is None and not is_super(user):
                return self.error(403, "insufficient_scope", "Unauthorized")
            return self.send_json(200, repo_view(ns, repo, user))
        if path == "/api/v1/repository":
            ns = (query.get("namespace") or [None])[0]
            repos = [repo_view(n, r, user) | {"last_modified": 1764300000, "popularity": 0.0}
                     for (n, r) in REPOS if (ns is None or n == ns) and (repo_perm(n, r, user) or is_super(user))]
            for r in repos:
                r.pop("tags", None)
            return self.send_json(200, {"repositories": repos})
        m = re.fullmatch(r"/api/v1/users/([a-z0-9_.-]+)", path)
        if m and m.group(1) in USERS:
            name = m.group(1)
            return self.send_json(200, {"username": name, "avatar": avatar(name), "super_user": False})
        if path == "/api/v1/messages":
            return self.send_json(200, {"messages": []})
        if path == "/api/v1/user/notifications":
            return self.send_json(200, {"notifications": [], "additional": False})
        if path in ("/api/v1/superuser/organizations/",):
            if not is_super(user):
                return self.error(403, "insufficient_scope", "Unauthorized")
            return self.send_json(200, {"organizations": [org_view(o, user) for o in ORGS]})
        if path in ("/api/v1/superuser/users/",):
            if not is_super(user):
                return self.error(403, "insufficient_scope", "Unauthorized")
            return self.send_json(200, {"users": [
                {"username": u, "email": v["email"], "verified": True, "avatar": avatar(u),
                 "super_user": v["super_user"], "enabled": True} for u, v in USERS.items()]})
        # Tabs the organization page loads beside Logs (endpoints/api/organization.py,
        # prototype.py, user.py): empty lists.
        for suffix, key in (("/applications", "applications"), ("/prototypes", "prototypes"),
                            ("/user/authorizations", "authorizations")):
            if path.endswith(suffix):
                return self.send_json(200, {key: []})
        if path.endswith("/robots") or "/robots" in path:
            return self.send_json(200, {"robots": []})
        STATS["unknown"].append(path)
        return self.error(404, "not_found", f"the stand-in does not serve {path}")

    def do_POST(self):
        path = urlsplit(self.path).path
        body = self.body_json()
        if path == "/_standin/hook":  # the callback URL of the UI check's export
            STATS["hooks"].append(body)
            return self.send_json(200, {"ok": True})
        if path == "/api/v1/signin":
            if not self.csrf_ok():
                return self.error(403, "csrf", "CSRF token was invalid or missing.")
            if "username" not in body:  # the SigninUser schema (logexport's CSRF question sends {})
                return self.error(400, "invalid_request", "'username' is a required property")
            name, pw = body.get("username"), body.get("password")
            if name not in USERS or USERS[name]["password"] != pw:
                return self.send_json(403, {"success": False, "invalidCredentials": True,
                                            "message": "Invalid Username or Password"})
            sid, sess = self.session()
            with LOCK:
                sess["user"] = name
            return self.send_json(200, {"success": True})
        if path == "/api/v1/signout":
            sid, sess = self.session()
            if sess:
                with LOCK:
                    sess["user"] = None
            return self.send_json(200, {"success": True})
        STATS["unknown"].append("POST " + path)
        return self.error(404, "not_found", f"the stand-in does not serve POST {path}")

    def do_PUT(self):
        path = urlsplit(self.path).path
        body = self.body_json()
        m = re.fullmatch(r"/api/v1/repository/([a-z0-9_.-]+)/([a-z0-9_.-]+)/permissions/user/[a-z0-9_.-]+", path)
        if m:  # logexport's repository-export question: the guard, then the body's schema
            self.count_question()
            if not self.csrf_ok():
                return self.error(403, "csrf", "CSRF token was invalid or missing.")
            user, _ = self.current_user()
            if user is None:
                return self.error(401, "invalid_token", "Requires authentication")
            if not repo_admin(*m.groups(), user):
                return self.error(403, "insufficient_scope", "Unauthorized")
            if "role" not in body:
                return self.error(400, "invalid_request", "'role' is a required property")
        STATS["unknown"].append("PUT " + path)
        return self.error(404, "not_found", f"the stand-in does not serve PUT {path}")

    def static(self, path):
        root = Handler.ui_dir
        rel = os.path.normpath(path.lstrip("/"))
        file = os.path.join(root, rel)
        if rel.startswith("..") or not os.path.isfile(file):
            file = os.path.join(root, "index.html")  # the single-page app's own routes
        with open(file, "rb") as f:
            data = f.read()
        self.send_response(200)
        self.send_header("Content-Type", mimetypes.guess_type(file)[0] or "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bind", default="127.0.0.1:8090")
    p.add_argument("--ui-dir", required=True, help="the built React UI (quay/quay web/dist)")
    a = p.parse_args()
    Handler.ui_dir = a.ui_dir
    host, port = a.bind.rsplit(":", 1)
    srv = ThreadingHTTPServer((host, int(port)), Handler)
    print(f"quay stand-in on http://{a.bind}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
