"""URL sources and uploads: real HTTP servers on loopback, the real CLI, the SSRF guard."""

from __future__ import annotations

import io
import ipaddress
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from images import art_page, blank_page, save_photo, text_page, write_pages
from PIL import Image
from smartthumb.runner import netguard
from smartthumb.runner.errors import BadInputError
from smartthumb.runner.fetch import Web, comparable, prefix_pattern
from smartthumb.runner.limits import Limits
from smartthumb.runner.pipeline import make_thumbnail
from smartthumb.runner.spec import Mode, ThumbnailSpec
from test_runner_cli import assert_one_line_error, run_cli

SECRET = "X-Amz-Signature=s3cr3t"
LOOPBACK = {"SMARTTHUMB_ALLOW_PRIVATE_SOURCES": "127.0.0.0/8"}

Route = Callable[["_Handler"], None]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() then joins every handler thread
    site: Site


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _handle(self) -> None:
        site = self.server.site
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        site.requests.append(Request(self.command, self.path, dict(self.headers), body))
        route = site.routes.get(self.path.split("?", 1)[0], not_found)
        try:
            route(self)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the runner hung up, as it should past a limit

    do_GET = do_PUT = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Site:
    """One HTTP server on a loopback address; `routes` maps a path to what it answers."""

    host: str
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    sent: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    server: _Server | None = None

    @property
    def base(self) -> str:
        assert self.server is not None
        return f"http://{self.host}:{self.server.server_address[1]}"


@pytest.fixture
def start_site() -> Iterator[Callable[..., Site]]:
    """Starts servers; stops them all and joins their threads, whatever the test did."""
    started: list[tuple[Site, threading.Thread]] = []

    def start(host: str = "127.0.0.1") -> Site:
        site = Site(host)
        site.server = _Server((host, 0), _Handler)
        site.server.site = site
        thread = threading.Thread(target=site.server.serve_forever, name=f"site-{host}")
        thread.start()
        started.append((site, thread))
        return site

    try:
        yield start
    finally:
        for site, thread in started:
            site.stop.set()  # wakes stalling handlers
            assert site.server is not None
            site.server.shutdown()
            site.server.server_close()
            thread.join(timeout=10)
        assert not any(thread.is_alive() for _, thread in started)


@pytest.fixture
def site(start_site: Callable[..., Site]) -> Site:
    return start_site()


