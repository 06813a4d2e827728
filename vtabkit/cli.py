"""The ``vtabkit`` command line: run, list, report, compare, data, cache, submit, validate, leaderboard."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vtabkit import quiet
from vtabkit.errors import UserError

RUN_EXAMPLE = """example:
  vtabkit run --model pixels --suite lite --out runs/lite
  vtabkit run --model vit_tiny --suite lite --protocol finetune --set finetune.sweep=quick
  vtabkit run --model path/to/my_model.py:factory --suite vtab1k --tasks cifar100,dtd --data-dir ~/tfds
  vtabkit run --model augreg_vit_b16 --model-arg checkpoint=/path/to/B_16.npz --suite vtab1k
  vtabkit run --model pixels --suite lite --coordinator node0:1234 --num-processes 2 --process-id 0
"""
LIST_EXAMPLE = "example:\n  vtabkit list tasks\n  vtabkit list models\n"
REPORT_EXAMPLE = ("example:\n  vtabkit report runs/lite --format md\n  vtabkit report runs/shard0 runs/shard1 --format csv\n"
                  "  vtabkit report runs/lite --verify\n  vtabkit report runs/b16 runs/s16 --format latex --ci --plots figs\n"
                  "  vtabkit report runs/b16 --reference vit_b16_in21k\n")
COMPARE_EXAMPLE = ("example:\n  vtabkit compare runs/b16 runs/s16\n"
                   "  vtabkit compare runs/b16 runs/s16 --format latex --resamples 2000 --seed 1\n")
CACHE_EXAMPLE = "example:\n  vtabkit cache ls\n  vtabkit cache clear --model pixels --older-than 7d\n"
SUBMIT_EXAMPLE = ("example:\n  vtabkit submit runs/b16 --out b16-vtab1k.tar.gz --name \"ViT-B/16 AugReg\" --license apache-2.0\n"
                  "  vtabkit submit runs/lite --out bundles/pixels-lite --suite lite\n")
VALIDATE_EXAMPLE = "example:\n  vtabkit validate b16-vtab1k.tar.gz --data-dir ~/tfds\n  vtabkit validate results/submissions/pixels-lite-linear\n"
LEADERBOARD_EXAMPLE = "example:\n  vtabkit leaderboard results/submissions --out site && xdg-open site/index.html\n"
DATA_EXAMPLE = "example:\n  vtabkit data status --suite vtab1k --data-dir ~/tfds\n  vtabkit data prepare --suite vtab1k\n"
TOP_EXAMPLE = """example:
  vtabkit run --model pixels --suite lite --out runs/lite && vtabkit report runs/lite
  vtabkit data status --suite vtab1k --data-dir ~/tfds
  vtabkit list tasks

