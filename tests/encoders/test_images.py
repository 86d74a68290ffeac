import base64
import http.server
import io
import socket
import struct
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from tests_helpers import wait_until

from idproxy_stream.config import ImageInputConfig
from idproxy_stream.encoders.http_fetch import host_allowed, is_public_address
from idproxy_stream.encoders.images import (
    ImageDecompressionBombError,
    ImageFetchError,
    ImageInputError,
    ImageNotFoundError,
    ImageOutsideAllowedRootsError,
    ImageSourceUnsupportedError,
    ImageTooLargeError,
    ImageUndecodableError,
    load_image,
)
from idproxy_stream.events import DeadLetterReason

from .conftest import png_bytes


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_bilevel_png_bomb(path: Path, side: int) -> Path:
    """A complete, valid 1-bit PNG of side x side black pixels: tiny on disk, huge decoded."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", body)
        + png_chunk(b"IEND", b"")
    )
    return path


@pytest.fixture
def roots(tmp_path) -> tuple[Path, Path]:
    allowed = tmp_path / "allowed"
    outside = tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    return allowed, outside


def file_config(allowed: Path, **overrides) -> ImageInputConfig:
    return ImageInputConfig(allowed_roots=(allowed,), **overrides)


def test_file_image_under_an_allowed_root_decodes_to_rgb(roots):
    allowed, _ = roots
    (allowed / "poster.png").write_bytes(png_bytes(40, 30))
    image = load_image(f"file://{allowed}/poster.png", file_config(allowed))
    assert image.mode == "RGB"
    assert image.size == (40, 30)


def test_symlink_pointing_outside_the_root_is_refused(roots):
    allowed, outside = roots
    (outside / "secret.png").write_bytes(png_bytes())
    (allowed / "link.png").symlink_to(outside / "secret.png")
    with pytest.raises(ImageOutsideAllowedRootsError) as error:
        load_image(f"file://{allowed}/link.png", file_config(allowed))
    assert error.value.reason == "image_outside_allowed_roots"


def test_dot_dot_traversal_out_of_the_root_is_refused(roots):
    allowed, outside = roots
    (outside / "secret.png").write_bytes(png_bytes())
    with pytest.raises(ImageOutsideAllowedRootsError):
        load_image(f"file://{allowed}/../outside/secret.png", file_config(allowed))


def test_files_are_refused_when_no_root_is_configured(roots):
    allowed, _ = roots
    (allowed / "poster.png").write_bytes(png_bytes())
    with pytest.raises(ImageOutsideAllowedRootsError, match="allowed_roots"):
        load_image(f"file://{allowed}/poster.png", ImageInputConfig())


def test_missing_file_reports_not_found(roots):
    allowed, _ = roots
    with pytest.raises(ImageNotFoundError) as error:
        load_image(f"file://{allowed}/nope.png", file_config(allowed))
    assert error.value.reason == "image_not_found"


def test_file_over_the_byte_limit_is_refused_before_reading(roots):
    allowed, _ = roots
    (allowed / "big.png").write_bytes(png_bytes(64, 64))
    with pytest.raises(ImageTooLargeError) as error:
        load_image(f"file://{allowed}/big.png", file_config(allowed, max_bytes=100))
    assert error.value.reason == "image_too_large"


def test_bomb_over_max_pixels_is_refused_from_its_header(roots):
    allowed, _ = roots
    bomb = write_bilevel_png_bomb(allowed / "bomb.png", 3000)
    assert bomb.stat().st_size < 10_000
    with pytest.raises(ImageDecompressionBombError) as error:
        load_image(f"file://{bomb}", file_config(allowed, max_pixels=1_000_000))
    assert error.value.reason == "image_decompression_bomb"
    assert "3000x3000" in str(error.value)


def test_bomb_beyond_pillows_own_limit_is_refused_even_with_a_huge_max_pixels(roots):
    allowed, _ = roots
    bomb = write_bilevel_png_bomb(allowed / "bomb.png", 20_000)
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ImageDecompressionBombError):
        load_image(f"file://{bomb}", file_config(allowed, max_pixels=10**12))


def test_truncated_jpeg_is_undecodable(roots):
    allowed, _ = roots
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png_bytes(64, 64))).save(buffer, format="JPEG")
    (allowed / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageUndecodableError) as error:
        load_image(f"file://{allowed}/cut.jpg", file_config(allowed))
    assert error.value.reason == "image_undecodable"


def test_formats_outside_the_allow_list_are_not_opened():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(ImageUndecodableError):
        load_image(eps, ImageInputConfig())


def test_inline_bytes_base64_and_data_uri_decode_to_the_same_image():
    data = png_bytes(12, 9, seed=4)
    encoded = base64.b64encode(data).decode()
    images = [
        load_image(data, ImageInputConfig()),
        load_image(encoded, ImageInputConfig()),
        load_image(f"data:image/png;base64,{encoded}", ImageInputConfig()),
    ]
    assert all(image.tobytes() == images[0].tobytes() for image in images)


def test_invalid_base64_is_undecodable():
    with pytest.raises(ImageUndecodableError):
        load_image("this is not base64 !!", ImageInputConfig())


def test_inline_images_can_be_disabled():
    with pytest.raises(ImageSourceUnsupportedError, match="allow_inline"):
        load_image(png_bytes(), ImageInputConfig(allow_inline=False))


def test_unknown_uri_scheme_is_unsupported():
    with pytest.raises(ImageSourceUnsupportedError) as error:
        load_image("ftp://example.com/a.png", ImageInputConfig())
    assert error.value.reason == "image_source_unsupported"


def test_transparent_pixels_become_white():
    image = load_image(png_bytes(4, 4, mode="RGBA"), ImageInputConfig())
    rgba = Image.open(io.BytesIO(png_bytes(4, 4, mode="RGBA")))
    clear = [xy for xy in ((x, y) for x in range(4) for y in range(4)) if rgba.getpixel(xy)[3] == 0]
    opaque = [
        xy for xy in ((x, y) for x in range(4) for y in range(4)) if rgba.getpixel(xy)[3] == 255
    ]
    assert image.mode == "RGB"
    assert all(image.getpixel(xy) == (255, 255, 255) for xy in clear)
    assert all(image.getpixel(xy) == rgba.getpixel(xy)[:3] for xy in opaque)


def test_s3_without_boto3_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # makes `import boto3` fail
    with pytest.raises(ImageSourceUnsupportedError, match=r"idproxy_stream\[s3\]"):
        load_image("s3://bucket/key.png", ImageInputConfig())


class _Handler(http.server.BaseHTTPRequestHandler):
    payload = png_bytes(20, 10, seed=7)
    requests: ClassVar[list[str]] = []  # paths every server of this handler was asked for

    def do_GET(self):
        _Handler.requests.append(self.path)
        if self.path.startswith("/redirect?"):  # /redirect?<url>: send the client there
            self.send_response(302)
            self.send_header("Location", self.path.split("?", 1)[1])
            self.end_headers()
        elif self.path.endswith("/poster.png"):  # also a proxied request's absolute URL
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.payload)))
            self.end_headers()
            self.wfile.write(self.payload)
        elif self.path == "/endless":  # no Content-Length: only the streaming cap can stop it
            self.send_response(200)
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"\0" * 4096)
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def http_base():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# HTTP is off by default and loopback is refused (SSRF): these tests name their server.
LOOPBACK_HTTP = {
    "allow_http": True,
    "http_allowed_hosts": ("127.0.0.1",),
    "http_allow_private_addresses": True,
}


def loopback(**overrides) -> ImageInputConfig:
    return ImageInputConfig(**{**LOOPBACK_HTTP, **overrides})


def test_http_image_is_fetched_and_decoded(http_base):
    image = load_image(f"{http_base}/poster.png", loopback())
    assert image.size == (20, 10)


def test_http_404_is_a_fetch_failure(http_base):
    with pytest.raises(ImageFetchError, match="HTTP 404") as error:
        load_image(f"{http_base}/missing.png", loopback())
    assert error.value.reason == "image_fetch_failed"


def test_http_declared_length_over_the_limit_is_refused(http_base):
    with pytest.raises(ImageTooLargeError, match="declares"):
        load_image(f"{http_base}/poster.png", loopback(max_bytes=50))


def test_http_body_without_length_is_capped_while_streaming(http_base):
    with pytest.raises(ImageTooLargeError, match="sent more than"):
        load_image(f"{http_base}/endless", loopback(max_bytes=10_000))


def test_http_server_that_never_answers_times_out():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection in the backlog, never replies
    try:
        port = silent.getsockname()[1]
        with pytest.raises(ImageFetchError):
            load_image(f"http://127.0.0.1:{port}/x.png", loopback(http_timeout_s=0.2))
    finally:
        silent.close()


class _TrickleHandler(http.server.BaseHTTPRequestHandler):
    """Answers a byte every 50 ms — headers (``/slow-headers``) or body — so no single read
    ever waits long; records how many bytes it got out before the client hung up."""

    sent: ClassVar[list[int]] = []

    def do_GET(self):
        if self.path == "/slow-headers":
            wire = b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n" + b"\0" * 200
        else:
            self.send_response(200)
            self.send_header("Content-Length", "200")
            self.end_headers()
            self.wfile.flush()
            wire = b"\0" * 200
        count = 0
        try:
            for byte in wire:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                count += 1
                time.sleep(0.05)  # the server's trickle, not a test's wait
        except OSError:
            pass  # the client hung up: what we measure
        finally:
            _TrickleHandler.sent.append(count)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("path", ["/slow-body.png", "/slow-headers"])
def test_a_server_that_trickles_is_cut_off_at_the_fetchs_deadline(path):
    """Issue 12 item 7: the timeout was per socket read, so a server sending a byte every
    1.5 s held a worker 120 s with ``http_timeout_s=2``. Now ``http_timeout_s`` bounds the
    whole fetch: it fails naming the deadline, and the server is cut off long before it
    could send everything (10 s of bytes)."""
    _TrickleHandler.sent.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TrickleHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}{path}"
        with pytest.raises(ImageFetchError, match=r"took over http_timeout_s=0\.5 s") as error:
            load_image(url, loopback(http_timeout_s=0.5))
        assert error.value.reason == "image_fetch_failed"
        wait_until(lambda: len(_TrickleHandler.sent) == 1, 30, "the server to notice")
        assert _TrickleHandler.sent[0] < 150, "the fetch outlived its deadline"
    finally:
        server.shutdown()
        server.server_close()


def test_http_can_be_disabled(http_base):
    with pytest.raises(ImageSourceUnsupportedError, match="allow_http"):
        load_image(f"{http_base}/poster.png", ImageInputConfig(allow_http=False))


def test_every_image_error_is_an_image_input_error_with_a_reason():
    classes = [
        ImageNotFoundError,
        ImageOutsideAllowedRootsError,
        ImageTooLargeError,
        ImageDecompressionBombError,
        ImageUndecodableError,
        ImageFetchError,
        ImageSourceUnsupportedError,
    ]
    reasons = {cls("x").reason for cls in classes}
    assert all(issubclass(cls, ImageInputError) for cls in classes)
    assert len(reasons) == len(classes)


# ------------------------------------------------ hostile references never escape ImageInputError

hostile_pieces = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6
) | st.sampled_from(
    ["\x00", "%00", "%", "%2e%2e/", "../", "//", "\\", "?", "#", "[", "]", "@", ":"]
)
hostile_paths = st.lists(hostile_pieces, max_size=8).map("".join)
hostile_references = st.one_of(
    hostile_paths.map(lambda path: f"file://{path}"),
    hostile_paths.map(lambda path: f"file:///{path}"),
    hostile_paths.map(lambda path: f"http://{path}"),
    hostile_paths.map(lambda path: f"s3://{path}"),
    hostile_paths.map(lambda path: f"data:{path}"),
    hostile_paths.map(lambda path: f"data:image/png;base64,{path}"),
    hostile_paths,
    st.text(max_size=40),
    st.binary(max_size=64),
    st.sampled_from(["file:///x.png%00.jpg", "file:///x.png\x00.jpg", "file://[/x", "http://[::1"]),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(reference=hostile_references)
def test_hostile_references_only_ever_raise_image_input_errors(reference, roots) -> None:
    """Whatever the reference, the result is an image or an ImageInputError with a reason
    (the worker turns it into that item's dead letter); http stays off, nothing is fetched."""
    allowed, _ = roots
    config = file_config(allowed, allow_http=False, allow_s3=False)
    try:
        image = load_image(reference, config)
    except ImageInputError as error:
        assert error.reason in DeadLetterReason.__members__.values()
        assert "\n" not in str(error)
    else:
        assert image.mode == "RGB"


def test_a_nul_byte_in_a_file_uri_is_an_invalid_image_not_a_value_error(roots) -> None:
    allowed, _ = roots
    for reference in ("file:///x.png%00.jpg", f"file://{allowed}/x.png\x00.jpg"):
        with pytest.raises(ImageInputError, match="NUL") as caught:
            load_image(reference, file_config(allowed))
        assert caught.value.reason == "image_invalid"


def test_a_path_outside_the_roots_reads_the_same_whether_it_exists_or_not(roots):
    """Issue 12 item 10: not_found vs outside_allowed_roots told whether any host path exists."""
    allowed, outside = roots
    (outside / "secret.png").write_bytes(png_bytes())
    refusals = []
    for name in ("secret.png", "no-such-file.png"):
        for uri in (f"file://{outside}/{name}", f"file://{allowed}/../outside/{name}"):
            with pytest.raises(ImageInputError) as caught:
                load_image(uri, file_config(allowed))
            refusals.append((caught.value.reason, str(caught.value).replace(name, "NAME")))
    assert {reason for reason, _ in refusals} == {"image_outside_allowed_roots"}
    assert refusals[0][1] == refusals[2][1] and refusals[1][1] == refusals[3][1]


def test_refusals_never_show_the_resolved_path_the_link_target_or_the_roots(roots):
    allowed, outside = roots
    (outside / "secret.png").write_bytes(png_bytes())
    (allowed / "link.png").symlink_to(outside / "secret.png")
    uris = [
        f"file://{allowed}/link.png",
        f"file://{allowed}/../outside/secret.png",
        f"file://{allowed}/missing.png",
        "file:///etc/hostname",
    ]
    for uri in uris:
        with pytest.raises(ImageInputError) as caught:
            load_image(uri, file_config(allowed))
        message = str(caught.value).replace(uri, "<uri>")
        assert str(outside) not in message and str(allowed) not in message, message
        assert "allowed_roots" in message or caught.value.reason == "image_not_found"


# ------------------------------------------------------------------------------ SSRF


def test_http_is_off_by_default_and_nothing_is_fetched(http_base):
    _Handler.requests.clear()
    with pytest.raises(ImageSourceUnsupportedError, match="allow_http") as caught:
        load_image(f"{http_base}/poster.png", ImageInputConfig())
    assert caught.value.reason == "image_source_unsupported" and _Handler.requests == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
def test_loopback_is_refused_after_dns_even_with_http_on(http_base, host):
    _Handler.requests.clear()
    port = http_base.rsplit(":", 1)[1]
    with pytest.raises(ImageSourceUnsupportedError, match="private, loopback or link-local"):
        load_image(f"http://{host}:{port}/poster.png", ImageInputConfig(allow_http=True))
    assert _Handler.requests == []  # refused before connecting


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1", "fe80::1", "0.0.0.0"],
)
def test_private_loopback_and_link_local_addresses_are_not_public(address):
    assert not is_public_address(address)
    assert is_public_address("93.184.216.34") and is_public_address("2606:4700::1111")


