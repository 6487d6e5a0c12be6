"""The rating page of ``genzoo judge serve``: a FastAPI app over the study database, served by
uvicorn on 127.0.0.1.

A rater opens ``/r/<token>``: one image at a time, upscaled without smoothing, "real" or
"generated" by button or key (R / G, or the left and right arrows), then pairs ("which looks
more real?", 1 / 2 or the arrows); a progress bar; every answer is stored the moment it is
given, with the time taken, so a closed tab or a restarted server resumes at the next
unanswered trial. The token is the rater's only key: every request names it, an unknown or
missing one gets 403, and a rater reaches only their own trials and images. Binding beyond
loopback needs ``--allow-remote`` (put it behind a TLS proxy: the links are the passwords).
"""

import logging
import socket
from pathlib import Path
from typing import Literal

import jinja2
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import ClientDisconnect

from genzoo.tasks import judge

log = logging.getLogger("genzoo.judge")
PAGE = Path(__file__).with_name("judge.html.j2")  # Jinja2, autoescaped
SCRIPT = Path(__file__).with_name("judge.js")
HEADERS = {  # nothing loads from elsewhere, no page embeds this one, links leak through no Referer
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; script-src 'self'; "
    "style-src 'unsafe-inline'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; "
    "base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


MAX_ID = 2**31 - 1  # a row id of both databases' INTEGER (a larger one was a 500 from SQLite)


BAD_LINK = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>genzoo judge</title></head><body>'
    "<p>This rating link is not one of this study's: mistyped or cut short? Ask whoever sent it to you "
    "for the link again.</p></body></html>"
)
MAX_BODY = 4096  # bytes of an answer's body (one is ~50): more is refused before it is read whole
MAX_MS = 3_600_000  # an answer's time is kept up to an hour: longer is a break, not a look


class Answer(BaseModel):
    """One answer as the page posts it; anything else is refused (422)."""

    model_config = ConfigDict(extra="forbid")
    trial: int = Field(ge=1, le=MAX_ID)
    answer: Literal["real", "generated", "left", "right"]
    ms: int = Field(ge=0)  # time from the image shown to the answer

    @field_validator("ms")
    @classmethod
    def _at_most_an_hour(cls, ms: int) -> int:  # a rater back from a break answers (no time limit)
        return min(ms, MAX_MS)


def app(url: str) -> FastAPI:
    """The FastAPI app over the study database at ``url``."""
    eng = judge.engine(url)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    page = env.from_string(PAGE.read_text())
    web = FastAPI(title="genzoo judge", docs_url=None, redoc_url=None, openapi_url=None)

    def rater(token: str) -> judge.Rater:
        if not (16 <= len(token) <= 128) or (r := judge.rater_for(eng, token)) is None:
            raise HTTPException(403, "unknown token")
        return r

    @web.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(HEADERS)
        return response

    @web.exception_handler(404)
    async def not_found(request: Request, exc):  # no token, no page: the same answer as a bad token
        if request.url.path.startswith("/r/"):  # a rating link cut short or run on: a rater's browser
            return HTMLResponse(BAD_LINK, status_code=403)
        return JSONResponse({"detail": "forbidden"}, status_code=403)

    @web.get("/favicon.ico")
    def favicon() -> Response:  # none; the browser asks on every page
        return Response(status_code=204)

    @web.get("/judge.js")
    def script() -> Response:
        return Response(SCRIPT.read_text(), media_type="text/javascript")

    @web.get("/r/{token}", response_class=HTMLResponse)
    def rating_page(token: str) -> HTMLResponse:
        try:
            r = rater(token)
        except HTTPException:  # a rater's browser: a page that says what to do, not the API's JSON
            return HTMLResponse(BAD_LINK, status_code=403)
        source = (r.data or "").partition(":")[0]
        real = judge.REAL_IMAGES.get(source, "real images")
        return HTMLResponse(page.render(rater=r.name, study=r.study, token=token, real=real))

    @web.get("/api/{token}/next")
    def next_trial(token: str) -> dict:
        return judge.progress(eng, rater(token))

    @web.post("/api/{token}/answer", response_model=None)
    async def post_answer(token: str, request: Request) -> dict | Response:
        # the token first, then at most MAX_BODY bytes of body (parsed before the token, a body of
        # any size from anyone was read, and a 422 echoed it whole), validated strictly
        r = await run_in_threadpool(rater, token)
        too_large = HTTPException(413, f"an answer is at most {MAX_BODY} bytes")
        length = request.headers.get("content-length", "")
        if length.isascii() and length.isdigit() and int(length) > MAX_BODY:
            raise too_large  # (said, nothing of it read)
        raw = b""
        try:
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > MAX_BODY:
                    raise too_large
        except ClientDisconnect:  # gone mid-body (a closed tab): nothing to answer, no traceback
            return Response(status_code=400)
        try:
            body = Answer.model_validate_json(raw, strict=True)
        except ValidationError as e:  # pydantic's reasons, key and message, never the input's values
            why = [
                {
                    "loc": ["body", *(err["loc"] if err["type"] != "extra_forbidden" else [])],
                    "msg": err["msg"],
                }
                for err in e.errors(include_input=False)
            ]  # (an unknown key's name is the sender's own text: not repeated)
            raise HTTPException(422, why) from None

        def store() -> dict:
            try:
                stored = judge.answer(eng, r, body.trial, body.answer, body.ms)
            except judge.NotYourTrial:
                raise HTTPException(403, "not your trial") from None
            except judge.NotYourTurn as e:  # the page shows one trial at a time: reload it
                raise HTTPException(409, str(e)) from None
            except judge.StudyError as e:
                raise HTTPException(422, str(e)) from None
            return stored | judge.progress(eng, r)

        return await run_in_threadpool(store)

    @web.get("/img/{token}/{item}.png")
    def image(token: str, item: str) -> Response:
        r = rater(token)  # (the token first: a bad one is 403 whatever the rest)
        if not (item.isascii() and item.isdigit() and 1 <= int(item) <= MAX_ID):
            raise HTTPException(422, "no such image number")
        png = judge.image_for(eng, r, int(item))
        if png is None:
            raise HTTPException(403, "not your image")
        return Response(png, media_type="image/png")

    return web


def serve(url: str, host: str = "127.0.0.1", port: int = 8400, allow_remote: bool = False) -> None:
    """Serve the rating pages of every study in ``url`` until interrupted."""
    import uvicorn

    from genzoo.flows.serve import is_loopback, local
    from genzoo.tasks.errors import UsageError

    if not is_loopback(host) and not allow_remote:
        raise UsageError(
            f"--host {host}: the rating pages would be reachable from other machines; add "
            "--allow-remote (and serve them behind HTTPS: each link is its rater's password)"
        )
    web = app(url)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:  # as uvicorn binds
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise UsageError(
                f"--port {port}: cannot listen on {host} ({e.strerror}); choose another --port"
            ) from None
    print(f"genzoo judge: rating pages on http://{local(host)}:{port}/r/<token>", flush=True)
    uvicorn.run(web, host=host, port=port, log_level="warning", access_log=False)
