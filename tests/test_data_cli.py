"""`vtabkit data status|prepare` and the fail-fast data check of `vtabkit run`."""

import textwrap

from vtabkit import cli, results


def _run(args, capsys):
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_status_of_lite_with_split_id_hashes(data_dir, capsys):
    assert cli.main(["data", "prepare", "--suite", "lite", "--data-dir", data_dir]) == 0
    code, out, _ = _run(["data", "status", "--suite", "lite", "--data-dir", data_dir, "--ids"], capsys)
    assert code == 0 and "4 of 4 task(s) have their data" in out
    digits_row = next(line for line in out.splitlines() if line.startswith("| lite_digits"))
    assert "train800=800 val200=200 train800val200=1000 test=797" in digits_row
    hashes = [cell.strip() for cell in digits_row.split("|")[-4:-1]]
    assert len(set(hashes)) == 3 and all(len(h) == 16 for h in hashes)


def test_status_of_vtab1k_without_data_gives_a_fix_per_task(tmp_path, capsys):
    code, out, _ = _run(["data", "status", "--suite", "vtab1k", "--data-dir", str(tmp_path)], capsys)
    assert code == 0 and "0 of 19 task(s) have their data; 19 missing" in out
    assert "vtabkit data prepare --tasks cifar100" in out and "manual download" in out


def test_prepare_lite_reports_a_summary(data_dir, capsys):
    code, out, _ = _run(["data", "prepare", "--suite", "lite", "--data-dir", data_dir], capsys)
    assert code == 0 and "summary: 3 of 3 dataset(s) ready" in out


def test_run_without_data_stops_before_loading_the_model(tmp_path, capsys):
    marker = tmp_path / "model_was_built"
    model_file = tmp_path / "m.py"
    model_file.write_text(textwrap.dedent(f"""
        import pathlib, vtabkit
        def factory():
            pathlib.Path({str(marker)!r}).write_text("built")
            return vtabkit.Model(apply=lambda p, x: x.mean(axis=(1, 2)), resolution=8)
    """))
    code, _, err = _run(["run", "--model", f"{model_file}:factory", "--suite", "vtab1k", "--data-dir",
                         str(tmp_path / "empty")], capsys)
    assert code == 2 and "data missing for 19 task(s)" in err and "--skip-missing" in err
    assert err.count("vtabkit data prepare --tasks") >= 15 and err.count("\n") == 1  # every fix, one line
    assert not marker.exists()


def test_skip_missing_runs_what_is_there(tmp_path, data_dir, capsys):
    (tmp_path / "mixed.yaml").write_text("suite: mixed\nregime: 1k\ntasks: [lite_digits, cifar100]\n")
    out = tmp_path / "run"
    args = ["run", "--model", "pixels", "--suite", "mixed", "--tasks-dir", str(tmp_path), "--out", str(out),
            "--data-dir", data_dir, "--quiet"]
    code, _, err = _run(args, capsys)
    assert code == 2 and "cifar100" in err
    code, stdout, _ = _run(args + ["--skip-missing"], capsys)
    assert code == 0 and "skipping cifar100" in stdout
    assert [r["task"] for r in results.read_records(out / "results.jsonl")] == ["lite_digits"]


def test_prepare_needs_a_suite_or_tasks(capsys):
    code, _, err = _run(["data", "prepare"], capsys)
    assert code == 2 and "--suite" in err