`vtabkit COMMAND --help` describes each command, with examples.
"""


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line, like every other user error (argparse prints the usage too)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def _shard(text: str) -> tuple[int, int]:
    index, slash, count = text.partition("/")
    if not (slash and index.isdigit() and count.isdigit() and int(count) > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N (e.g. 0/4)")
    return int(index), int(count)


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _parser() -> argparse.ArgumentParser:
    from vtabkit import __version__

    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog="vtabkit", description="VTAB-style representation evaluation.",
                     epilog=TOP_EXAMPLE, formatter_class=formatter)
    parser.add_argument("--version", action="version", version=f"vtabkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{run,list,report,compare,data,cache,submit,validate,leaderboard}")

    run = sub.add_parser("run", help="evaluate a model on a suite", epilog=RUN_EXAMPLE, formatter_class=formatter)
    run.add_argument("--model", required=True, help="registered name, or path/to/file.py:factory")
    run.add_argument("--model-arg", action="append", dest="model_args", default=[], metavar="KEY=VALUE",
                     help="argument for the model factory, e.g. --model-arg checkpoint=/path/to/vit.npz")
    run.add_argument("--suite", help="suite name (see `vtabkit list suites`)")
    run.add_argument("--tasks", type=_comma_list, help="comma-separated task ids (a subset of the suite)")
    run.add_argument("--protocol", type=_comma_list, dest="protocols",
                     help="comma-separated protocols (default: the suite's); see `vtabkit list protocols`")
    run.add_argument("--out", type=Path, default=Path("runs/latest"), help="run directory (results.jsonl)")
    run.add_argument("--data-dir", help="TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    run.add_argument("--cache-dir", type=Path, help="feature cache (default: ~/.cache/vtabkit/features)")
    run.add_argument("--no-cache", action="store_true", help="do not read or write cached features")
    run.add_argument("--tasks-dir", action="append", dest="tasks_dirs", help="extra folder of task YAML")
    run.add_argument("--regime", help="data regime, or several comma-separated (each its own cells): "
                     "1k, full, first:N (first N train examples), per_class:K (K per class, seeded); "
                     "default: the suite's")
    run.add_argument("--batch-size", type=int, default=256, help="images per model call")
    run.add_argument("--skip-missing", action="store_true", help="run the tasks whose data is present")
    run.add_argument("--strict", action="store_true",
                     help="stop when an eval set's dataset is missing (default: skip that eval set with one line)")
    run.add_argument("--set", action="append", dest="overrides", default=[], metavar="PROTOCOL.KEY=VALUE",
                     help="override a protocol setting, e.g. --set finetune.sweep=quick (YAML value)")
    run.add_argument("--shard", type=_shard, default=(0, 1), metavar="I/N",
                     help="run only shard I of N (every N-th task); give each shard its own --out "
                          "and report them together with `vtabkit report DIR1 DIR2 ...`")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--coordinator", metavar="HOST:PORT",
                     help="multi-process run: process 0's host and a free port (JAX's distributed runtime)")
    run.add_argument("--num-processes", type=int, metavar="N", help="multi-process run: processes in all")
    run.add_argument("--process-id", type=int, metavar="I", help="multi-process run: this process, 0..N-1")
    run.add_argument("--distributed", choices=["auto", "on", "off"], default="auto",
                     help="auto: multi-process with the three flags above or inside a SLURM step / Open MPI "
                          "launch of several tasks; on: let JAX detect the cluster (e.g. Cloud TPU); off: one process")
    run.add_argument("--distributed-timeout", type=int, default=300, metavar="SECONDS",
                     help="how long a process waits for all others to join the coordinator (default 300)")

    lister = sub.add_parser("list", help="list tasks, suites, models or protocols", epilog=LIST_EXAMPLE,
                            formatter_class=formatter)
    lister.add_argument("what", choices=["tasks", "suites", "models", "protocols"])
    lister.add_argument("--tasks-dir", action="append", dest="tasks_dirs", help="extra folder of task YAML")

    report = sub.add_parser("report", help="tables of a run directory", epilog=REPORT_EXAMPLE,
                            formatter_class=formatter)
    report.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR",
                        help="one or more run directories (e.g. the shards of one sweep)")
    report.add_argument("--format", default="md", choices=["md", "csv", "latex", "long"],
                        help="long: tidy csv, one row per record and metric")
    report.add_argument("--ci", action="store_true", help="95%% interval per task cell (Wilson for accuracy, "
                        "else bootstrap over test examples)")
    report.add_argument("--reference", metavar="NAME", help="published numbers beside yours (see results/reference)")
    report.add_argument("--plots", type=Path, metavar="DIR", help="also write figures (PNG and PDF) into DIR")
    report.add_argument("--verify", action="store_true",
                        help="recompute every record's metrics from its per-example predictions and "
                             "exit non-zero on any difference")

    comparer = sub.add_parser("compare", help="paired differences of two runs, with confidence intervals",
                              epilog=COMPARE_EXAMPLE, formatter_class=formatter)
    comparer.add_argument("run_a", type=Path, metavar="RUN_A", help="run directory A (differences are A - B)")
    comparer.add_argument("run_b", type=Path, metavar="RUN_B", help="run directory B")
    comparer.add_argument("--format", default="md", choices=["md", "csv", "latex"])
    comparer.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    comparer.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")

    data_cmd = sub.add_parser("data", help="dataset status and preparation", epilog=DATA_EXAMPLE,
                              formatter_class=formatter)
    data_cmd.add_argument("action", choices=["status", "prepare"])
    data_cmd.add_argument("--suite", help="suite whose datasets to check")
    data_cmd.add_argument("--tasks", type=_comma_list, help="comma-separated task ids")
    data_cmd.add_argument("--data-dir", help="TFDS data dir")
    data_cmd.add_argument("--ids", action="store_true", help="also print split id hashes (status)")
    data_cmd.add_argument("--siscore-metadata", metavar="DIR",
                          help="(prepare) copy SI-Score's metadata.csv files from DIR/<variant>/metadata.csv "
                               "instead of fetching them")
    data_cmd.add_argument("--tasks-dir", action="append", dest="tasks_dirs", help="extra folder of task YAML")
    cache = sub.add_parser("cache", help="list or clear the feature cache", epilog=CACHE_EXAMPLE,
                           formatter_class=formatter)
    cache.add_argument("action", choices=["ls", "clear"])
    cache.add_argument("--cache-dir", type=Path, help="feature cache (default: ~/.cache/vtabkit/features)")
    cache.add_argument("--model", help="clear: only this model's features (its name as in records)")
    cache.add_argument("--older-than", metavar="AGE", help="clear: only entries older than AGE (7d, 12h, 30m)")

    submit = sub.add_parser("submit", help="write a submission bundle of a run", epilog=SUBMIT_EXAMPLE,
                            formatter_class=formatter)
    submit.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="run directory (or its shards)")
    submit.add_argument("--out", type=Path, required=True, help="bundle: a new folder, or a file ending in .tar.gz")
    submit.add_argument("--protocol", help="the protocol to submit (needed when the run holds several)")
    submit.add_argument("--suite", help="the suite the run covers (default: the one suite its tasks make up)")
    for flag, what in (("--name", "model name to show (default: the run's)"),
                       ("--parameters", "parameter count"), ("--pretraining-data", "pre-training data"),
                       ("--license", "licence of the weights"), ("--url", "where the model is described"),
                       ("--description", "free text")):
        submit.add_argument(flag, help=f"model.yaml: {what}; default: the model's metadata")
    validate = sub.add_parser("validate", help="check a submission bundle", epilog=VALIDATE_EXAMPLE,
                              formatter_class=formatter)
    validate.add_argument("bundle", type=Path, metavar="BUNDLE", help="bundle folder or .tar.gz")
    validate.add_argument("--data-dir", help="TFDS data dir, for example-id hashes vtabkit does not pin")
    board = sub.add_parser("leaderboard", help="static leaderboard page of bundles", epilog=LEADERBOARD_EXAMPLE,
                           formatter_class=formatter)
    board.add_argument("bundles", type=Path, nargs="+", metavar="BUNDLE_OR_DIR",
                       help="bundles (folders or .tar.gz) or folders of bundles")
    board.add_argument("--out", type=Path, required=True, help="site folder (index.html is written there)")
    board.add_argument("--data-dir", help="TFDS data dir, for example-id hashes vtabkit does not pin")
    return parser


def _list(args: argparse.Namespace) -> None:
    from vtabkit import tasks

    if args.what == "tasks":
        registry = tasks.registry(args.tasks_dirs)
        if registry.tasks and (args.tasks_dirs or os.environ.get("VTABKIT_TASKS_DIR")):
            from vtabkit.task_checks import check_user_tasks

            check_user_tasks(registry.tasks.values())  # checks needing TFDS, for the user's own folders
        print(f"{'task':22s} {'family':15s} {'classes':>7s}  dataset")
        for task in sorted(registry.tasks.values(), key=lambda t: (t.family, t.id)):
            print(f"{task.id:22s} {task.family:15s} {task.num_classes:7d}  {task.tfds_name}")
    elif args.what == "suites":
        for suite in tasks.registry(args.tasks_dirs).suites.values():
            print(f"{suite.name:12s} {len(suite.tasks):3d} tasks  regime {suite.regime:5s} {suite.description}")
    elif args.what == "models":
        from vtabkit.models.registry import list_models, model_factory

        for name in list_models():
            doc = (model_factory(name).__doc__ or "").strip().splitlines()
            print(f"{name:24s} {doc[0] if doc else ''}")
    else:
        from vtabkit import protocols

        for name in protocols.PROTOCOLS:
            print(f"{name:10s} {protocols.get_protocol(name).DESCRIPTION}")


def _number_if_numeric(value: object) -> object:
    """YAML 1.1 reads ``1e-3`` as a string; a user typing it means the number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_overrides(items: list[str]) -> dict[str, dict[str, object]]:
    """``["finetune.sweep=quick", "fewshot.shots=[10]"]`` → ``{"finetune": {"sweep": "quick"}, ...}``."""
    import yaml

    overrides: dict[str, dict[str, object]] = {}
    for item in items:
        target, equals, text = item.partition("=")
        protocol, dot, key = target.partition(".")
        if not (equals and dot and protocol and key):
            raise UserError(f"--set {item!r} must look like PROTOCOL.KEY=VALUE, e.g. finetune.sweep=quick")
        try:
            overrides.setdefault(protocol, {})[key] = _number_if_numeric(yaml.safe_load(text))
        except yaml.YAMLError:
            raise UserError(f"--set {item!r}: the value is not valid YAML") from None
    return overrides


