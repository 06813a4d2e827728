"""`vtabkit cache ls|clear` on a real cache written by a run."""

import os
import time

import pytest

from vtabkit import cache_cli, cli
from vtabkit.errors import UserError


def test_cache_ls_and_clear(tmp_path, data_dir, capsys):
    cache = tmp_path / "cache"
    run = ["run", "--model", "pixels", "--model-arg", "resolution=8", "--suite", "lite", "--tasks",
           "lite_digits", "--out", str(tmp_path / "run"), "--data-dir", data_dir, "--cache-dir", str(cache), "--quiet"]
    assert cli.main(run) == 0
    capsys.readouterr()
    assert cli.main(["cache", "ls", "--cache-dir", str(cache)]) == 0
    listing = capsys.readouterr().out
    # train800, val200 and test: features and labels of each.
    assert "6 entries" in listing and "pixels" in listing
    assert sum(line.startswith("| features") for line in listing.splitlines()) == 3
    assert "train[:800]" in listing and "vtabkit_digits:1.0.0" in listing
    old = sorted(cache.glob("*features*.npz"))[0]
    ten_days_ago = time.time() - 10 * 86400
    os.utime(old, (ten_days_ago, ten_days_ago))
    assert cli.main(["cache", "clear", "--cache-dir", str(cache), "--model", "someone_else"]) == 0
    assert "removed 0 of 6" in capsys.readouterr().out
    assert cli.main(["cache", "clear", "--cache-dir", str(cache), "--older-than", "7d"]) == 0
    assert "removed 1 of 6" in capsys.readouterr().out and not old.exists()
    assert cli.main(["cache", "clear", "--cache-dir", str(cache), "--model", "pixels"]) == 0
    assert "removed 2 of 5" in capsys.readouterr().out
    assert cli.main(["cache", "clear", "--cache-dir", str(cache)]) == 0
    assert "removed 3 of 3" in capsys.readouterr().out
    assert cli.main(["cache", "ls", "--cache-dir", str(cache)]) == 0
    assert "is empty" in capsys.readouterr().out


def test_ages():
    assert cache_cli.parse_age("7d") == 7 * 86400 and cache_cli.parse_age("12h") == 12 * 3600
    assert cache_cli.parse_age("30m") == 1800 and cache_cli.parse_age("2") == 2 * 86400
    with pytest.raises(UserError, match="is not an age"):
        cache_cli.parse_age("yesterday")
