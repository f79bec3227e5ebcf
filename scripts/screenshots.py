"""Screenshots of the web page for the README, taken in headless Chromium against a real server.

Usage: .venv/bin/python scripts/screenshots.py --bundle DIR [--query "sofa"] [--user ID]
           [--out readme_images]

Starts `fbmarket serve --bundle DIR` on a free loopback port, waits for /ready, searches
the page as a buyer would (typed words and a picked buyer), saves the results page as
web_search.png, opens the first result and saves the listing page (with its similar
listings) as web_listing.png. Needs Debian's chromium (apt-get install chromium) and
Playwright (requirements-dev.txt).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, server: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode}")
        try:
            if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} was not ready after {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--query", default="sofa")
    parser.add_argument("--user", help="a user id from the bundle's database (default: the first)")
    parser.add_argument("--out", type=Path, default=REPO / "readme_images")
    parser.add_argument("--chromium", default=os.environ.get("FBMARKET_CHROMIUM") or shutil.which("chromium"))
    args = parser.parse_args()
    if not args.chromium:
        print("chromium not found (apt-get install chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "fbmarket.cli", "serve", "--bundle", str(args.bundle), "--port", str(port)]
    server = subprocess.Popen(command, cwd=REPO)
    try:
        wait_ready(url, server)
        params = {"q": args.query, "k": 10}
        if args.user:
            params["user_id"] = args.user
        args.out.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{url}/?{urlencode(params)}")
            page.wait_for_selector("#results .card")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(args.out / "web_search.png"))
            page.click("#results .card .card-link >> nth=0")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(args.out / "web_listing.png"))
            browser.close()
        print(f"written: {args.out / 'web_search.png'}, {args.out / 'web_listing.png'}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
