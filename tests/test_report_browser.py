"""The HTML report in a real headless browser: Debian's chromium driven by selenium.

The report of a real audit of a zoo model with image inputs (every analysis
installed at the time) is opened from a file:// URL: it must load with no
console error and no network request, show its main sections, plots and sample
images, and fit the window's width; a screenshot of its first screen is saved
to ``test-artifacts/report-screenshot.png``. A hand-built hostile report
(``<script>`` and ``onerror=`` payloads in model metadata, class names, titles...)
must run no script, and the page's Content-Security-Policy must block scripts
even if one slipped through the escaping.

Needs /usr/bin/chromium and /usr/bin/chromedriver (``tools/install-test-browser.sh``,
part of the README's test command) and selenium (``.[test]``). Without them the
tests fail: a skipped browser test would prove nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
from test_reports import PAYLOAD, hostile_report, model_info

import audit_model_zoo as zoo
from audit_core.plugins import PluginHost
from audit_reports import html_report
from audit_reports.html_report import render_html
from robustness_audit import cli

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOT = ARTIFACTS / "report-screenshot.png"
CHROMIUM = Path(os.environ.get("AUDIT_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("AUDIT_CHROMEDRIVER", "/usr/bin/chromedriver"))
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--window-size=1280,1000",
)
MARK = "<script>document.title='pwned';window.__xss=1</script>"
MARK_IMG = "<img src=x onerror=\"document.title='pwned';window.__xss=1\">"
AUDIT_BUDGET = {"steps": 10, "restarts": 1, "bisection_steps": 4}
"""Attack budgets lowered for speed: the [attacks] table and any analysis Config with them."""


def _require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install '.[test]')")
    if missing:
        pytest.fail(f"needs {', '.join(missing)} (run sh tools/install-test-browser.sh)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    driver.get("about:blank")
    try:
        yield driver
    finally:
        driver.quit()


@dataclasses.dataclass
class Page:
    """What one page load did: console messages, every network request (by the browser's
    request id: its URL) and why requests were blocked."""

    url: str
    console: list[dict[str, Any]]
    requests: dict[str, str]
    blocked: dict[str, str]

    @property
    def urls(self) -> list[str]:
        return list(self.requests.values())


def open_page(driver, path: Path) -> Page:
    driver.get_log("browser"), driver.get_log("performance")  # drop earlier entries
    url = path.resolve().as_uri()
    driver.get(url)
    from selenium.webdriver.support.ui import WebDriverWait

    # get() can return while a busy machine is still parsing the page
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )
    requests, blocked = {}, {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent" and url in (
            params["documentURL"],
            params["request"]["url"],
        ):  # made by our page (not by the browser's own start page)
            requests[params["requestId"]] = params["request"]["url"]
        elif message["method"] == "Network.loadingFailed" and params.get("blockedReason"):
            blocked[params["requestId"]] = params["blockedReason"]
    return Page(url, driver.get_log("browser"), requests, blocked)


def assert_offline(page: Page) -> None:
    """Only the page itself was requested (inline data: images never leave the page)."""
    assert [u for u in page.urls if not u.startswith("data:")] == [page.url]


def assert_no_script_ran(driver, report) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - raises when no alert/dialog is open
    assert driver.execute_script("return typeof window.__xss") == "undefined"
    assert driver.title == html_report._page_title(report)  # the payloads would change it


# ---------------------------------------------------------------- a real audit


def _budget_options() -> list[str]:
    """``-o table.key=value`` lowering attack budgets: the run's ``[attacks]`` table, and
    every installed analysis whose Config has its own (model-transfer's iterations)."""
    host = PluginHost()
    host.load_entry_points()
    options = [
        arg for key, value in AUDIT_BUDGET.items() for arg in ("-o", f"attacks.{key}={value}")
    ]
    for name, analysis in host.analyses.items():
        for field in dataclasses.fields(analysis.Config):
            value = AUDIT_BUDGET.get(field.name)
            if value is not None and isinstance(field.default, int):
                options += ["-o", f"{name}.{field.name}={value}"]
    return options


@pytest.fixture(scope="module")
def real_report(tmp_path_factory) -> Path:
    """report.html/.json of a real audit of digits_cnn (8x8 images), all analyses installed."""
    _require_browser()  # do not spend the audit's time when the browser is missing
    out = tmp_path_factory.mktemp("browser-audit")
    argv = [str(zoo.model_path("digits_cnn")), "--samples", "6", "--out", str(out), "--quiet"]
    code = cli.main([*argv, "--fail-on", "high", *_budget_options()])
    passed = json.loads((out / "report.json").read_text(encoding="utf-8"))["verdict"]["passed"]
    assert code == (0 if passed else 1)
    return out


def test_real_report_in_a_browser(browser, real_report: Path) -> None:
    report = json.loads((real_report / "report.json").read_text(encoding="utf-8"))
    page = open_page(browser, real_report / "report.html")
    assert page.console == []  # no error, no warning, no CSP violation
    assert_offline(page)
    find = browser.execute_script
    verdict = "PASSED" if report["verdict"]["passed"] else "FAILED"
    assert find("return document.querySelector('#verdict h2').textContent") == verdict
    assert "--fail-on high" in find("return document.getElementById('verdict').innerText")
    for ident in ("verdict", "glance", "overview"):
        assert find(f"return !!document.getElementById('{ident}')"), ident
    analyses = list(dict.fromkeys(a["analysis"] for a in report["analyses"]))
    assert find("return document.querySelectorAll('section.analysis').length") == len(analyses)
    runs = find("return document.querySelectorAll('table.glance tbody tr').length")
    assert runs == len(report["analyses"])
    assert find("return document.body.innerText").count("Model: digits_cnn") >= 1
    plots = sum(len(f["evidence"]["plots"]) for f in report["findings"])
    drawn = find(
        "return [...document.querySelectorAll('figure.plot svg')]"
        ".filter(s => s.getBoundingClientRect().width > 100).length"
    )
    assert plots > 0 and drawn == plots
    images = sum(len(e["images"]) for f in report["findings"] for e in f["evidence"]["examples"])
    decoded = find(
        "return [...document.querySelectorAll('img.sample')]"
        ".filter(i => i.complete && i.naturalWidth === 8).length"
    )
    assert images > 0 and decoded == images  # worst samples: input, adversarial, perturbation
    overflow = find(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0  # wide tables scroll inside the page, not the page
    ARTIFACTS.mkdir(exist_ok=True)
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- hostile input


def hostile_with_marks():
    """The hand-built hostile report, plus payloads that would leave a trace if they ran."""
    report = hostile_report()
    marked = dataclasses.replace(
        model_info(MARK + MARK_IMG, metadata={"description": MARK + MARK_IMG, MARK: PAYLOAD}),
        path=MARK_IMG,
    )
    data = dataclasses.replace(report.data, class_names=(MARK, MARK_IMG, PAYLOAD))
    findings = tuple(
        dataclasses.replace(f, title=f.title + MARK, summary=MARK_IMG) for f in report.findings
    )
    return dataclasses.replace(
        report, models=(*report.models, marked), data=data, findings=findings
    )


def test_hostile_report_runs_no_script(browser, tmp_path: Path) -> None:
    report = hostile_with_marks()
    path = tmp_path / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    page = open_page(browser, path)
    assert_no_script_ran(browser, report)
    assert page.console == []
    assert_offline(page)
    find = browser.execute_script
    assert find("return document.scripts.length") == 0
    assert find("return [...document.images].every(i => i.src.startsWith('data:'))")
    handlers = find(
        "return [...document.querySelectorAll('*')].flatMap(e => [...e.attributes])"
        ".filter(a => a.name.startsWith('on')).length"
    )
    assert handlers == 0
    text = find("return document.body.innerText")
    assert MARK in text and MARK_IMG in text and PAYLOAD in text  # shown as text


def test_content_security_policy_blocks_injected_scripts(browser, tmp_path: Path) -> None:
    """Even markup that escaped the escaping cannot run: the CSP forbids every script."""
    report = hostile_report()
    html = render_html(report)
    assert html.count('http-equiv="Content-Security-Policy"') == 1
    injected = html.replace("</body>", f"{MARK}{MARK_IMG}</body>", 1)
    path = tmp_path / "injected.html"
    path.write_text(injected, encoding="utf-8")
    page = open_page(browser, path)
    assert_no_script_ran(browser, report)
    assert browser.execute_script("return document.scripts.length") == 1  # there, but blocked
    violations = [m for m in page.console if "Content Security Policy" in m["message"]]
    assert len(violations) >= 2 and all(m["level"] == "SEVERE" for m in violations)
    texts = " ".join(m["message"] for m in violations).lower()
    assert "inline script" in texts  # the <script> did not run
    assert "img-src" in texts  # <img src=x> was not loaded ...
    assert "event handler" in texts  # ... and its onerror= did not run either
    others = {i: u for i, u in page.requests.items() if u != page.url and not u.startswith("data:")}
    assert [u.rsplit("/", 1)[1] for u in others.values()] == ["x"]  # the injected <img src=x>
    assert [page.blocked.get(i) for i in others] == ["csp"]  # ... refused by the policy
