"""The HTTP service: a thin FastAPI shell over ``LiveIndex``, as ``cli.py`` is over the API.

Every route calls the library and maps a ``SiamsearchError`` to a 4xx JSON body
``{"error": {"message": ..., "argument": ...}}`` with the library's one-line message;
malformed or oversized requests get the same shape, never a traceback. Routes are plain
``def`` functions, so FastAPI runs them on its thread pool: the encoder and FAISS release
the GIL, and the event loop never blocks on them.

Reads are open unless a read token is set; writes and admin routes need the write token,
and are refused when the service has none. Tokens are kept as SHA-256 digests and compared
in constant time. ``serve`` runs uvicorn with one process, or with ``workers`` processes
that each load the index (settings reach them through ``CONFIG_ENV``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline  # /docs and /redoc with their scripts served here, not from a CDN
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field, StrictInt
from starlette.exceptions import HTTPException as StarletteHTTPException

from .data import read_text
from .errors import ConflictError, InputError, NotFoundError, SiamsearchError, UnknownFieldError
from .filters import NO_MATCH
from .fusion import MODES
from .live import LiveIndex
from .query import MAX_QUERY_CHARS, read_note
from .search import SearchIndex
from .version import __version__

MAX_K = 100
MAX_BATCH = 256
MAX_DOCUMENTS = 10_000  # per PUT
MAX_TEXT_CHARS = 10_000
MAX_IDS = 10_000  # per DELETE
MAX_BODY_BYTES = 16 << 20
MIN_TOKEN_CHARS = 16
_BEARER = HTTPBearer(auto_error=False)
FIELDS = {"where": "filter", "texts": "documents", "metadata": "documents"}
"""Library argument → the request field that carries it, for error bodies."""
REWORDED = {"There was an error parsing the body": "the request body is not valid JSON (not UTF-8 text)"}
"""FastAPI's own messages → ours, in the same words as the rest."""
CONFIG_ENV = "SIAMSEARCH_SERVE_CONFIG"
"""The settings of ``serve`` as JSON, for worker processes (token digests only, never tokens)."""

Scalar = str | int | float | bool
Filter = dict[str, Scalar | list[Scalar]]
Query = Annotated[str, Field(max_length=MAX_QUERY_CHARS, description="The text to search for.")]
K = Annotated[StrictInt, Field(ge=1, le=MAX_K, description="Hits to return.")]
MinMatch = Annotated[float | None, Field(None, ge=0, le=1, description=(
    "Only hits at least this likely to mean the same as the query (their `match`); fewer than k may come back."))]
Mode = Annotated[Literal[MODES], Field(description=(
    "dense: ranked by the model's score; lexical: by BM25 over characters; hybrid: candidates from both, ranked by "
    "the model's fusion of the two. Every hit's score is the model's in every mode."))]
FILTER_DESCRIPTION = ("Metadata field → value, or → list of values (any of them); every field must match. "
                      "Applied before ranking, so k hits come back whenever k documents match.")


# -- request and response bodies ---------------------------------------------------------


class SearchRequest(BaseModel):
    query: Query
    k: K = 10
    filter: Filter | None = Field(None, description=FILTER_DESCRIPTION)
    min_match: MinMatch = None
    mode: Mode = MODES[0]


class BatchSearchRequest(BaseModel):
    queries: list[Query] = Field(max_length=MAX_BATCH)
    k: K = 10
    filter: Filter | None = Field(None, description=FILTER_DESCRIPTION)
    min_match: MinMatch = None
    mode: Mode = MODES[0]


class HitOut(BaseModel):
    rank: int
    id: str
    text: str
    score: float = Field(description="The Siamese model's prediction for (query, document): exp(-L1).")
    match: float | None = Field(description="The calibrated probability that the two mean the same (null: the "
                                            "model has no calibration).")
    lexical: float | None = Field(None, description="Lexical and hybrid modes: the document's BM25 for the query.")
    rank_score: float | None = Field(None, description="Lexical and hybrid modes: what the hits are ordered by "
                                                       "(BM25, or the fusion's score).")
    metadata: dict[str, Any]


