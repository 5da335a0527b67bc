"""The memory browser at /ui, in a real headless Chromium driven by selenium, against the real server.

`make test` installs Debian's chromium and chromium-driver when they are missing. The pages are
used as a person would: sign in with the token, open a namespace and a session's timeline, search
with filters, forget with confirmation, look at index health. Screenshots go to
EMX_SCREENSHOTS_DIR (`make screenshots` writes the README's into docs/screenshots).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.servers import NetworkServer, network_server

pytestmark = pytest.mark.slow

TOKEN = "browser-token-0123456789abcdef"
MIGRATION = (
    "We planned the ledger database migration for Monday night. The ledger moves from MySQL 5.7 to "
    "Postgres 16 on the new db-7 host. The migration script copies every table and then compares row "
    "counts table by table. On staging the row counts matched and the copy took forty minutes. "
    "Lunch on Friday is at the new ramen place near the station. The ramen place opens at half past "
    "eleven and has vegetarian bowls. Booking a table for eight people needs a call the day before."
)
FOLLOW_UP = "After the migration the ledger's nightly backup job was pointed at db-7."
RELEASE = "The release train leaves every second Thursday at 14:00 UTC; hotfixes may ride any day."


def chromium() -> webdriver.Chrome:
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert browser and driver, (
        "Chromium is not installed: run `make test`, which installs chromium and its driver"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetworkServer]:
    with network_server(tmp_path_factory.mktemp("browser") / "data", token=TOKEN) as running:
        yield running


@pytest.fixture(scope="module")
def stored(server: NetworkServer) -> dict[str, Any]:
    """Memories stored through the MCP endpoint with the token, as an agent would."""
    import anyio

    async def fill() -> dict[str, Any]:
        async with agent(server) as client:
            first = await call(
                client, "remember", text=MIGRATION, session="ledger-migration", namespace="team"
            )
            await call(client, "remember", text=FOLLOW_UP, session="ledger-migration", namespace="team")
            release = await call(client, "remember", text=RELEASE, session="release", namespace="team")
            await call(client, "remember", text="A note in the default namespace.")
            return {"migration": first, "release": release}

    return anyio.run(fill)


class agent:
    def __init__(self, server: NetworkServer) -> None:
        self.http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
        self.client = Client(
            streamable_http_client(server.url, http_client=self.http), read_timeout_seconds=120
        )

    async def __aenter__(self) -> Client:
        return await self.client.__aenter__()

    async def __aexit__(self, *exc: Any) -> None:
        await self.client.__aexit__(*exc)
        await self.http.aclose()


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("EMX_SCREENSHOTS_DIR")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def base(server: NetworkServer) -> str:
    return server.url.removesuffix("/mcp")


def wait_for(browser: webdriver.Chrome, title: str) -> None:
    """Wait until the page a click or a submit led to has loaded."""
    WebDriverWait(browser, 30).until(lambda b: b.title.startswith(title))


def submit(browser: webdriver.Chrome, field: Any) -> None:
    """Submit a field's form and wait for the next page (which may have the same title)."""
    page = browser.find_element(By.TAG_NAME, "html")
    field.submit()
    WebDriverWait(browser, 30).until(staleness_of(page))


def texts(browser: webdriver.Chrome, selector: str) -> list[str]:
    return [e.text for e in browser.find_elements(By.CSS_SELECTOR, selector)]


def sign_in(browser: webdriver.Chrome, server: NetworkServer) -> None:
    browser.get(base(server) + "/ui")
    assert browser.title.startswith("Sign in")  # no cookie, no header: the login page
    box = browser.find_element(By.NAME, "token")
    box.send_keys("not-the-token-at-all")
    box.submit()
    wait_for(browser, "Sign in")
    assert "not this server's token" in browser.find_element(By.CLASS_NAME, "error").text
    box = browser.find_element(By.NAME, "token")
    box.send_keys(TOKEN)
    box.submit()
    wait_for(browser, "Namespaces")


