"""The README says what the code does: its "Command line" block lists every argparse option of
every subcommand (and nothing else), its test command is what CI runs, and the front door works."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

from vtabkit import __version__, cli

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _block_after(heading: str) -> str:
    """The first fenced block after ``heading`` in the README."""
    rest = README[README.index(heading):]
    return re.search(r"```[a-z]*\n(.*?)```", rest, re.S).group(1)


def _readme_commands() -> dict[str, str]:
    """``{"run": "...text of its usage lines...", "": "top-level lines"}`` from the README block."""
    commands: dict[str, str] = {}
    current = None
    for line in _block_after("## Command line").splitlines():
        if line.startswith("vtabkit"):
            words = line.split()
            current = words[1] if len(words) > 1 and not words[1].startswith("-") else ""
            commands[current] = commands.get(current, "") + " " + line
        elif line.strip() and current is not None:  # a continuation line
            commands[current] += " " + line
    return commands


def _documented(text: str) -> tuple[set[str], dict[str, set[str]], set[str]]:
    """Options, option value choices (``--format md|csv|latex``) and positional choices of one command."""
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))
    # The word after an option (``md|csv|latex``, or a placeholder like ``DIR``); compared only
    # for options whose values argparse restricts.
    value_choices = {opt: set(values.split("|"))
                     for opt, values in re.findall(r"(--[a-z][a-z0-9-]*) ([^\s\[\]]+)", text)}
    positional = set()
    for group in re.findall(r"\{([\w,]+)\}", text):
        positional |= set(group.split(","))
    return options, value_choices, positional


def _actual(parser: argparse.ArgumentParser) -> tuple[set[str], dict[str, set[str]], set[str]]:
    options, value_choices, positional = set(), {}, set()
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        long_names = [name for name in action.option_strings if name.startswith("--")]
        if long_names:
            options.update(long_names)
            if action.choices:
                value_choices[long_names[0]] = {str(choice) for choice in action.choices}
        elif action.choices:
            positional |= {str(choice) for choice in action.choices}
    return options, value_choices, positional


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_readme_command_line_block_matches_argparse():
    parser = cli._parser()
    parsers = {"": parser, **_subparsers(parser)}
    readme = _readme_commands()
    problems = []
    for name, sub in parsers.items():
        where = f"`vtabkit{' ' + name if name else ''}`"
        if name not in readme:
            problems.append(f"{where} has no line in the README's 'Command line' block")
            continue
        doc_options, doc_values, doc_positional = _documented(readme[name])
        options, values, positional = _actual(sub)
        for option in sorted(options - doc_options):
            problems.append(f"{where}: the README's 'Command line' block lacks {option} (argparse has it)")
        for option in sorted(doc_options - options):
            problems.append(f"{where}: the README's 'Command line' block lists {option}, which argparse does not have")
        for option, choices in sorted(values.items()):
            if option in doc_options and doc_values.get(option) != choices:
                shown = "|".join(sorted(doc_values.get(option, ()))) or "no values"
                problems.append(f"{where}: the README shows {option} {shown} but argparse accepts "
                                f"{'|'.join(sorted(choices))}")
        if doc_positional != positional:
            problems.append(f"{where}: the README shows choices {{{','.join(sorted(doc_positional))}}} "
                            f"but argparse accepts {{{','.join(sorted(positional))}}}")
    for name in sorted(set(readme) - set(parsers)):
        problems.append(f"the README's 'Command line' block shows `vtabkit {name}`, which is no subcommand")
    assert not problems, "\n".join(problems)


def test_the_check_above_can_fail():
    # A README that forgot an option must be caught: drop --quiet from a copy of the run text.
    doc_options, _, _ = _documented(_readme_commands()["run"].replace("[--quiet]", ""))
    options, _, _ = _actual(_subparsers(cli._parser())["run"])
    assert options - doc_options == {"--quiet"}


def test_ci_runs_the_readme_test_command_verbatim():
    block = _block_after("Run the tests")
    command = block.strip()
    assert command.startswith("pip install") and "pytest" in command
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    parts = [part.strip() for part in command.split("&&")]
    # Each part of the README's command is a line of .ci/run, in order, the test part last.
    positions = [ci_lines.index(part) if part in ci_lines else -1 for part in parts]
    assert -1 not in positions and positions == sorted(positions) and ci_lines[-1] == parts[-1], \
        f".ci/run does not run the README's test command {command!r} (one part per line, in order)"
    # and the pytest configuration lets plain `pytest` import `tests.*` (the entry-point test does)
    assert 'pythonpath = ["."]' in (REPO / "pyproject.toml").read_text()


def _env() -> dict[str, str]:
    """This checkout first on the path of a child process (the venv may hold another install)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def test_version_and_top_level_help_with_an_example():
    version = subprocess.run([sys.executable, "-m", "vtabkit", "--version"], capture_output=True, text=True,
                             cwd=REPO, timeout=120, env=_env())
    assert version.returncode == 0 and version.stdout.strip() == f"vtabkit {__version__}"
    assert version.stderr == ""
    helped = subprocess.run([sys.executable, "-m", "vtabkit", "--help"], capture_output=True, text=True,
                            cwd=REPO, timeout=120, env=_env())
    assert helped.returncode == 0 and "example:" in helped.stdout
    assert "vtabkit run --model pixels --suite lite" in helped.stdout


def test_a_usage_mistake_is_one_line(capsys):
    try:
        cli.main(["run", "--suite", "lite"])
    except SystemExit as stop:
        assert stop.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--model" in err and "vtabkit run --help" in err


def test_readme_names_every_run_config_field():
    import dataclasses

    from vtabkit.runner import RunConfig

    section = README[README.index("## Your own model"):README.index("## Your own data directory")]
    missing = [f.name for f in dataclasses.fields(RunConfig) if f"`{f.name}`" not in section]
    assert not missing, f"README 'Your own model' does not describe RunConfig field(s) {', '.join(missing)}"
