"""Images from users: a reference (URI, base64 or bytes) -> a checked, decoded RGB image.

Accepted references:

- ``file:///abs/path.jpg`` — only under ``ImageInputConfig.allowed_roots``: checked on the
  path as written (``..`` collapsed) before the file system is touched, so a path outside
  reads the same whether it exists or not, then on the resolved path (no symlink steps out);
  no roots configured = no files. Messages never show resolved paths or the roots.
- ``http://`` / ``https://`` — off unless ``allow_http``; only public hosts (checked after
  DNS and after every redirect) or the ``http_allowed_hosts`` allow-list, proxy env vars
  ignored (``encoders/http_fetch.py``); urllib with a timeout; the byte cap is enforced while
  streaming (and from ``Content-Length`` when sent).
- ``s3://bucket/key`` — with boto3 installed (the ``s3`` extra).
- ``data:image/...;base64,...``, a raw base64 string, or raw ``bytes``.

Limits hold before any pixel is decoded: the encoded size against ``max_bytes``, then the
width x height that the header declares against ``max_pixels`` (Pillow opens lazily and
reads only the header). Pillow's own ``DecompressionBombError`` is caught too. Only common
raster formats are opened (no EPS, which would run Ghostscript).

Every failure raises a subclass of :class:`ImageInputError` whose ``reason`` is the
:class:`~idproxy_stream.events.DeadLetterReason` the stream puts on the dead letter — also an
unexpected one (a NUL byte in a path, a malformed URL, a library's own error): :func:`load_image`
turns any other exception into :class:`ImageInputError` (``image_invalid``), so a bad reference
is its item's dead letter and never fails the batch it came in.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image, UnidentifiedImageError

from idproxy_stream.config import ImageInputConfig
from idproxy_stream.encoders.http_fetch import FetchDeadline, HttpRefused, fetch_http
from idproxy_stream.errors import IdProxyError
from idproxy_stream.events import DeadLetterReason

logger = logging.getLogger(__name__)

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_READ_CHUNK = 1 << 16


class ImageInputError(IdProxyError, ValueError):
    """An image reference cannot be turned into an image; ``reason`` is a stable code."""

    reason = DeadLetterReason.IMAGE_INVALID

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reason = type(self).reason


class ImageNotFoundError(ImageInputError):
    reason = DeadLetterReason.IMAGE_NOT_FOUND


class ImageOutsideAllowedRootsError(ImageInputError):
    reason = DeadLetterReason.IMAGE_OUTSIDE_ALLOWED_ROOTS


class ImageTooLargeError(ImageInputError):
    reason = DeadLetterReason.IMAGE_TOO_LARGE


class ImageDecompressionBombError(ImageTooLargeError):
    """The header declares more pixels than allowed (a small file that would decode huge)."""

    reason = DeadLetterReason.IMAGE_DECOMPRESSION_BOMB


class ImageUndecodableError(ImageInputError):
    reason = DeadLetterReason.IMAGE_UNDECODABLE


class ImageFetchError(ImageInputError):
    reason = DeadLetterReason.IMAGE_FETCH_FAILED


class ImageSourceUnsupportedError(ImageInputError):
    reason = DeadLetterReason.IMAGE_SOURCE_UNSUPPORTED


def load_image(ref: str | bytes, config: ImageInputConfig) -> Image.Image:
    """Fetch, check and decode an image reference into an RGB ``PIL.Image``.

    Raises a subclass of :class:`ImageInputError` and nothing else (see the module docstring).
    """
    try:
        return decode_image(read_image_bytes(ref, config), config)
    except ImageInputError:
        raise
    except Exception as error:  # a reference must never escape its item's dead letter
        raise ImageInputError(
            f"the image reference cannot be read ({type(error).__name__}); send a file://, "
            "http(s)://, s3:// or data: URI, or base64"
        ) from None


def read_image_bytes(ref: str | bytes | bytearray | memoryview, config: ImageInputConfig) -> bytes:
    """The encoded image bytes a reference points to, at most ``config.max_bytes`` of them."""
    if isinstance(ref, bytes | bytearray | memoryview):
        _require_inline(config)
        return _check_size(bytes(ref), config, "inline image")
    if not isinstance(ref, str):
        raise ImageSourceUnsupportedError(
            f"an image reference must be a URI string or bytes, got {type(ref).__name__}"
        )
    scheme = ref.split(":", 1)[0].lower() if ":" in ref[:16] else ""
    if scheme == "file":
        return _read_file(ref, config)
    if scheme in ("http", "https"):
        return _read_http(ref, config)
    if scheme == "s3":
        return _read_s3(ref, config)
    if scheme == "data":
        return _read_data_uri(ref, config)
    if scheme:
        raise ImageSourceUnsupportedError(
            f"image URI scheme {scheme!r} is not supported: use file://, http(s)://, s3://, "
            "data: or base64"
        )
    _require_inline(config)
    return _decode_base64(ref, config)


def decode_image(data: bytes, config: ImageInputConfig) -> Image.Image:
    """Check limits, then decode ``data`` into an RGB image (first frame if animated)."""
    _check_size(data, config, "image")
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
            width, height = image.size
            if width * height > config.max_pixels:
                raise ImageDecompressionBombError(
                    f"image declares {width}x{height} = {width * height} pixels, over "
                    f"max_pixels={config.max_pixels}; raise encoder.images.max_pixels if such "
                    "images are legitimate"
                )
            image.load()
            return _to_rgb(image)
    except ImageInputError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageDecompressionBombError(f"image refused by Pillow as a bomb: {error}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageUndecodableError(
            f"image bytes cannot be decoded as one of {', '.join(ALLOWED_FORMATS)}: {error}"
        ) from None


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy; transparent pixels become white rather than black."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _check_size(data: bytes, config: ImageInputConfig, what: str) -> bytes:
    if len(data) > config.max_bytes:
        raise ImageTooLargeError(f"{what} has {len(data)} bytes, over max_bytes={config.max_bytes}")
    return data


def _require_inline(config: ImageInputConfig) -> None:
    if not config.allow_inline:
        raise ImageSourceUnsupportedError(
            "inline images (bytes, base64, data: URIs) are disabled: set "
            "encoder.images.allow_inline=true or send a URI"
        )


def _shown(uri: str) -> str:
    """The reference as a message may show it: the user's own text, cut to 120 characters."""
    return repr(uri if len(uri) <= 120 else f"{uri[:117]}...")


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def _read_file(uri: str, config: ImageInputConfig) -> bytes:
    """A ``file://`` image under the allowed roots.

    The roots are checked on the path as written (``..`` collapsed, nothing on disk touched)
    before the file system is asked anything, so a path outside them is refused the same way
    whether it exists or not; then on the resolved path (a symlink cannot step outside).
    Messages never show resolved paths, link targets or the roots themselves.
    """
    if "\x00" in unquote(uri):
        raise ImageInputError("the file URI holds a NUL byte (%00): send a valid file path")
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise ImageSourceUnsupportedError(
            f"file URI {_shown(uri)} names a host: only local files (file:///path)"
        )
    outside = ImageOutsideAllowedRootsError(
        f"image file {_shown(uri)} is outside encoder.images.allowed_roots"
    )
    if not config.allowed_roots:
        raise ImageOutsideAllowedRootsError(
            "file images are disabled: set encoder.images.allowed_roots to the folders "
            "that may be read"
        )
    written = Path(os.path.normpath(unquote(parsed.path)))
    configured = [Path(os.path.normpath(Path(root).expanduser())) for root in config.allowed_roots]
    roots = configured + [root.resolve() for root in configured]
    if not written.is_absolute() or not _under(written, roots):
        raise outside
    try:
        path = written.resolve(strict=True)
    except (OSError, RuntimeError):
        raise ImageNotFoundError(f"image file {_shown(uri)} does not exist") from None
    if not _under(path, roots):
        raise outside
    if not path.is_file():
        raise ImageNotFoundError(f"image path {_shown(uri)} is not a regular file")
    size = path.stat().st_size
    if size > config.max_bytes:
        raise ImageTooLargeError(
            f"image file {_shown(uri)} has {size} bytes, over max_bytes={config.max_bytes}"
        )
    with path.open("rb") as handle:
        return _check_size(handle.read(config.max_bytes + 1), config, f"image file {_shown(uri)}")


