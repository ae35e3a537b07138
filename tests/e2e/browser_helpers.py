"""Helpers for the browser tests (imported by conftest.py and the tests): screenshots, timings, uploads."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
ARTIFACTS = REPO_ROOT / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
TIMINGS: dict[str, float] = {}  # written to test-artifacts/timings.json at the end of the session


def record_timing(name: str, seconds: float) -> None:
    TIMINGS[name] = round(float(seconds), 3)
    print(f"timing {name}: {seconds:.2f} s")


def screenshot(page, name: str) -> Path:
    """Save the whole page as ``test-artifacts/screenshots/<name>.png``. Streamlit scrolls inside its main
    container, not the document, so the viewport is stretched to the content's height for the picture."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    viewport = page.viewport_size or {"width": 1400, "height": 1000}
    height = page.evaluate("""() => {
        const main = document.querySelector('[data-testid="stMain"]') || document.body;
        return Math.max(main.scrollHeight, document.body.scrollHeight);
    }""")
    page.set_viewport_size({"width": viewport["width"], "height": int(min(max(height, viewport["height"]), 12000))})
    page.wait_for_timeout(300)  # let charts re-lay out at the new size
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(viewport)
    return path


def wait_for_app_idle(page, timeout: float = 60_000) -> None:
    """Wait until Streamlit has finished running the script: the app root carries
    ``data-test-script-state="notRunning"`` once a run is over (a short pause first lets a rerun start)."""
    page.wait_for_timeout(200)
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=timeout)


def xray_files(count: int) -> list[dict]:
    """``count`` chest X-rays as Playwright upload payloads: real ones from the shared data when present, else
    the app's own example X-rays (``assets/examples``: four Kermany test images, in the repository) under
    distinct names, taken in turn. Real X-rays either way: noise images would all be called outside the
    training population, and the test could not see heat maps or verdicts drawn."""
    folder = SHARED_DATA / "chest_xray" / "test"
    files = sorted((folder / "PNEUMONIA").glob("*.jpeg"))[: (count + 1) // 2]
    files += sorted((folder / "NORMAL").glob("*.jpeg"))[: count - len(files)]
    if len(files) == count:
        return [{"name": file.name, "mimeType": "image/jpeg", "buffer": file.read_bytes()} for file in files]
    examples = sorted((REPO_ROOT / "assets" / "examples").glob("*.png"))
    return [{"name": f"{index:02d}-{examples[index % len(examples)].name}", "mimeType": "image/png",
             "buffer": examples[index % len(examples)].read_bytes()} for index in range(count)]


def selectbox_text(selectbox) -> str:
    """What a Streamlit selectbox shows: its text plus the value of its combobox input (newer versions show
    the choice inside an ``<input>``, which plain text matching does not see)."""
    inputs = selectbox.locator("input")
    values = [inputs.nth(index).input_value() for index in range(inputs.count())]
    return " ".join([selectbox.inner_text(), *values])


def choose_option(page, selectbox, text: str) -> None:
    """Make a Streamlit selectbox show the option containing ``text`` (open it and click the option)."""
    import re

    selectbox.wait_for()
    if text in selectbox_text(selectbox):
        return
    selectbox.click()
    page.get_by_role("option", name=re.compile(re.escape(text))).click()
    page.wait_for_timeout(300)
