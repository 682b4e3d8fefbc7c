"""The ERP API's documentation pages, /docs (Swagger UI) and /redoc (ReDoc), work without internet access.

Their scripts, styles and icon are served by the gateway itself (the files of the fastapi-offline
package). Each page is opened in a real headless Chromium (Debian's ``chromium`` driven by Playwright)
whose name resolution knows only 127.0.0.1 and whose every request outside the gateway is refused and
recorded: the page must render the API's operations and ask for nothing outside the gateway.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from gateway import __version__
from gateway.config import CellConfig
from tests.integration.erp_support import erp_gateway

# Chromium with no way out: names other than 127.0.0.1 do not resolve, and no background services.
OFFLINE_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic", "--disable-default-apps",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]  # fmt: skip


def _is_local(url: str, base_url: str) -> bool:
    if url.startswith(("data:", "blob:", "about:")):
        return True
    return urlsplit(url).netloc == urlsplit(base_url).netloc


async def test_docs_pages_link_only_to_the_gateway(make_config: Callable[..., CellConfig]) -> None:
    async with erp_gateway(make_config) as erp, httpx.AsyncClient(base_url=erp.base_url) as http:
        for page_path in ("/docs", "/redoc"):
            page = await http.get(page_path)
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert "default-src 'self'" in page.headers["content-security-policy"]
            links = re.findall(r'(?:src|href|url|spec-url)\s*[=:]\s*["\']([^"\']+)["\']', page.text)
            assert links, page.text
            assert all(link.startswith("/") and not link.startswith("//") for link in links), links
            assert "http://" not in page.text
            assert "https://" not in page.text
            for link in links:
                asset = await http.get(link)
                assert asset.status_code == 200, link
                assert asset.content, link
        description = (await http.get("/openapi.json")).json()
    assert description["info"]["version"] == __version__
    assert description["info"]["title"] == "cell-gateway ERP API"
    assert not any(path in description["paths"] for path in ("/docs", "/redoc"))


# page -> (a selector that appears once the operations are rendered, where the operation paths are shown)
PAGES = {
    "/docs": (".opblock-summary-path", ".opblock-summary-path"),
    "/redoc": ("[data-section-id^='tag/orders/operation']", "body"),
}


async def test_docs_pages_show_the_operations_offline_in_a_real_browser(
    make_config: Callable[..., CellConfig], chromium: str
) -> None:
    from playwright.async_api import Route, async_playwright

    reached_out: list[str] = []  # requests that got as far as the network layer with a foreign address
    requested: list[str] = []
    failed: dict[str, str | None] = {}
    errors: list[str] = []

    async def only_the_gateway(route: Route) -> None:
        if _is_local(route.request.url, erp.base_url):
            await route.continue_()
        else:
            reached_out.append(route.request.url)
            await route.abort("internetdisconnected")

    async with erp_gateway(make_config) as erp, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=OFFLINE_ARGS)
        try:
            context = await browser.new_context()
            context.on("request", lambda request: requested.append(request.url))
            context.on("requestfailed", lambda request: failed.update({request.url: request.failure}))
            await context.route("**/*", only_the_gateway)
            for page_path, (rendered, paths_in) in PAGES.items():
                page = await context.new_page()
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
                response = await page.goto(erp.base_url + page_path)
                assert response is not None
                assert response.status == 200
                await page.wait_for_selector(rendered, timeout=15000)
                text = " ".join(await page.locator(paths_in).all_inner_texts())
                for path in ("/orders", "/schedules", "/workorders/{workorder_id}"):
                    assert path in text, (page_path, path, text[:2000])
                await page.close()
        finally:
            await browser.close()
    assert reached_out == []
    # ReDoc's menu asks for its vendor's logo; the pages' security policy stops it inside the browser.
    foreign = [url for url in requested if not _is_local(url, erp.base_url)]
    assert all(failed.get(url) == "csp" for url in foreign), (foreign, failed)
    assert sum(url.endswith("/openapi.json") for url in requested) == len(PAGES), requested
    assert all("Content Security Policy" in error for error in errors), errors