def answer(body: bytes, status: int = 200, content_type: str = "image/jpeg") -> Route:
    def route(handler: _Handler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return route


def not_found(handler: _Handler) -> None:
    answer(b"no such object", 404, "text/plain")(handler)


def redirect(location: str) -> Route:
    def route(handler: _Handler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


def jpeg_bytes(path: Path) -> Route:
    return answer(path.read_bytes())


def env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SMARTTHUMB_")}
    return {**clean, **extra}


def without_timings(stdout: str) -> dict[str, Any]:
    document = json.loads(stdout)
    document.pop("timings_ms")
    return document


def test_a_url_input_makes_the_same_thumbnail_as_the_file(tmp_path: Path, site: Site) -> None:
    source = save_photo(tmp_path, "astronaut")
    site.routes["/photos/astronaut.jpg"] = jpeg_bytes(source)
    args = ("crop", "--mode", "crop", "--width", "200", "--height", "300")
    from_file = run_cli(*args, "-o", tmp_path / "file.jpg", source, env=env())
    log = tmp_path / "termination-log"
    from_url = run_cli(
        *args,
        "-o",
        tmp_path / "url.jpg",
        "--termination-log",
        log,
        f"{site.base}/photos/astronaut.jpg?{SECRET}",
        env=env(**LOOPBACK),
    )
    assert from_file.returncode == 0 and from_url.returncode == 0, from_url.stderr
    assert without_timings(from_url.stdout) == without_timings(from_file.stdout)
    assert (tmp_path / "url.jpg").read_bytes() == (tmp_path / "file.jpg").read_bytes()
    assert "s3cr3t" not in from_url.stdout + from_url.stderr + log.read_text()
    assert [request.path for request in site.requests] == [f"/photos/astronaut.jpg?{SECRET}"]


@pytest.mark.parametrize("fallback", [False, True], ids=["smart", "fallback"])
def test_urls_and_paths_mix_as_pages_in_order(tmp_path: Path, site: Site, fallback: bool) -> None:
    pages = write_pages(
        tmp_path,
        [text_page(), art_page("astronaut"), blank_page(), art_page("coffee"), art_page("chelsea")],
    )
    mixed: list[str | Path] = []
    for index, page in enumerate(pages):
        if index % 2:
            site.routes[f"/p{index}.jpg"] = jpeg_bytes(page)
            mixed.append(f"{site.base}/p{index}.jpg?{SECRET}")
        else:
            mixed.append(page)
    flags = ["--fallback"] if fallback else []
    files = run_cli("crop", *flags, "-o", tmp_path / "files.jpg", *pages, env=env())
    urls = run_cli("crop", *flags, "-o", tmp_path / "mixed.jpg", *mixed, env=env(**LOOPBACK))
    assert files.returncode == 0 and urls.returncode == 0, urls.stderr
    assert without_timings(urls.stdout) == without_timings(files.stdout)
    assert json.loads(urls.stdout)["fallback_used"] is fallback
    assert (tmp_path / "mixed.jpg").read_bytes() == (tmp_path / "files.jpg").read_bytes()
    # Each page is fetched once, even the chosen ones that are decoded twice.
    assert sorted(request.path for request in site.requests) == [
        f"/p1.jpg?{SECRET}",
        f"/p3.jpg?{SECRET}",
    ]


def test_the_output_is_put_to_a_url(tmp_path: Path, site: Site) -> None:
    source = save_photo(tmp_path, "coffee")
    site.routes["/bucket/thumb.webp"] = answer(b"", 200, "text/plain")
    result = run_cli(
        "crop",
        "--mode",
        "fit",
        "--width",
        "320",
        "--format",
        "webp",
        "-o",
        f"{site.base}/bucket/thumb.webp?{SECRET}",
        source,
        env=env(**LOOPBACK),
    )
    assert result.returncode == 0, result.stderr
    [put] = site.requests
    assert put.method == "PUT" and put.path == f"/bucket/thumb.webp?{SECRET}"
    assert put.headers["Content-Type"] == "image/webp"
    assert int(put.headers["Content-Length"]) == len(put.body)
    image = Image.open(io.BytesIO(put.body))
    assert image.format == "WEBP" and image.width == 320
    output = json.loads(result.stdout)["output"]
    assert output["bytes"] == len(put.body) and (output["width"], output["height"]) == image.size


@pytest.mark.parametrize(("status", "code"), [(403, 2), (503, 1)])
def test_a_refused_upload_fails_with_the_status(
    tmp_path: Path, site: Site, status: int, code: int
) -> None:
    source = save_photo(tmp_path, "coffee")
    site.routes["/bucket/thumb.jpg"] = answer(b"<Error>denied</Error>", status, "text/xml")
    log = tmp_path / "termination-log"
    result = run_cli(
        "crop",
        "--mode",
        "fit",
        "--width",
        "100",
        "--termination-log",
        log,
        "-o",
        f"{site.base}/bucket/thumb.jpg?{SECRET}",
        source,
        env=env(**LOOPBACK),
    )
    assert_one_line_error(result, code, f"upload to {site.base}/bucket/thumb.jpg: HTTP {status}")
    assert "s3cr3t" not in result.stderr + log.read_text()
    assert json.loads(log.read_text())["exit_code"] == code


def test_loopback_is_refused_by_default(tmp_path: Path, site: Site) -> None:
    site.routes["/a.jpg"] = jpeg_bytes(save_photo(tmp_path, "coffee"))
    log = tmp_path / "termination-log"
    result = run_cli(
        "crop",
        "--mode",
        "fit",
        "--width",
        "100",
        "-o",
        tmp_path / "o.jpg",
        "--termination-log",
        log,
        f"{site.base}/a.jpg?{SECRET}",
        env=env(),
    )
    assert_one_line_error(
        result,
        2,
        f"{site.base}/a.jpg: host '127.0.0.1' resolves to 127.0.0.1, a non-public address",
    )
    assert "SMARTTHUMB_ALLOW_PRIVATE_SOURCES" in result.stderr
    assert "s3cr3t" not in result.stderr + log.read_text()
    assert json.loads(log.read_text())["exit_code"] == 2
    assert site.requests == [], "refused before connecting"
    assert not (tmp_path / "o.jpg").exists()


def test_a_loopback_upload_is_refused_by_default(tmp_path: Path, site: Site) -> None:
    result = run_cli(
        "crop",
        "--mode",
        "fit",
        "--width",
        "100",
        "-o",
        f"{site.base}/o.jpg?{SECRET}",
        save_photo(tmp_path, "coffee"),
        env=env(),
    )
    assert_one_line_error(result, 2, f"upload to {site.base}/o.jpg: host '127.0.0.1'")
    assert "s3cr3t" not in result.stderr and site.requests == []


def test_allowed_sources_are_url_prefixes(tmp_path: Path, site: Site) -> None:
    photo = jpeg_bytes(save_photo(tmp_path, "coffee"))
    site.routes.update(
        {
            "/images/a.jpg": photo,
            "/private/a.jpg": photo,
            "/images/moved.jpg": redirect("/private/a.jpg"),
        }
    )
    settings = env(
        SMARTTHUMB_ALLOWED_SOURCES=f"https://cdn.example.com/, {site.base}/images/", **LOOPBACK
    )
    args = ("crop", "--mode", "fit", "--width", "100", "-o", tmp_path / "o.jpg")
    assert run_cli(*args, f"{site.base}/images/a.jpg", env=settings).returncode == 0
    refused = run_cli(*args, f"{site.base}/private/a.jpg?{SECRET}", env=settings)
    assert_one_line_error(
        refused, 2, f"{site.base}/private/a.jpg: not allowed by SMARTTHUMB_ALLOWED_SOURCES"
    )
    moved = run_cli(*args, f"{site.base}/images/moved.jpg?{SECRET}", env=settings)
    assert_one_line_error(
        moved,
        2,
        f"{site.base}/images/moved.jpg (redirected to {site.base}/private/a.jpg): not allowed",
    )
    assert "s3cr3t" not in refused.stderr + moved.stderr
    assert [request.path.split("?")[0] for request in site.requests] == [
        "/images/a.jpg",
        "/images/moved.jpg",
    ], "a refused prefix is never requested"


def test_allowed_source_prefixes_match_like_imgproxy() -> None:
    import httpx

    def allowed(prefix: str, url: str) -> bool:
        return prefix_pattern(prefix).match(comparable(httpx.URL(url))) is not None

    assert allowed("https://*.example.com/", "https://img.example.com/a.jpg")
    assert allowed("https://*.example.com/", "https://a.b.example.com/a.jpg")
    assert allowed("https://images.example.com", "https://images.example.com/a.jpg")
    assert allowed("https://images.example.com/", "https://IMAGES.example.com:443/a.jpg")
    assert not allowed("https://*.example.com/", "https://evil.net/.example.com/a.jpg")
    assert not allowed("https://*.example.com/", "http://img.example.com/a.jpg")
    assert not allowed("https://images.example.com", "https://images.example.com.evil.net/")
    assert not allowed("https://images.example.com/", "https://images.example.com@evil.net/")
    assert not allowed(
        "https://images.example.com/", "https://evil.net/?https://images.example.com/"
    )
    assert not allowed("https://s3.example.com/bucket/", "https://s3.example.com/bucket2/a")


@pytest.mark.parametrize("target", ["second-server", "metadata"])
def test_a_redirect_to_a_refused_address_is_refused(
    tmp_path: Path, start_site: Callable[..., Site], target: str
) -> None:
    first, second = start_site("127.0.0.1"), start_site("127.0.0.2")
    second.routes["/a.jpg"] = jpeg_bytes(save_photo(tmp_path, "coffee"))
    location = (
        f"{second.base}/a.jpg?{SECRET}"
        if target == "second-server"
        else "http://169.254.169.254/latest/meta-data/iam/"
    )
    first.routes["/r"] = redirect(location)
    args = (
        "crop",
        "--mode",
        "fit",
        "--width",
        "100",
        "-o",
        tmp_path / "o.jpg",
        f"{first.base}/r?{SECRET}",
    )
    refused = run_cli(*args, env=env(SMARTTHUMB_ALLOW_PRIVATE_SOURCES="127.0.0.1/32"))
    address = "127.0.0.2" if target == "second-server" else "169.254.169.254"
    assert_one_line_error(
        refused,
        2,
        f"{first.base}/r (redirected to "
        f"{location.split('?')[0]}): host '{address}' resolves to "
        f"{address}, a non-public address",
    )
    assert "s3cr3t" not in refused.stderr
    assert second.requests == [], "the guard refused the hop before connecting"
    if target == "second-server":
        followed = run_cli(*args, env=env(**LOOPBACK))
        assert followed.returncode == 0, followed.stderr
        assert [request.path for request in second.requests] == [f"/a.jpg?{SECRET}"]


def test_a_relative_redirect_keeps_the_host_name(
    tmp_path: Path, site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The transport connects to the checked IP; the next hop must still be the host name
    # (Host header, TLS name, allow-list), not that IP.
    monkeypatch.setattr(netguard, "resolve", lambda host, port: [ipaddress.ip_address("127.0.0.1")])
    body = save_photo(tmp_path, "coffee").read_bytes()
    site.routes.update({"/old/a.jpg": redirect("/new/a.jpg"), "/new/a.jpg": answer(body)})
    port = site.base.rsplit(":", 1)[1]
    limits = Limits(allow_private_sources=True, allowed_sources=[f"http://images.test:{port}/"])
    with Web(limits) as web:
        assert web.get(f"http://images.test:{port}/old/a.jpg") == body
    assert [request.headers["Host"] for request in site.requests] == [f"images.test:{port}"] * 2


def test_more_than_five_redirects_are_refused(tmp_path: Path, site: Site) -> None:
    site.routes["/loop"] = redirect("/loop")
    result = run_cli(
        "crop",
        "--mode",
        "fit",
        "--width",
        "100",
        "-o",
        tmp_path / "o.jpg",
        f"{site.base}/loop",
        env=env(**LOOPBACK),
    )
    assert_one_line_error(result, 2, "more than 5 redirects")
    assert len(site.requests) == 6


@pytest.mark.parametrize(
    ("route", "needle"),
    [
        (not_found, "HTTP 404 Not Found"),
        (answer(b"<html>hello</html>" * 50, 200, "text/html"), "not a supported image"),
    ],
)
def test_a_bad_answer_names_the_url(tmp_path: Path, site: Site, route: Route, needle: str) -> None:
    site.routes["/a.jpg"] = route
    result = run_cli(
        "crop",
        "--mode",
        "fit",
        "--width",
        "100",
        "-o",
        tmp_path / "o.jpg",
        f"{site.base}/a.jpg?{SECRET}",
        env=env(**LOOPBACK),
    )
    assert_one_line_error(result, 2, f"{site.base}/a.jpg: {needle}")
    assert "s3cr3t" not in result.stderr


def _endless(site: Site) -> Route:
    """Close-delimited body (no Content-Length) of up to 256 MiB; counts what got out."""

    def route(handler: _Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.end_headers()
        chunk = b"\xff" * 65536
        try:
            while site.sent < 256 * 2**20 and not site.stop.is_set():
                handler.wfile.write(chunk)
                site.sent += len(chunk)
        finally:
            site.done.set()

    return route


def _declares_huge(handler: _Handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(10**12))
    handler.end_headers()
    handler.server.site.stop.wait(30)


def test_a_body_over_the_cap_is_refused_without_reading_it_all(tmp_path: Path, site: Site) -> None:
    site.routes.update({"/endless.jpg": _endless(site), "/huge.jpg": _declares_huge})
    settings = env(SMARTTHUMB_MAX_SOURCE_BYTES=str(2**20), **LOOPBACK)
    args = ("crop", "--mode", "fit", "--width", "100", "-o", tmp_path / "o.jpg")
    result = run_cli(*args, f"{site.base}/endless.jpg?{SECRET}", env=settings)
    assert_one_line_error(
        result,
        2,
        f"{site.base}/endless.jpg: larger than the limit of "
        "1048576 bytes (SMARTTHUMB_MAX_SOURCE_BYTES)",
    )
    assert site.done.wait(10)
    assert site.sent < 64 * 2**20, f"{site.sent} bytes sent: the download did not stop"
    started = time.monotonic()
    declared = run_cli(*args, f"{site.base}/huge.jpg", env=settings)
    assert_one_line_error(declared, 2, "1000000000000 bytes, above the limit of 1048576")
    assert time.monotonic() - started < 20, "refused from the header, not after waiting"


def _silent(handler: _Handler) -> None:
    handler.server.site.stop.wait(30)


def _stalls_mid_body(handler: _Handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    handler.wfile.write(b"\xff\xd8" + b"\x00" * 1000)
    handler.wfile.flush()
    handler.server.site.stop.wait(30)


def _trickles(handler: _Handler) -> None:
    """A byte every 0.2 s: no single read ever times out, the whole download must."""
    handler.send_response(200)
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    while not handler.server.site.stop.wait(0.2):
        handler.wfile.write(b"\x00")
        handler.wfile.flush()


@pytest.mark.parametrize(
    "route", [_silent, _stalls_mid_body, _trickles], ids=["silent", "stalls-mid-body", "trickles"]
)
def test_a_stalling_server_times_out_within_the_timeout(site: Site, route: Route) -> None:
    site.routes["/slow.jpg"] = route
    with Web(Limits(allow_private_sources=True, source_timeout_s=1)) as web:
        started = time.monotonic()
        with pytest.raises(BadInputError, match=r"slow\.jpg: not done within 1 s"):
            web.get(f"{site.base}/slow.jpg?{SECRET}")
        elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 1.8, elapsed


def test_the_cli_reports_a_timeout_in_one_line(tmp_path: Path, site: Site) -> None:
    site.routes["/slow.jpg"] = _silent
    result = run_cli(
        "crop",
        "--mode",
        "fit",
        "--width",
        "100",
        "-o",
        tmp_path / "o.jpg",
        f"{site.base}/slow.jpg?{SECRET}",
        env=env(SMARTTHUMB_SOURCE_TIMEOUT_S="1", **LOOPBACK),
    )
    assert_one_line_error(
        result, 2, f"{site.base}/slow.jpg: not done within 1 s (SMARTTHUMB_SOURCE_TIMEOUT_S)"
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SMARTTHUMB_ALLOW_PRIVATE_SOURCES", "10.0.0.0/33"),
        ("SMARTTHUMB_ALLOWED_SOURCES", "images.example.com"),
        ("SMARTTHUMB_MAX_SOURCE_BYTES", "lots"),
        ("SMARTTHUMB_SOURCE_TIMEOUT_S", "0"),
    ],
)
def test_a_bad_source_setting_is_a_one_line_error(
    tmp_path: Path, variable: str, value: str
) -> None:
    result = run_cli(
        "crop",
        "--mode",
        "fit",
        "--width",
        "100",
        "-o",
        tmp_path / "o.jpg",
        save_photo(tmp_path, "coffee"),
        env=env(**{variable: value}),
    )
    assert_one_line_error(result, 2, variable)


def test_source_settings_parse_like_the_webhook_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Limits.from_env() == Limits()
    assert Limits().max_source_bytes == 50 * 2**20 and Limits().source_timeout_s == 30
    for value, expected in [
        ("true", True),
        ("off", False),
        ("", False),
        ("10.0.0.0/8, 127.0.0.0/8", ["10.0.0.0/8", "127.0.0.0/8"]),
        ('["192.168.0.0/16"]', ["192.168.0.0/16"]),
    ]:
        monkeypatch.setenv("SMARTTHUMB_ALLOW_PRIVATE_SOURCES", value)
        allow = Limits.from_env().allow_private_sources
        assert (allow if isinstance(allow, bool) else [str(n) for n in allow]) == expected
    monkeypatch.setenv("SMARTTHUMB_ALLOWED_SOURCES", "https://a.example.com/, https://*.b.net/")
    assert Limits.from_env().allowed_sources == ["https://a.example.com/", "https://*.b.net/"]


@dataclass
class _Counted:
    """A ByteSource that counts fetches and how many pages' bytes are held at once."""

    path: Path
    held: set[str]
    peak: list[int]
    fetches: list[str]

    @property
    def name(self) -> str:
        return self.path.name

    def read(self) -> bytes:
        if self.name not in self.held:
            self.fetches.append(self.name)
            self.held.add(self.name)
            self.peak[0] = max(self.peak[0], len(self.held))
        return self.path.read_bytes()

    def release(self) -> None:
        self.held.discard(self.name)


def test_pair_mode_holds_at_most_three_fetched_pages(tmp_path: Path) -> None:
    pages = write_pages(
        tmp_path,
        [
            art_page(name, (200, 300))
            for name in ("coffee", "astronaut", "chelsea", "rocket", "camera")
        ]
        * 3,
    )
    held: set[str] = set()
    peak = [0]
    fetches: list[str] = []
    inputs = [_Counted(page, held, peak, fetches) for page in pages]
    files = make_thumbnail(pages, ThumbnailSpec(mode=Mode.pair), tmp_path / "f.jpg", fallback=True)
    counted = make_thumbnail(
        inputs, ThumbnailSpec(mode=Mode.pair), tmp_path / "c.jpg", fallback=True
    )
    assert counted.selected == files.selected
    assert (tmp_path / "c.jpg").read_bytes() == (tmp_path / "f.jpg").read_bytes()
    assert peak[0] <= 3 and sorted(fetches) == sorted(page.name for page in pages)
