"""Ask the demo app by voice in a real browser: headless Chromium (the system's, driven by playwright) with its
fake microphone playing a wav file. The browser test (test_demo_browser.py) imports it; run as a script, it takes
the README's screenshot:

    .venv/bin/python tests/browser_harness.py --params params/default.yaml --audio q.wav --screenshot reports/demo_screenshot.png
"""
from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from surgvqa.config import REPO_ROOT

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def chromium_path() -> str | None:
    """The system's Chromium (Debian: apt-get install chromium), or None."""
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


class PageError(RuntimeError):
    """The app showed a message instead of an answer (its text is the message)."""


@dataclass
class BrowserAnswer:
    clip: str  # the clip chosen in the page
    heard: bytes  # the WAV the page recorded and sent to the kernel (its "heard" player)
    graft_answer: str
    graft_transcript: str
    asr_answer: str | None
    asr_transcript: str | None
    page_text: str


class DemoServer:
    """`python -m surgvqa.demo` on a free port of 127.0.0.1, stopped with its kernels on exit."""

    def __init__(self, params: str, run_root: str | None = None, port: int | None = None, log: Path | None = None):
        from surgvqa.demo import free_port

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        command = [sys.executable, "-m", "surgvqa.demo", "--params", params, "--port", str(self.port)]
        if run_root:
            command += ["--run-root", run_root]
        self.log = log
        out = open(log, "w") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, timeout: float = 120) -> "DemoServer":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the demo server exited ({self.proc.returncode}); log: {self.log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=2).close()  # voila listens
                return self
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"the demo server did not listen on {self.url} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: voila and the kernels it started
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)

    def __enter__(self) -> "DemoServer":
        try:
            return self.wait()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def ask_by_voice(url: str, wav: str | Path, seconds: float = 3.0, screenshot: str | Path | None = None,
                 timeout_s: float = 300) -> BrowserAnswer:
    """Open the app, press Record, let the fake microphone play `wav` for `seconds`, press Stop and ask,
    and read the answers the page shows."""
    from playwright.sync_api import sync_playwright

    chromium = chromium_path()
    if chromium is None:
        raise FileNotFoundError("no Chromium on PATH (Debian: apt-get install chromium)")
    args = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={Path(wav).resolve()}", "--autoplay-policy=no-user-gesture-required"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1400})
            page.goto(url, timeout=timeout_s * 1000, wait_until="domcontentloaded")
            record = page.locator("button.surgvqa-record")
            failed = page.get_by_text("There was an error when executing cell")  # voila, for an unexpected error
            record.or_(page.locator(".surgvqa-error")).or_(failed).first.wait_for(timeout=timeout_s * 1000)
            if page.locator(".surgvqa-error").count():  # the app could not load the run
                raise PageError(page.locator(".surgvqa-error").first.inner_text().strip())
            if failed.count():
                raise PageError(failed.first.inner_text().strip())
            clip = page.locator(".widget-dropdown select").first.input_value(timeout=timeout_s * 1000)
            record.click()
            page.locator(".surgvqa-record-status", has_text="recording").wait_for(timeout=30_000)
            page.wait_for_timeout(seconds * 1000)
            record.click()
            result = page.locator(".surgvqa-result, .surgvqa-error").first
            result.wait_for(timeout=timeout_s * 1000)
            if page.locator(".surgvqa-error").count():
                raise PageError(page.locator(".surgvqa-error").first.inner_text().strip())
            src = page.locator("audio.surgvqa-heard").get_attribute("src")
            asr = page.locator("tr.surgvqa-asr")
            answer = BrowserAnswer(
                clip=clip, heard=base64.b64decode(src.split(",", 1)[1]),
                graft_answer=page.locator("tr.surgvqa-graft td.answer").inner_text().strip(),
                graft_transcript=page.locator("tr.surgvqa-graft td.transcript").inner_text().strip(),
                asr_answer=asr.locator("td.answer").inner_text().strip() if asr.count() else None,
                asr_transcript=asr.locator("td.transcript").inner_text().strip() if asr.count() else None,
                page_text=page.inner_text("body"))
            if screenshot:
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
            return answer
        finally:
            browser.close()


def heldout_voice_question(params: str, run_root: str | None = None) -> Path:
    """The audio of the run's first held-out-voice test question (a voice never heard in training)."""
    from surgvqa import datastep
    from surgvqa.config import Config

    cfg = Config.from_yaml(params, {"run_root": run_root} if run_root else None)
    test = datastep.load_run_data(cfg, build=False).splits["test"]
    return next(test.audio_path(r) for r in test.rows if r.get("group") == "heldout_voice" and r.get("audio"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params/default.yaml")
    parser.add_argument("--run-root")
    parser.add_argument("--audio", help="the question the fake microphone plays (16-bit PCM wav); "
                                        "default: the run's first held-out-voice test question")
    parser.add_argument("--seconds", type=float, default=3.0, help="how long to record")
    parser.add_argument("--screenshot", default="reports/demo_screenshot.png")
    args = parser.parse_args(argv)
    audio = args.audio or heldout_voice_question(args.params, args.run_root)
    with DemoServer(args.params, args.run_root) as server:
        answer = ask_by_voice(server.url, audio, args.seconds, args.screenshot)
    print(f"clip {answer.clip}: graft heard {answer.graft_transcript!r}, answered {answer.graft_answer!r}; "
          f"ASR heard {answer.asr_transcript!r}, answered {answer.asr_answer!r}; screenshot {args.screenshot}")


if __name__ == "__main__":
    main(sys.argv[1:])
