"""Offline and broken downloads fail fast with what to do, and preparation carries on.

The network is blocked inside the tests (name resolution and every socket connect fail), so
nothing here ever reaches a host; the dataset is the real TFDS `dtd` builder.
"""

from __future__ import annotations

import socket
import time

import pytest
import requests
import tensorflow_datasets as tfds

from vtabkit import cli, downloads, prepare, tasks


@pytest.fixture
def offline(monkeypatch):
    attempts = []

    def no_dns(host, *args, **kwargs):
        attempts.append(host)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    def no_connect(self, address):
        attempts.append(address)
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(socket.socket, "connect", no_connect)
    return attempts


DTD_URL = "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz"


def test_prepare_offline_says_so_in_seconds_and_carries_on(tmp_path, offline, capsys):
    data_dir = tmp_path / "tfds"
    started = time.perf_counter()
    code = cli.main(["data", "prepare", "--tasks", "dtd,lite_digits", "--data-dir", str(data_dir)])
    seconds = time.perf_counter() - started
    captured = capsys.readouterr()
    assert code == 2
    assert seconds < 90  # (mostly generating lite_digits on a loaded machine); TFDS retried for minutes
    assert offline and any(attempt == "www.robots.ox.ac.uk" for attempt in offline)  # it probed the host
    lines = captured.out.splitlines()
    dtd = next(line for line in lines if line.startswith("dtd:3.0.1: offline: "))
    assert "cannot reach www.robots.ox.ac.uk" in dtd
    assert "vtabkit data prepare --tasks dtd" in dtd and "copy the dtd folder" in dtd  # way 1
    assert DTD_URL in dtd and str(data_dir / "downloads" / "manual") in dtd           # way 2
    assert "vtabkit_digits:1.0.0: prepared" in lines  # the next dataset was still prepared
    assert (data_dir / "vtabkit_digits" / "1.0.0").is_dir() and not (data_dir / "dtd" / "3.0.1").exists()
    assert captured.err.count("\n") == 1 and "summary above" in captured.err


def test_the_probe_itself_returns_in_seconds(tmp_path, offline):
    builder = prepare.open_builder(tasks.get_task("dtd"), tmp_path)
    started = time.perf_counter()
    blocked = downloads.unreachable(builder, tmp_path / "manual", tmp_path / "downloads")
    assert time.perf_counter() - started < downloads.PROBE_TIMEOUT_S + 2
    assert blocked.hosts == ("www.robots.ox.ac.uk",) and blocked.urls == (DTD_URL,)


def test_files_in_the_manual_folder_need_no_network(tmp_path, offline):
    builder = prepare.open_builder(tasks.get_task("dtd"), tmp_path)
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "dtd-r1.0.1.tar.gz").write_bytes(b"")  # TFDS picks it up by name
    assert downloads.files_to_fetch(builder, tmp_path / "manual", tmp_path / "downloads") == []
    assert downloads.unreachable(builder, tmp_path / "manual", tmp_path / "downloads") is None
    assert offline == []  # no probe at all


def test_a_connection_error_during_the_download_is_reported_as_offline(tmp_path, monkeypatch):
    # The host answered the probe, then the download broke: still the offline advice, not a raw error.
    monkeypatch.setattr(downloads, "unreachable", lambda *args, **kwargs: None)

    def broken(self, *args, **kwargs):
        try:
            raise requests.exceptions.ConnectionError("Max retries exceeded with url: /dtd-r1.0.1.tar.gz")
        except requests.exceptions.ConnectionError as error:
            raise tfds.core.download.DownloadError("Failed to get url") from error

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", broken)
    status, detail = prepare._prepare_one(tasks.get_task("dtd"), tmp_path, lambda line: None)
    assert status == prepare.OFFLINE and "the download failed" in detail and DTD_URL in detail


def test_other_failures_stay_failures():
    assert not downloads.is_connection_error(OSError(28, "No space left on device"))
    assert downloads.is_connection_error(requests.exceptions.ConnectTimeout("timed out"))


def test_the_probe_goes_to_the_proxy_when_one_is_set(monkeypatch):
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert downloads._endpoint(DTD_URL) == ("proxy.example", 3128)
    monkeypatch.delenv("https_proxy")
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    assert downloads._endpoint(DTD_URL) == ("www.robots.ox.ac.uk", 443)