def _read_stream(stream, limit: int, what: str) -> bytes:
    """Read at most ``limit`` bytes from a file-like object; more raises ImageTooLargeError."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = stream.read(_READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise ImageTooLargeError(f"{what} sent more than max_bytes={limit} bytes")
        chunks.append(chunk)


def _read_http(url: str, config: ImageInputConfig) -> bytes:
    if not config.allow_http:
        raise ImageSourceUnsupportedError(
            f"http(s) images are disabled (encoder.images.allow_http=false): {_shown(url)}"
        )
    deadline = FetchDeadline(config.http_timeout_s)
    try:
        with deadline, fetch_http(url, config, deadline) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > config.max_bytes:
                raise ImageTooLargeError(
                    f"image at {_shown(url)} declares {declared} bytes, over "
                    f"max_bytes={config.max_bytes}"
                )
            data = _read_stream(response, config.max_bytes, f"image at {_shown(url)}")
    except ImageInputError:
        raise
    except Exception as error:
        raise (
            _deadline_error(url, config) if deadline.expired else _http_error(url, error)
        ) from None
    if deadline.expired:  # the deadline cut the body short: what was read is not the image
        raise _deadline_error(url, config)
    return data


def _deadline_error(url: str, config: ImageInputConfig) -> ImageFetchError:
    return ImageFetchError(
        f"fetching {_shown(url)} took over http_timeout_s={config.http_timeout_s:g} s "
        "(the whole fetch: connect, redirects, headers and body)"
    )


def _http_error(url: str, error: Exception) -> Exception:
    """The image error for a failed fetch of ``url``; an unexpected error is returned as is
    (the worker makes it that event's dead letter)."""
    if isinstance(error, HttpRefused):
        return ImageSourceUnsupportedError(f"{_shown(url)} refused: {error}")
    if isinstance(error, urllib.error.HTTPError):
        return ImageFetchError(f"fetching {_shown(url)} failed with HTTP {error.code}")
    if isinstance(error, (urllib.error.URLError, TimeoutError, OSError, ValueError)):
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        if isinstance(reason, HttpRefused):  # raised inside urllib's connection
            return ImageSourceUnsupportedError(f"{_shown(url)} refused: {reason}")
        return ImageFetchError(f"fetching {_shown(url)} failed: {str(error)[:120]}")
    return error


def _read_s3(uri: str, config: ImageInputConfig) -> bytes:
    if not config.allow_s3:
        raise ImageSourceUnsupportedError(
            f"s3 images are disabled (encoder.images.allow_s3=false): {uri!r}"
        )
    try:
        import boto3
    except ImportError:
        raise ImageSourceUnsupportedError(
            f"s3:// images need boto3: install the s3 extra (pip install 'idproxy_stream[s3]') "
            f"to read {uri!r}"
        ) from None
    parsed = urlparse(uri)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not bucket or not key:
        raise ImageSourceUnsupportedError(f"s3 URI {uri!r} must look like s3://bucket/key")
    try:
        response = boto3.client("s3").get_object(Bucket=bucket, Key=key)
        if int(response.get("ContentLength", 0)) > config.max_bytes:
            raise ImageTooLargeError(
                f"image at {uri!r} has {response['ContentLength']} bytes, over "
                f"max_bytes={config.max_bytes}"
            )
        return _read_stream(response["Body"], config.max_bytes, f"image at {uri!r}")
    except ImageInputError:
        raise
    except Exception as error:  # botocore's errors are many and optional to import
        raise ImageFetchError(f"fetching {uri!r} failed: {error}") from None


def _read_data_uri(uri: str, config: ImageInputConfig) -> bytes:
    _require_inline(config)
    header, _, payload = uri.partition(",")
    if not header.lower().startswith("data:image/") or not header.lower().endswith(";base64"):
        raise ImageUndecodableError("data URIs must look like data:image/<type>;base64,<payload>")
    return _decode_base64(payload, config)


def _decode_base64(text: str, config: ImageInputConfig) -> bytes:
    compact = "".join(text.split())
    approximate_size = len(compact) * 3 // 4
    if approximate_size > config.max_bytes + 2:
        raise ImageTooLargeError(
            f"base64 image of about {approximate_size} bytes, over max_bytes={config.max_bytes}"
        )
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ImageUndecodableError(
            "image reference is neither a supported URI nor valid base64"
        ) from None
    return _check_size(data, config, "base64 image")
