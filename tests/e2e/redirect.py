"""Test-only mitmproxy addon: a DNS override for the e2e rig.

In regular (system-proxy) mode the client asks for https://api.anthropic.com; this addon makes
mitmproxy's upstream connection go to the local fake upstream instead, so routing by host, TLS
interception with the mitmproxy CA and the SDKs' proxy support are all exercised for real.
Set HEADROOM_TEST_UPSTREAM=127.0.0.1:PORT.
"""

import os

from mitmproxy import connection, proxy

HOSTS = {"api.anthropic.com", "api.openai.com", "chatgpt.com", "gateway.test"}


class Redirect:
    def server_connect(self, data: proxy.server_hooks.ServerConnectionHookData) -> None:
        target = os.environ.get("HEADROOM_TEST_UPSTREAM")
        server: connection.Server = data.server
        if target and server.address and server.address[0] in HOSTS:
            host, port = target.rsplit(":", 1)
            server.address = (host, int(port))


addons = [Redirect()]
