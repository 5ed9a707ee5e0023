"""A spreadsheet dropped into the chat, in a real browser (Debian's Chromium): offered as text and as data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.office_files import make_xlsx
from tests.test_chat_ui import Chat, _wait_for_answer, chat  # noqa: F401 (fixtures)
from tools.sql.sources import get_source


def test_a_dropped_spreadsheet_is_offered_as_text_and_as_data(
    chat: Chat,  # noqa: F811 (the fixture)
    browser_page: Any,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    sheet = make_xlsx(
        tmp_path / "Crew roster.xlsx", {"Crew": [["Name", "Team", "Shifts"], ["Ann", "Night", 4], ["Bob", "Day", 5]]}
    )
    page = browser_page
    page.goto(chat.url, wait_until="load")
    expect(page.locator("#load_data")).to_be_hidden()
    page.locator("input[type=file]").set_input_files(str(sheet))
    expect(page.locator("#load_data")).to_be_visible(timeout=20_000)
    report = page.locator("#ingest_report")
    expect(report).to_contain_text("a spreadsheet. Ingest adds its rows")

    page.locator("#load_data").click()
    expect(report).to_contain_text("loaded as the database crew_roster: crew (2 rows)", timeout=60_000)
    with chat.agent.kb.db.connection() as conn:
        assert get_source(conn, "crew_roster").run_sql("SELECT max(shifts) FROM crew").rows == [[5]]
    expect(page.locator("#database input")).to_have_value("crew_roster")
    page.locator("#msg textarea").fill("How many shifts does the crew table hold?")
    page.locator("#msg textarea").press("Enter")
    _wait_for_answer(page, "From the crew_roster database")  # the question went to the SQL tool

    page.locator("#ingest").click()  # the same drop, ingested as text instead
    expect(report).to_contain_text("1 added", timeout=60_000)
    hits = chat.agent.kb.search("Ann Night shifts", chat.collection, k=1, mode="keyword")
    assert hits and "| Ann | Night | 4 |" in hits[0].text


def test_with_logins_on_a_dropped_spreadsheet_is_not_loaded_as_data(tmp_path: Path) -> None:
    from agent.chat.handlers import ChatHandlers, ChatServices
    from agent.core.config import Settings

    class NoDatabase:  # with logins on, the refusal comes before any database work
        settings = Settings()

        @property
        def kb(self) -> Any:
            raise AssertionError("the database was used")

    handlers = ChatHandlers(ChatServices(NoDatabase(), "scripted", login=True))  # type: ignore[arg-type]
    sheet = make_xlsx(tmp_path / "pay.xlsx", {"Pay": [["Name", "Salary"], ["Ann", 1]]})
    report, _ = handlers.load_data([str(sheet)])
    assert report.startswith("**Not loaded:** with logins on, a database would be shared by every user")
    shown, hint = handlers.offer_data([str(tmp_path / "notes.md")])
    assert shown["visible"] is False and hint == ""