def test_a_host_off_the_allow_list_is_refused(http_base):
    config = loopback(http_allowed_hosts=("images.example.com", ".cdn.example.org"))
    with pytest.raises(ImageSourceUnsupportedError, match="http_allowed_hosts"):
        load_image(f"{http_base}/poster.png", config)
    assert host_allowed("a.cdn.example.org", config.http_allowed_hosts)
    assert not host_allowed("evilcdn.example.org", config.http_allowed_hosts)


def test_every_redirect_is_checked_again(http_base):
    """An allowed host that redirects to a host off the list, or to a private address when
    private addresses are not allowed, or to another scheme, is refused at the redirect."""
    port = http_base.rsplit(":", 1)[1]
    off_list = f"{http_base}/redirect?http://localhost:{port}/poster.png"
    with pytest.raises(ImageSourceUnsupportedError, match="redirect was refused"):
        load_image(off_list, loopback())
    to_ftp = f"{http_base}/redirect?ftp://127.0.0.1:{port}/poster.png"
    with pytest.raises(ImageSourceUnsupportedError, match="redirect was refused"):
        load_image(to_ftp, loopback())
    with pytest.raises(ImageInputError):  # urllib itself never follows a file: redirect
        load_image(f"{http_base}/redirect?file:///etc/hostname", loopback())
    _Handler.requests.clear()
    allowed = f"{http_base}/redirect?{http_base}/poster.png"
    assert load_image(allowed, loopback()).size == (20, 10)
    assert _Handler.requests == [f"/redirect?{http_base}/poster.png", "/poster.png"]


def test_proxy_environment_variables_are_ignored_unless_configured(http_base, monkeypatch):
    """With HTTP_PROXY pointing at a "proxy" (the same test server), the request still goes
    straight to the image's host unless http_use_proxy_env is set."""
    _Handler.requests.clear()
    monkeypatch.setenv("HTTP_PROXY", http_base)
    monkeypatch.setenv("http_proxy", http_base)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    load_image(f"{http_base}/poster.png", loopback())
    assert _Handler.requests == ["/poster.png"]  # direct: a path, not a proxied absolute URL
    _Handler.requests.clear()
    load_image(f"{http_base}/poster.png", loopback(http_use_proxy_env=True))
    assert _Handler.requests == [f"{http_base}/poster.png"]  # through the "proxy"
