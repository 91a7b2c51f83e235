"""A real browser for the lab: Debian's chromium, headless, driven by Selenium through Debian's
chromedriver (tests/deps/browser.sh installs both; nothing is downloaded).

chromedriver is started by the lab's reaper (its own session, dies with pytest) on a loopback port,
with a fresh profile, and chromium is its child: stopping the browser kills the whole group.

    with Browser(out_dir) as browser:
        browser.get("http://127.0.0.1/")
        browser.fill_login("farm", password)
        browser.wait_for("three cards", lambda: len(browser.all(".card")) == 3)
        browser.screenshot("overview")
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from tests.lab.harness.container import LabError
from tests.lab.harness.procs import REAPER
from tests.lab.harness.waiting import wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Nothing but the page under test: no updates, sync, safe-browsing pings or first-run pages.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
)
# The dev-server ports this lab's browser tests may use for chromedriver.
DRIVER_PORTS = range(8815, 8820)
PHONE = (375, 812)
TABLET = (1280, 900)
FINISH_WIZARD = "//div[@id='wizard_dialog']//*[self::button or self::a][normalize-space()='Finish']"


def _free_port(candidates: range) -> int:
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise LabError(f"no free port for chromedriver in {candidates.start}-{candidates.stop - 1}")


def have_browser() -> str | None:
    """Why the browser cannot run here, or None."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    return f"{', '.join(missing)} missing: run tests/deps/browser.sh" if missing else None


class Browser:
    def __init__(self, out_dir: Path, size: tuple[int, int] = TABLET) -> None:
        problem = have_browser()
        if problem:
            raise LabError(problem)
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.profile = Path(tempfile.mkdtemp(prefix="oblab-chromium-"))
        self.port = _free_port(DRIVER_PORTS)
        self.driver_log = out_dir / "chromedriver.log"
        self.driver_proc = REAPER.spawn(
            [CHROMEDRIVER, f"--port={self.port}", f"--log-path={self.driver_log}", "--allowed-ips=127.0.0.1"],
            env={"PATH": "/usr/bin:/bin", "HOME": str(self.profile)},
        )
        self._wait_driver()
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile / 'profile'}")
        options.add_argument(f"--window-size={size[0]},{size[1]}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Remote(command_executor=f"http://127.0.0.1:{self.port}", options=options)
        self.driver.set_page_load_timeout(60)
        self.shots: list[Path] = []

    def _wait_driver(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.driver_proc.poll() is not None:
                raise LabError(f"chromedriver exited ({self.driver_proc.returncode}): see {self.driver_log}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.2)
        raise LabError(f"chromedriver did not listen on {self.port} within {timeout:.0f}s")

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(WebDriverException, OSError):
            self.driver.quit()
        REAPER.stop(self.driver_proc, grace=5)
        shutil.rmtree(self.profile, ignore_errors=True)

    # -- pages -------------------------------------------------------------------------------
    def get(self, url: str) -> None:
        self.driver.get(url)

    @property
    def url(self) -> str:
        return str(self.driver.current_url)

    def set_size(self, width: int, height: int) -> None:
        self.driver.set_window_size(width, height)

    def one(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[WebElement]:
        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def text(self, css: str) -> str:
        try:
            return str(self.one(css).text)
        except (NoSuchElementException, StaleElementReferenceException):
            return ""

    def script(self, js: str, *args: Any) -> Any:
        return self.driver.execute_script(js, *args)

    def run_async(self, js: str, timeout: float = 60.0) -> Any:
        """Run js in the page as its own script would (an async function body: `return` its result)."""
        self.driver.set_script_timeout(timeout)
        done = "const done = arguments[arguments.length - 1];"
        wrapped = f"{done} (async () => {{ {js} }})().then(done, e => done(String(e)));"
        return self.driver.execute_async_script(wrapped)

    def fill_login(self, username: str, password: str) -> None:
        """Fill in and send a login form (the farm's, or OctoPrint's) on the current page."""
        self.one("input[name=username]").send_keys(username)
        field = self.one("input[name=password]")
        field.send_keys(password)
        field.submit()

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 60.0, every: float = 0.5) -> Any:
        def safe() -> Any:
            try:
                return check()
            except (NoSuchElementException, StaleElementReferenceException):
                return None

        try:
            return wait_until(what, safe, timeout=timeout, every=every)
        except AssertionError:
            self.screenshot(f"timeout-{len(self.shots):02d}")
            raise

    def open_octoprint_tab(self, tab: str, timeout: float = 90.0) -> None:
        """Click one of OctoPrint's tabs ("control") once its UI is ready, and wait for its content."""
        link = f"a[href='#{tab}']"
        self.wait_for(f"OctoPrint's {tab} tab", lambda: (t := self.all(link)) and t[0].is_displayed(), timeout)

        def click() -> bool:
            # OctoPrint covers its page with "loading" until its UI and websocket are up. After the
            # first upload its File Check plugin suggests a check in a wizard: a maker clicks Finish.
            for finish in self.driver.find_elements(By.XPATH, FINISH_WIZARD):
                if finish.is_displayed():
                    with contextlib.suppress(ElementClickInterceptedException):
                        finish.click()
                    return False
            try:
                self.one(link).click()
            except ElementClickInterceptedException:
                return False
            return True

        self.wait_for("OctoPrint's UI to be ready (no loading or offline overlay)", click, timeout=timeout)
        self.wait_for(f"the {tab} tab's content", lambda: self.one(f"#{tab}").is_displayed(), timeout=30)

    def screenshot(self, name: str) -> Path:
        """A PNG of the whole visible window, kept with the test output."""
        path = self.out_dir / f"{len(self.shots) + 1:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        self.shots.append(path)
        return path

    def console_errors(self) -> list[str]:
        """The page's own JavaScript errors (chromium's log; network 4xx/5xx of resources included)."""
        try:
            entries = self.driver.execute("getLog", {"type": "browser"})["value"]
        except WebDriverException:
            return []
        return [str(e.get("message")) for e in entries if e.get("level") == "SEVERE"]


@contextlib.contextmanager
def browser(out_dir: Path, size: tuple[int, int] = TABLET) -> Iterator[Browser]:
    opened = Browser(out_dir, size)
    try:
        yield opened
    finally:
        opened.close()