class SearchResponse(BaseModel):
    query: str
    hits: list[HitOut]
    generation: int
    note: str | None = Field(None, description=f"Why there are no hits, when a filter is the reason "
                                               f"({NO_MATCH!r}), or that the model read only the start of a "
                                               "long query ('the model reads the first 100 of …').")


class BatchSearchResponse(BaseModel):
    results: list[SearchResponse]
    generation: int


class DocumentIn(BaseModel):
    id: str = Field(min_length=1, max_length=1_000)
    text: str = Field(max_length=MAX_TEXT_CHARS)
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentOut(BaseModel):
    """A stored document as it is: without ``DocumentIn``'s limits, which bind requests only (the
    CLI and the API store longer texts)."""

    id: str
    text: str
    metadata: dict[str, Any]


class UpsertRequest(BaseModel):
    documents: list[DocumentIn] = Field(min_length=1, max_length=MAX_DOCUMENTS)


class DeleteRequest(BaseModel):
    ids: list[str] = Field(min_length=1, max_length=MAX_IDS)


class CommitResponse(BaseModel):
    generation: int = Field(description="The generation that holds the change, committed to disk.")
    documents: int
    changed: int = Field(description="Documents replaced (PUT), removed (DELETE) or tombstones dropped (compact).")


class Ready(BaseModel):
    status: Literal["ready"] = "ready"
    generation: int
    documents: int
    encoder_fingerprint: str
    index_kind: str
    modes: list[str] = Field(description="The search modes this index answers (an index written before the lexical "
                                         "part: dense only).")
    version: str = __version__


class ErrorBody(BaseModel):
    message: str
    argument: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# -- settings and tokens -------------------------------------------------------------------
def token_digest(path: str | Path) -> str:
    """The SHA-256 digest of the token in a file; the token itself is not kept."""
    path = Path(path)
    token = read_text(path).strip()  # one-line errors for a missing, unreadable or non-UTF-8 file
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise InputError(f"{path}: a token is one line of at least {MIN_TOKEN_CHARS} characters without spaces; "
                         "make one with e.g. 'openssl rand -hex 32'", path=path)
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Settings:
    index: str
    write_token: str | None = None  # SHA-256 digests
    read_token: str | None = None
    mmap: bool = True


def _error(status: int, message: str, argument: str | None = None) -> JSONResponse:
    body = {"message": message} | ({"argument": argument} if argument else {})
    return JSONResponse({"error": body}, status_code=status)


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message


def _check_token(digest: str | None, credentials: HTTPAuthorizationCredentials | None, what: str) -> None:
    if credentials is None:
        raise _Refused(401, f"this {what} needs a bearer token: send 'Authorization: Bearer <token>'")
    given = hashlib.sha256(credentials.credentials.encode()).hexdigest()
    if digest is None or not hmac.compare_digest(given, digest):
        raise _Refused(403, f"the token is not valid for this {what}")


# -- the app ---------------------------------------------------------------------------------
class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("siamsearch_requests", "HTTP requests by route and status.",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("siamsearch_request_seconds", "HTTP request latency by route.", ["endpoint"],
                                 registry=self.registry)
        self.stages = Histogram("siamsearch_search_stage_seconds", "Search latency by stage.", ["stage"],
                                buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5),
                                registry=self.registry)
        self.documents = Gauge("siamsearch_documents", "Documents in the served generation.", registry=self.registry)
        self.generation = Gauge("siamsearch_generation", "The served generation.", registry=self.registry)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stages.labels(stage).observe(seconds)