def parse_model_args(items: list[str]) -> dict[str, object]:
    """``["checkpoint=/x.npz", "seed=1"]`` → ``{"checkpoint": "/x.npz", "seed": 1}`` (YAML values)."""
    import yaml

    parsed: dict[str, object] = {}
    for item in items:
        key, equals, text = item.partition("=")
        if not (equals and key):
            raise UserError(f"--model-arg {item!r} must look like KEY=VALUE, e.g. checkpoint=/path/to/vit.npz")
        try:
            parsed[key] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise UserError(f"--model-arg {item!r}: the value is not valid YAML") from None
    return parsed


def _run(args: argparse.Namespace) -> None:
    from vtabkit import distributed
    from vtabkit.runner import RunConfig, run

    config = RunConfig(model=args.model, suite=args.suite, tasks=args.tasks, protocols=args.protocols,
                       out=args.out, data_dir=args.data_dir, cache_dir=args.cache_dir,
                       use_cache=not args.no_cache, tasks_dirs=args.tasks_dirs, regime=args.regime,
                       batch_size=args.batch_size, skip_missing=args.skip_missing, strict=args.strict, progress=not args.quiet,
                       protocol_config=parse_overrides(args.overrides),
                       model_args=parse_model_args(args.model_args), shard=args.shard,
                       command=["vtabkit", *sys.argv[1:]] if args.argv is None else ["vtabkit", *args.argv])
    if args.batch_size < 1:
        raise UserError("--batch-size must be a positive number of images")
    if distributed.initialize(coordinator=args.coordinator, num_processes=args.num_processes,
                              process_id=args.process_id, mode=args.distributed, timeout_s=args.distributed_timeout):
        config.progress = config.progress and distributed.is_main()
    written = run(config)
    if distributed.is_main():  # the other processes of a multi-process run write nothing
        print(f"{len(written)} new result(s) in {args.out / 'results.jsonl'}; see `vtabkit report {args.out}`")


