"""Take docs/chat.png: a real conversation with the embedded model in the chat, in Chromium.

Run after `ladder demo` (which ingests docs/ and loads Chinook):
    .venv/bin/python scripts/chat_screenshot.py
It starts `ladder chat` on a free port, asks a question about the Chinook database and one about
Ladder's documents, and saves the page once both answers are complete.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from agent.chat.browser import CHROMIUM, CHROMIUM_FLAGS
from agent.models.local_server import free_port

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    ("Which five artists have the most tracks?", "Iron Maiden"),
    ("How do I point Ladder at my own PostgreSQL server?", None),
]


def main() -> None:
    port = free_port()
    command = [sys.executable, "-m", "agent.cli", "chat", "--port", str(port), "-c", "ladder-docs", "--db", "chinook"]
    server = subprocess.Popen(command, cwd=ROOT)
    try:
        _wait_http(port)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(locale="en-US", viewport={"width": 1300, "height": 1500})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
            for question, expected in QUESTIONS:
                before = page.locator("#chat").inner_text()
                page.locator("#msg textarea").fill(question)
                page.locator("#msg textarea").press("Enter")
                last, stable_since = before, time.monotonic()
                deadline = time.monotonic() + 600
                while time.monotonic() < deadline:  # until the answer is there and has stopped changing
                    text = page.locator("#chat").inner_text()
                    if text != last:
                        last, stable_since = text, time.monotonic()
                    retry = page.locator('#chat button[aria-label="Retry"]')
                    finished = text != before and retry.count() and retry.last.is_enabled()
                    if finished and time.monotonic() - stable_since > 5 and (expected is None or expected in text):
                        break
                    time.sleep(1)
            page.screenshot(path=str(ROOT / "docs" / "chat.png"), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=60)


def _wait_http(port: int, timeout_s: float = 600) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
            return
        except OSError:
            time.sleep(2)
    raise SystemExit("the chat did not start")


if __name__ == "__main__":
    main()
