"""The leaderboard page in a real browser: headless Chromium driven by playwright, from file://.

Rows and numbers against the bundles, a header click re-orders the rows, the filters hide rows
and columns, no console error and no request other than file://; a screenshot is left in the
test's tmp folder (and in tests/artifacts/, ignored by git). Skips with a reason when Debian's
chromium or pip's playwright is absent (`.ci/run` installs both).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from vtabkit import bundle, leaderboard, results, tasks

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "results" / "submissions" / "pixels-lite-linear"
ARTIFACTS = REPO / "tests" / "artifacts"
HOSTILE = '<img src=x onerror="document.title=\'pwned\'"><b>bold</b>'


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no chromium on PATH (Debian: apt-get install -y chromium)")
    return found


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium refuses its sandbox as root
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, args=args, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, tmp_path):
    hostile = tmp_path / "bundles" / "hostile"
    bundle.submit(SHIPPED, hostile, model={"name": HOSTILE})
    site = tmp_path / "site"
    data = leaderboard.build([SHIPPED, hostile], site)
    page = browser.new_page(viewport={"width": 1600, "height": 1200})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}")
            if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("request", lambda request: problems.append(f"request {request.url}")
            if not request.url.startswith("file://") else None)
    page.goto((site / "index.html").as_uri())
    page.wait_for_selector("#table-lite tbody tr")
    yield page, data, problems, tmp_path
    page.close()


def _column(page, suite: str, key: str) -> list[str]:
    return page.locator(f'#table-{suite} tbody td[data-key="{key}"]').all_text_contents()


def _values(page, suite: str, key: str) -> list[float | None]:
    cells = page.locator(f'#table-{suite} tbody td[data-key="{key}"]')
    return [None if v is None else float(v) for v in
            (cells.nth(i).get_attribute("data-value") for i in range(cells.count()))]


def test_page_in_chromium(page):
    page, data, problems, tmp_path = page
    records = {r["task"]: r for r in results.read_records(SHIPPED / results.RESULTS_FILE)}
    suite = tasks.get_suite("lite")

    # Rows and numbers: both lite bundles, each task's score as in the records (1 decimal).
    names = page.locator("#table-lite tbody td[data-key=model] span.name").all_text_contents()
    assert sorted(names) == sorted(["pixels", HOSTILE])  # the hostile name shown as text ...
    assert page.locator("#table-lite b").count() == 0 and page.locator("img").count() == 0  # ... never as HTML
    assert page.title() == "vtabkit leaderboard"
    for task_id in suite.tasks:
        shown = page.locator(f'#table-lite tbody td[data-key="task:{task_id}"] span.score').all_text_contents()
        assert shown == [f"{100 * records[task_id]['metrics']['top1']:.1f}"] * 2
    headers = page.locator("#table-lite th").all_text_contents()
    assert "plain mean (4 tasks)" in headers and "group mean (2 families)" in headers
    links = page.locator("#table-lite tbody a")
    assert links.count() == 2 and all((tmp_path / "site" / links.nth(i).get_attribute("href")).is_file()
                                      for i in range(2))

    # Published rows, marked as such, in file order at first.
    vtab1k = [r for r in data["rows"] if r["suite"] == "vtab1k"]
    assert page.locator("#table-vtab1k tbody tr.published").count() == len(vtab1k)
    assert page.locator("#table-vtab1k tbody tr").count() == len(vtab1k)
    assert page.locator("#table-vtab1k .badge").count() == len(vtab1k)

    # Sorting: a click on cifar100 orders by it, best first, empty cells last; a second click turns it round.
    page.click('#table-vtab1k th[data-key="task:cifar100"]')
    expected = sorted((r["tasks"]["cifar100"]["score"] for r in vtab1k if "cifar100" in r["tasks"]), reverse=True)
    values = _values(page, "vtab1k", "task:cifar100")
    assert values[:len(expected)] == pytest.approx(expected)
    assert all(v is None for v in values[len(expected):]) and len(values) == len(vtab1k)
    page.click('#table-vtab1k th[data-key="task:cifar100"]')
    assert _values(page, "vtab1k", "task:cifar100")[:len(expected)] == pytest.approx(expected[::-1])
    page.click('#table-vtab1k th[data-key="mean"]')
    means = [v for v in _values(page, "vtab1k", "mean") if v is not None]
    assert means == sorted(means, reverse=True) and len(means) == len(vtab1k)
    top = page.locator("#table-vtab1k tbody tr").first.locator("td[data-key=model] span.name").text_content()
    assert top == max(vtab1k, key=lambda r: r["mean"]["score"])["model"]

    # Filters: protocol hides rows; family hides other families' columns.
    page.select_option("#filter-protocol", "linear")
    assert _column(page, "vtab1k", "protocol") == ["linear"] * sum(r["protocol"] == "linear" for r in vtab1k)
    assert page.locator("#table-lite tbody tr").count() == 2
    page.select_option("#filter-protocol", "finetune")
    assert page.locator("#table-lite tbody tr").count() == 0
    page.select_option("#filter-protocol", "")
    page.select_option("#filter-family", "natural")
    keys = page.locator("#table-lite th").evaluate_all("nodes => nodes.map(n => n.dataset.key)")
    assert "task:lite_digits" in keys and "task:lite_count" not in keys
    assert "family:natural" in keys and "family:structured" not in keys and "mean" in keys

    page.select_option("#filter-family", "")
    shot = tmp_path / "leaderboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "leaderboard.png")
    assert problems == []