def _report(args: argparse.Namespace) -> None:
    from vtabkit.report import render, verify

    if args.verify:
        checked, problems = verify(args.run_dirs)
        if problems:
            raise UserError(f"{len(problems)} of the recorded scores do not match their predictions; "
                            f"first: {problems[0]}")
        print(f"verified {checked} record(s): every metric recomputed from its predictions matches")
        return
    print(render(args.run_dirs, args.format, ci=args.ci, reference=args.reference, plots=args.plots))


def _compare(args: argparse.Namespace) -> None:
    from vtabkit.compare import render

    print(render(args.run_a, args.run_b, args.format, n_resamples=args.resamples, seed=args.seed))


def _cache(args: argparse.Namespace) -> None:
    from vtabkit import cache_cli

    cache_cli.main(args)


def _submit(args: argparse.Namespace) -> None:
    from vtabkit import bundle

    facts = {"name": args.name, "parameters": args.parameters, "pretraining_data": args.pretraining_data,
             "license": args.license, "url": args.url, "description": args.description}
    summary = bundle.submit(args.run_dirs, args.out, protocol=args.protocol, suite=args.suite, model=facts)
    print(f"wrote {args.out}: {bundle.bundle_text(summary)}; check it with `vtabkit validate {args.out}`")


def _validate(args: argparse.Namespace) -> None:
    from vtabkit import bundle, validate

    print(f"valid: {bundle.bundle_text(validate.validate(args.bundle, args.data_dir))}")


def _leaderboard(args: argparse.Namespace) -> None:
    from vtabkit import leaderboard

    data = leaderboard.build(args.bundles, args.out, data_dir=args.data_dir)
    print(f"wrote {args.out / 'index.html'}: {len(data['rows'])} row(s) in {len(data['suites'])} suite table(s)")


def _data(args: argparse.Namespace) -> None:
    from vtabkit import data_cli

    data_cli.main(args)


def main(argv: list[str] | None = None) -> int:
    quiet.quiet_command_line()  # before anything can import TensorFlow
    args = _parser().parse_args(argv)
    args.argv = argv
    handlers = {"run": _run, "list": _list, "report": _report, "compare": _compare, "data": _data, "cache": _cache,
                "submit": _submit, "validate": _validate, "leaderboard": _leaderboard}
    try:
        if args.command in ("run", "data") or getattr(args, "tasks_dirs", None) or os.environ.get("VTABKIT_TASKS_DIR"):
            quiet.import_tensorflow_quietly()  # these load TensorFlow; its start-up lines are noise
        handlers[args.command](args)
    except UserError as error:
        print(f"vtabkit: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vtabkit: interrupted; finished cells are saved, re-run the command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
