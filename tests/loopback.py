"""Local servers and the browser that visits them, for the end-to-end tests and the app benchmark: free loopback
ports and Debian's headless Chromium, started with the flags this closed network needs."""

from __future__ import annotations

import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"
CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps calling Google's hosts, which this network refuses.
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def launch_chromium(driver):
    """Headless Debian Chromium through a Playwright driver (`sync_playwright()`), not Playwright's own download."""
    return driver.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
