"""Whether a TFDS builder's downloads can happen here, found out in seconds.

TFDS retries an unreachable host for minutes and then raises a raw ``ConnectionError``. Before
`vtabkit data prepare` starts a download it asks: which files does the builder fetch (its
registered checksums), which of them are already local (in the manual folder, where TFDS picks
up a file of the same name, or in TFDS's download cache), and can the hosts of the others be
reached (a TCP connection with a short timeout, through the proxy when one is configured)?
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path

PROBE_TIMEOUT_S = 4.0


@dataclasses.dataclass(frozen=True)
class Unreachable:
    """The files that are not local, and why their hosts cannot be reached."""

    urls: tuple[str, ...]
    hosts: tuple[str, ...]
    reason: str


def _filename(url: str, info) -> str:
    return getattr(info, "filename", None) or Path(urllib.parse.urlparse(url).path).name


def _cached(url: str, info, download_dir: Path) -> bool:
    """Whether TFDS already downloaded ``url`` into its download cache (named by url and checksum)."""
    checksum = getattr(info, "checksum", None)
    if not checksum:
        return False
    try:
        from tensorflow_datasets.core.download import resource

        return (download_dir / resource.get_dl_fname(url, checksum)).exists()
    except Exception:  # a TFDS without this helper: assume not cached, the probe decides
        return False


def files_to_fetch(builder, manual_dir: Path, download_dir: Path) -> list[str]:
    """URLs the builder will download that are neither in ``manual_dir`` nor in TFDS's cache."""
    try:
        url_infos = builder.url_infos or {}
    except Exception:  # no checksums file: nothing known to probe
        return []
    return [url for url, info in url_infos.items()
            if not (manual_dir / _filename(url, info)).exists() and not _cached(url, info, download_dir)]


def _endpoint(url: str) -> tuple[str, int]:
    """The host and port a download of ``url`` connects to: the proxy's when one applies."""
    parsed = urllib.parse.urlparse(url)
    host = parsed.hostname or ""
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
        return proxied.hostname or "", proxied.port or 80
    return host, parsed.port or (443 if parsed.scheme == "https" else 80)


def _probe(host: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection to ``host:port`` opens within ``timeout``, else the reason."""
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)

    # A thread, because name resolution ignores the socket timeout on some systems.
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return outcome[0] if outcome else f"no answer within {timeout:.0f} s"


def unreachable(builder, manual_dir: Path, download_dir: Path,
                timeout: float = PROBE_TIMEOUT_S) -> Unreachable | None:
    """What cannot be downloaded here, or None when every file is local or its host answers."""
    urls = files_to_fetch(builder, manual_dir, download_dir)
    endpoints = {_endpoint(url): url for url in urls if urllib.parse.urlparse(url).scheme in ("http", "https")}
    down: dict[str, str] = {}
    for host, port in endpoints:
        reason = _probe(host, port, timeout)
        if reason is not None:
            down[host] = reason
    if not down:
        return None
    failed = tuple(url for url in urls if _endpoint(url)[0] in down)
    return Unreachable(urls=failed, hosts=tuple(down), reason=next(iter(down.values())))


def is_connection_error(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is a failed connection rather than, say, a full disk."""
    names = {"ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "MaxRetryError",
             "NewConnectionError", "NameResolutionError", "gaierror", "timeout", "TimeoutError",
             "ConnectionRefusedError", "ConnectionResetError"}
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, (ConnectionError, socket.gaierror, socket.timeout)) or type(error).__name__ in names:
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


def fetch_file(url: str, path: Path, timeout: float = 60.0) -> None:
    """Download ``url`` to ``path`` (written beside it first, then renamed: never half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as stream:
        while chunk := response.read(1 << 20):
            stream.write(chunk)
    partial.replace(path)
