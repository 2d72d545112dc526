"""Overwatch: Karn's read-only web view, served by `esper karn serve` at `/`.

The page is plain HTML, CSS and JavaScript shipped inside the package (`static/`), with no build step and nothing
loaded from elsewhere: its Content-Security-Policy allows only this origin. It reads the same HTTP API the tests and
scripts use, and follows a live run over that API's SSE stream.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"

#: Everything the page loads comes from this origin; images may be inline SVG (data:) only.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def mount(app: FastAPI) -> None:
    """Serve the page at `/` and its assets under `/overwatch/`."""

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(
            STATIC / "index.html",
            media_type="text/html",
            headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"},
        )

    app.mount("/overwatch", StaticFiles(directory=STATIC), name="overwatch")
