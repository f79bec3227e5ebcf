"""Screenshots of the web page for the README, taken in headless Chromium against a real server.

Usage: .venv/bin/python scripts/screenshots.py --bundle DIR [--query "sofa"] [--user ID]
           [--out readme_images]

Starts `fbmarket serve --bundle DIR` on a free loopback port (benchmarks/harness.py's
runner; writes need no key here), waits for /ready, searches
the page as a buyer would (typed words and a picked buyer), saves the results page as
web_search.png, opens the first result and saves the listing page (with its similar
listings) as web_listing.png, then types a listing into the Sell page (`--sell-title`,
optionally `--sell-photo`) and saves it with its advice as web_sell.png. Needs Debian's chromium (apt-get install chromium) and
Playwright (requirements-dev.txt).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from harness import ServerProcess  # noqa: E402  (the benchmarks' `fbmarket serve` runner)

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--query", default="sofa")
    parser.add_argument("--user", help="a user id from the bundle's database (default: the first)")
    parser.add_argument("--sell-title", default="Oak dining table with 4 chairs")
    parser.add_argument("--sell-description", default="Solid oak, a few marks on the top. Collection only.")
    parser.add_argument("--sell-photo", type=Path, help="a photo to add on the Sell page")
    parser.add_argument("--out", type=Path, default=REPO / "readme_images")
    parser.add_argument("--chromium", default=os.environ.get("FBMARKET_CHROMIUM") or shutil.which("chromium"))
    args = parser.parse_args()
    if not args.chromium:
        print("chromium not found (apt-get install chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    server = ServerProcess(args.bundle).start()
    try:
        params = {"q": args.query, "k": 10}
        if args.user:
            params["user_id"] = args.user
        args.out.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{server.url}/?{urlencode(params)}")
            page.wait_for_selector("#results .card")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(args.out / "web_search.png"))
            page.click("#results .card .card-link >> nth=0")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(args.out / "web_listing.png"))
            page.goto(f"{server.url}/sell")
            page.fill("#title", args.sell_title)
            page.fill("#description", args.sell_description)
            page.fill("#location", "Leeds, West Yorkshire")
            if args.sell_photo:
                page.set_input_files("#photos", str(args.sell_photo))
            page.wait_for_selector("#price-advice #price-median")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(args.out / "web_sell.png"), full_page=True)
            browser.close()
        names = ", ".join(str(args.out / n) for n in ("web_search.png", "web_listing.png", "web_sell.png"))
        print(f"written: {names}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
