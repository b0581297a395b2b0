#!/usr/bin/env python3
"""A real SMTP server for tests: accepts mail and writes each message to a directory.

Usage: smtp_sink.py --port N --dir DIR [--host 127.0.0.1] [--reject-rcpt-suffix @bad.example]
                    [--auth USER:PASSWORD] [--tls-cert PEM --tls-key PEM --tls starttls|implicit]

Each accepted message is written as DIR/<unix-ms>-<n>.eml: an `X-Envelope-From:` and an
`X-Envelope-To:` line (the SMTP envelope, which the headers alone do not show) followed by the
message exactly as received. Files appear atomically (written to a temporary name, then renamed),
so a test polling the directory never reads half a message. Recipients ending with
--reject-rcpt-suffix are answered `550 5.1.1 mailbox unavailable`. With --auth, clients must log
in (PLAIN or LOGIN, allowed without TLS since this is a local test server) with exactly those
credentials. With --tls starttls the server offers STARTTLS and refuses mail before it; with
--tls implicit it speaks TLS from the first byte (smtps). Prints "ready" once listening.
"""

import argparse
import asyncio
import itertools
import logging
import os
import signal
import ssl
import sys
import time
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    def __init__(self, directory, reject_suffix):
        self.directory = directory
        self.reject_suffix = reject_suffix.lower() if reject_suffix else None
        self.counter = itertools.count(1)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.reject_suffix and address.lower().endswith(self.reject_suffix):
            return "550 5.1.1 <%s>: mailbox unavailable" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        n = next(self.counter)
        name = "%d-%d.eml" % (int(time.time() * 1000), n)
        header = "X-Envelope-From: %s\r\nX-Envelope-To: %s\r\n" % (
            envelope.mail_from,
            ", ".join(envelope.rcpt_tos),
        )
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        tmp = os.path.join(self.directory, "." + name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(header.encode("ascii", "replace"))
            f.write(content)
        os.rename(tmp, os.path.join(self.directory, name))
        return "250 Message accepted for delivery as %s" % name


def authenticator_for(credentials):
    user, _, password = credentials.partition(":")

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        # handled=False makes aiosmtpd answer 535 itself; the default would send no reply at all.
        return AuthResult(success=ok, handled=False)

    return authenticate


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--reject-rcpt-suffix", default=None)
    parser.add_argument("--auth", default=None, metavar="USER:PASSWORD")
    parser.add_argument("--tls-cert", default=None, metavar="PEM")
    parser.add_argument("--tls-key", default=None, metavar="PEM")
    parser.add_argument("--tls", choices=["starttls", "implicit"], default=None)
    args = parser.parse_args()
    if bool(args.tls) != bool(args.tls_cert and args.tls_key):
        parser.error("--tls needs --tls-cert and --tls-key (and they need --tls)")
    tls = {}
    if args.tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        if args.tls == "starttls":
            tls = dict(tls_context=context, require_starttls=True)
        else:
            tls = dict(ssl_context=context)
    auth = {}
    if args.auth:
        # Plain-text AUTH is intended here: a loopback-only test server.
        warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        auth = dict(
            authenticator=authenticator_for(args.auth),
            auth_required=True,
            auth_require_tls=False,
        )

    os.makedirs(args.dir, exist_ok=True)
    controller = Controller(
        Sink(args.dir, args.reject_rcpt_suffix),
        hostname=args.host,
        port=args.port,
        # The sink is a test double: accept 8BITMIME/SMTPUTF8 bodies verbatim.
        decode_data=False,
        enable_SMTPUTF8=True,
        **auth,
        **tls,
    )
    controller.start()
    print("ready", flush=True)

    stop = asyncio.Event()

    async def wait():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

    try:
        asyncio.run(wait())
    finally:
        controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