class _Guard:
    """ASGI middleware: refuses bodies over ``MAX_BODY_BYTES`` (413) before anything parses
    them, and counts and times every request by its route (not its path, which is unbounded)."""

    def __init__(self, app: Callable, metrics: _Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            await _too_large(scope, receive, sending)
        elif length is None and scope["method"] in ("POST", "PUT", "DELETE", "PATCH"):
            body = await _read_body(receive)  # sent in chunks: read it here, up to the limit
            if body is None:
                await _too_large(scope, receive, sending)
            else:
                await self.app(scope, _replay(body), sending)
        else:
            await self.app(scope, receive, sending)
        route = scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        self.metrics.requests.labels(endpoint, str(status[0])).inc()
        self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


def _too_large(scope: dict, receive: Callable, send: Callable) -> Awaitable[None]:
    return _error(413, f"the request body is over {MAX_BODY_BYTES >> 20} MiB; send fewer documents at once",
                  "body")(scope, receive, send)


async def _read_body(receive: Callable[[], Awaitable[dict]]) -> bytes | None:
    """The whole body of a request sent without a length, or None once it passes the limit."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > MAX_BODY_BYTES:
            return None
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes) -> Callable[[], Awaitable[dict]]:
    sent = [False]

    async def receive() -> dict:
        if sent[0]:
            return {"type": "http.disconnect"}
        sent[0] = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _validation_message(error: dict) -> tuple[int, str, str | None]:
    if error.get("type") == "json_invalid":
        return 400, f"the request body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})", "body"
    where = [str(part) for part in error.get("loc", ()) if part != "body"]
    if not where and error.get("type") == "missing":
        return 400, "the request body is empty: send a JSON object", "body"
    if not where and error.get("type") == "model_attributes_type":
        return 422, "the request body must be a JSON object (send it with Content-Type: application/json)", "body"
    field = ".".join(where) or "body"
    return 422, f"{field}: {error.get('msg', 'invalid value')}", where[0] if where else "body"


DOCS_ROUTES = ("/docs", "/redoc")
DOCS_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
               "img-src 'self' data:; worker-src 'self' blob:")
"""The API docs' pages may load only from this service: their assets are served here
(fastapi-offline), and ReDoc's sidebar logo, which its script fetches from a CDN, is refused
rather than left to hang or fail offline."""


def create_app(settings: Settings, live: LiveIndex | None = None) -> FastAPI:
    """The service for one index folder (loaded now, so a bad path fails before serving), or
    for ``live`` when the caller has opened it already."""
    live = live or LiveIndex(settings.index, mmap=settings.mmap)
    metrics = _Metrics()
    app = FastAPIOffline(title="siamsearch", version=__version__, static_url="/docs-assets",
                  description="Semantic search for short texts. Every score is the Siamese model's exact "
                              "prediction for (query, document).",
                  responses={400: {"model": ErrorResponse}, 401: {"model": ErrorResponse},
                             403: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
                             409: {"model": ErrorResponse}, 413: {"model": ErrorResponse},
                             422: {"model": ErrorResponse}})
    app.add_middleware(_Guard, metrics=metrics)

    @app.middleware("http")
    async def docs_stay_here(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        if request.url.path in DOCS_ROUTES:
            response.headers["Content-Security-Policy"] = DOCS_POLICY
        return response

    async def reader(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> None:
        if settings.read_token is not None:
            _check_token(settings.read_token, credentials, "index's reads")

    async def writer(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> None:
        if settings.write_token is None:
            raise _Refused(403, "this service takes no writes: start it with a write token file")
        _check_token(settings.write_token, credentials, "write")

    @app.exception_handler(SiamsearchError)
    def library_error(request: Request, e: SiamsearchError) -> JSONResponse:
        status = (404 if isinstance(e, NotFoundError) else 409 if isinstance(e, ConflictError)
                  else 400 if isinstance(e, UnknownFieldError) else 422 if isinstance(e, InputError) else 503)
        return _error(status, e.message, FIELDS.get(e.argument, e.argument))

    @app.exception_handler(_Refused)
    def refused(request: Request, e: _Refused) -> JSONResponse:
        return _error(e.status, e.message)

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        return _error(*_validation_message(e.errors()[0]))

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return _error(e.status_code, REWORDED.get(str(e.detail), str(e.detail)))

    def served(index_generation: int, documents: int) -> None:
        metrics.generation.set(index_generation)
        metrics.documents.set(documents)

    @app.get("/healthz", summary="The process is up (and which worker answered)")
    def healthz() -> dict:
        return {"status": "ok", "pid": os.getpid()}

    @app.get("/readyz", summary="The index is loaded", response_model=Ready)
    def readyz() -> Ready:
        index = live.index
        return Ready(generation=index.generation, documents=len(index), encoder_fingerprint=index.encoder.fingerprint,
                     index_kind=index.kind, modes=list(MODES) if index.has_lexical else ["dense"])

    @app.get("/metrics", summary="Prometheus metrics of this process", dependencies=[Depends(reader)])
    def prometheus() -> Response:
        index = live.index
        served(index.generation, len(index))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def search_many(request: SearchRequest | BatchSearchRequest, queries: list[str]) -> tuple[list[dict], int]:
        """Plain dicts, answered as they are: they have the shape of the response models, which
        document the routes, and validating our own output again cost more than the search."""
        generation, found = live.search_batch(queries, request.k, request.filter, metrics.observe_stage,
                                              request.min_match, request.mode)
        no_match = NO_MATCH if request.filter and not any(found) and not live.index.count(request.filter) else None

        def result(query: str, hits: list) -> dict:
            note = no_match or read_note(query, live.index.encoder)
            return {"query": query, "hits": [h.to_dict() for h in hits], "generation": generation,
                    **({"note": note} if note else {})}

        return [result(q, hits) for q, hits in zip(queries, found)], generation

    @app.post("/v1/search", response_model=SearchResponse, dependencies=[Depends(reader)],
              summary="The top k documents for a query")
    def search(request: SearchRequest) -> JSONResponse:
        return JSONResponse(search_many(request, [request.query])[0][0])

    @app.post("/v1/search/batch", response_model=BatchSearchResponse, dependencies=[Depends(reader)],
              summary="The top k documents for each of several queries")
    def search_batch(request: BatchSearchRequest) -> JSONResponse:
        results, generation = search_many(request, request.queries)
        return JSONResponse({"results": results, "generation": generation})

    @app.get("/v1/documents/{doc_id}", response_model=DocumentOut, dependencies=[Depends(reader)],
             summary="One stored document")
    def get_document(doc_id: str) -> DocumentOut:
        document = live.index.get(doc_id)
        if document is None:
            raise NotFoundError(f"no document with id {doc_id!r}", argument="id")
        return DocumentOut(**asdict(document))

    @app.put("/v1/documents", response_model=CommitResponse, dependencies=[Depends(writer)],
             summary="Add documents, replacing those whose id exists; answered once committed to disk")
    def put_documents(request: UpsertRequest) -> CommitResponse:
        docs = request.documents
        commit = live.upsert([d.text for d in docs], [d.id for d in docs], [d.metadata for d in docs])
        return CommitResponse(**asdict(commit))

    @app.delete("/v1/documents", response_model=CommitResponse, dependencies=[Depends(writer)],
                summary="Remove documents by id, all or none; answered once committed to disk")
    def delete_documents(request: DeleteRequest) -> CommitResponse:
        return CommitResponse(**asdict(live.remove(request.ids)))

    @app.post("/v1/compact", response_model=CommitResponse, dependencies=[Depends(writer)],
              summary="Drop the tombstones of removed and replaced documents")
    def compact() -> CommitResponse:
        return CommitResponse(**asdict(live.compact()))

    page = files("siamsearch").joinpath("static/search.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def search_page() -> HTMLResponse:
        return HTMLResponse(page)

    return app


def app_from_environment() -> FastAPI:
    """The app of a worker process, from the settings ``serve`` put in ``CONFIG_ENV``."""
    return create_app(Settings(**json.loads(os.environ[CONFIG_ENV])))


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          log_level: str = "warning", on_ready: Callable[[SearchIndex], None] | None = None) -> None:
    """Run the service until interrupted: one process, or ``workers`` processes that each load
    the index and answer reads (writes queue across them, ``live.py``). The folder is opened
    here first, so a bad one fails once, before serving; ``on_ready`` is shown what it holds."""
    import uvicorn

    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}", argument="workers")
    live = LiveIndex(settings.index, mmap=settings.mmap)
    if on_ready is not None:
        on_ready(live.index)
    if workers == 1:
        uvicorn.run(create_app(settings, live), host=host, port=port, log_level=log_level)
        return
    os.environ[CONFIG_ENV] = json.dumps(asdict(settings))
    uvicorn.run("siamsearch.service:app_from_environment", factory=True, host=host, port=port, workers=workers,
                log_level=log_level)