def test_every_page_search_and_forget_in_chromium(
    server: NetworkServer, stored: dict[str, Any], browser: webdriver.Chrome, shots: Path
) -> None:
    sign_in(browser, server)
    rows = texts(browser, "table tr td:first-child")
    assert rows == ["default", "team"]

    browser.find_element(By.LINK_TEXT, "team").click()
    wait_for(browser, "team")
    assert texts(browser, "table tr td:first-child") == ["release", "ledger-migration"]  # newest first

    browser.find_element(By.LINK_TEXT, "ledger-migration").click()
    wait_for(browser, "Session")
    episodes = texts(browser, ".ep div")
    assert "".join(episodes).replace(" ", "") == (MIGRATION + FOLLOW_UP).replace(
        " ", ""
    )  # all of it, in order
    boundaries = texts(browser, ".boundary")
    # A bar and a score at every boundary: the topic shift inside the first call, and the second call.
    scores = [float(b.removeprefix("surprise ")) for b in boundaries]
    assert len(scores) == len(episodes) - 1 >= 2 and all(0 < s <= 2 for s in scores)
    browser.save_screenshot(str(shots / "browser-session.png"))

    browser.find_element(By.CSS_SELECTOR, "header a[href='/ui/ns/team']").click()
    wait_for(browser, "team")
    browser.find_element(By.NAME, "q").send_keys("which database does the ledger move to?")
    browser.find_element(By.NAME, "q").submit()
    wait_for(browser, "Search")
    results = texts(browser, ".ep div")
    assert "Postgres 16" in results[0]
    browser.save_screenshot(str(shots / "browser-search.png"))
    browser.find_element(By.NAME, "session").send_keys("release")  # the same filters as recall
    query = browser.find_element(By.NAME, "q")
    query.clear()
    query.send_keys("when does the train leave?")
    submit(browser, query)
    assert (
        all("release" in m for m in texts(browser, ".ep .meta"))
        and "release train" in texts(browser, ".ep div")[0]
    )
    browser.find_element(By.NAME, "metadata").send_keys("{not json")
    submit(browser, browser.find_element(By.NAME, "q"))
    assert "metadata must be a JSON object" in browser.find_element(By.CLASS_NAME, "error").text

    browser.get(base(server) + "/ui/ns/team/health")
    assert "ok" in browser.find_element(By.CSS_SELECTOR, "table tr td").text
    plots = texts(browser, ".plot b")
    assert plots == ["Vectors per inverted list", "Measured recall@10 over time", "Episodes per day"]
    assert browser.find_elements(By.CSS_SELECTOR, ".plot svg rect")  # episodes per day, drawn
    browser.save_screenshot(str(shots / "browser-health.png"))

    # Forget: check the follow-up episode, confirm, and it is gone.
    browser.get(base(server) + "/ui/ns/team/session?s=ledger-migration")
    boxes = browser.find_elements(By.CSS_SELECTOR, "input[name=ids]")
    boxes[-1].click()
    browser.find_element(By.XPATH, "//button[text()='Forget the checked episodes']").click()
    wait_for(browser, "Forget?")
    assert "1 episode(s)" in browser.find_element(By.TAG_NAME, "main").text
    browser.find_element(By.XPATH, "//button[text()='Yes, forget']").click()
    wait_for(browser, "Forgotten")
    assert "Deleted 1 episode(s)" in browser.find_element(By.TAG_NAME, "main").text
    browser.get(base(server) + "/ui/ns/team/session?s=ledger-migration")
    left = " ".join(texts(browser, ".ep div"))
    assert FOLLOW_UP not in left and "Postgres 16" in left


def test_the_pages_keep_the_token_rules_and_refuse_cross_site_forms(
    server: NetworkServer, stored: dict[str, Any]
) -> None:
    ui = base(server) + "/ui"
    with httpx2.Client(timeout=60, follow_redirects=False) as http:
        assert http.get(ui).status_code == 303  # to the login page
        assert http.get(ui, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert http.get(ui, headers={"Authorization": "Bearer wrong"}).status_code == 303
        assert (
            http.get(ui, headers={"Authorization": f"Bearer {TOKEN}", "Host": "evil.example"}).status_code
            == 421
        )
        login = http.post(ui + "/login", data={"token": TOKEN})
        assert login.status_code == 303
        cookie = login.headers["set-cookie"]
        http.cookies.clear()  # from here on, each request says itself whether it carries the cookie
        assert TOKEN not in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        signed = {"Cookie": cookie.split(";")[0]}
        release = stored["release"]["ids"][0]
        forget = ui + "/ns/team/forget"
        form = {"ids": release, "confirm": "yes"}
        # No CSRF token (a form another site made): refused, nothing deleted.
        assert http.post(forget, data=form, headers=signed).status_code == 403
        page = http.get(ui + "/ns/team/forget", params={"ids": release}, headers=signed).text
        csrf = page.split("name=csrf value='")[1].split("'")[0]
        cross = {**signed, "Origin": "http://evil.example"}
        assert http.post(forget, data={**form, "csrf": csrf}, headers=cross).status_code == 403
        assert http.post(forget, data={**form, "csrf": csrf}).status_code == 401  # no cookie
        session = http.get(ui + "/ns/team/session", params={"s": "release"}, headers=signed).text
        assert "release train" in session  # still there after every refusal


def test_the_pages_show_which_memory_replaced_which(server: NetworkServer) -> None:
    import anyio

    async def fill() -> tuple[tuple[str, str], str]:
        async with agent(server) as client:
            old = await call(client, "remember", text="The staging database is on db-4.", namespace="links")
            new = await call(
                client,
                "remember",
                text="The staging database moved from db-4 to db-7.",
                namespace="links",
                session=old["session"],
                supersedes=old["ids"],
            )
            return (old["ids"][0], new["ids"][0]), str(old["session"])

    (old, new), session = anyio.run(fill)
    ui = base(server) + "/ui/ns/links"
    with httpx2.Client(timeout=60, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        page = http.get(ui + "/search", params={"q": "where is the staging database?"}).text
        assert "db-7" in page and "db-4." not in page and f"updates {new}" not in page
        assert f"updates {old}" in page
        page = http.get(ui + "/search", params={"q": "staging database", "include_superseded": "1"}).text
        assert "The staging database is on db-4." in page and f"superseded by {new}" in page
        page = http.get(ui + "/session", params={"s": session}).text
        assert f"superseded by {new}" in page and f"updates {old}" in page
