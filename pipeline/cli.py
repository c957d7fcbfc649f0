"""The `simclrv2` command.

    simclrv2 run [CONFIG] [--set KEY=VALUE ...] [--only STAGE ...] [--force STAGE ...]
    simclrv2 serve          # serve one deployment per configs/*.yaml for `prefect deployment run`
    simclrv2 report RUN_DIR # rebuild the label-budget report of a finished run

Without CONFIG, `run` runs configs/quickstart.yaml and ends by printing where the report is. A bad config, a missing
upstream for `--only`, or a second run of a running experiment is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.config import DEFAULT_CONFIG, ConfigError, ExperimentConfig, load_config
from pipeline.manifest import MANIFEST, read_manifest, write_manifest
from pipeline.plan import REPORT, build_plan, select
from pipeline.store import ExperimentLocked, experiment_lock

CONFIG_DIR = DEFAULT_CONFIG.parent
USAGE_ERRORS = (ConfigError, ExperimentLocked, ValueError, FileNotFoundError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simclrv2", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the pipeline (default: the quickstart)")
    run.add_argument("config", nargs="?", type=Path, help=f"experiment YAML (default: {DEFAULT_CONFIG})")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set pretrain.epochs=20 (repeatable)",
    )
    run.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="STAGE",
        help="run only this stage (e.g. finetune or finetune[10pct]) from existing upstream outputs",
    )
    run.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="STAGE",
        help="rerun this stage and everything downstream of it, even if finished",
    )
    run.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another run of the same experiment to finish (default: stop at once)",
    )
    commands.add_parser("serve", help="serve the deployments (one per configs/*.yaml) until interrupted")
    report = commands.add_parser("report", help="rebuild the label-budget report of a finished run, without training")
    report.add_argument("run_dir", type=Path, help="runs/<experiment> (its newest report) or a report stage directory")
    return parser


def check_run_request(args: argparse.Namespace) -> ExperimentConfig:
    """Everything that can be checked before Prefect starts, so that mistakes are one line, not a failed flow.
    Returns the validated config, for the flow to run without loading it again."""
    cfg = load_config(args.config, args.overrides)
    plan = build_plan(cfg)
    select(plan, args.only)
    select(plan, args.force)
    with experiment_lock(cfg.runs_dir, cfg.experiment, timeout=args.wait):
        pass
    return cfg


def run_command(args: argparse.Namespace) -> int:
    try:
        cfg = check_run_request(args)
    except USAGE_ERRORS as error:
        print(f"simclrv2 run: {error}", file=sys.stderr)
        return 2
    # Prefect's temporary server can take longer than its default 20 s to start on a small, busy machine, and its
    # telemetry heartbeat races the first start's database migration ("database is locked" tracebacks). Both are
    # defaults only: the user's own settings win.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from pipeline.flow import simclrv2_pipeline  # Prefect is imported only when a flow really runs

    config = str(args.config) if args.config else None
    report = simclrv2_pipeline(config, args.overrides, args.only or None, args.force or None, args.wait, cfg)
    print(f"report: {report}")
    headline = read_headline(Path(report).parent)
    if headline:
        print(headline)
    return 0


def read_headline(report_dir: Path) -> str | None:
    try:
        return read_manifest(report_dir)["metrics"].get("headline")
    except (FileNotFoundError, ValueError):
        return None


def report_command(args: argparse.Namespace) -> int:
    """Rebuild the report from the stage manifests its own manifest lists, into the same directory."""
    try:
        report_dir = find_report_dir(args.run_dir)
        manifest = read_manifest(report_dir)
    except (FileNotFoundError, ValueError) as error:
        print(f"simclrv2 report: {error}", file=sys.stderr)
        return 2
    from reports import ReportSettings, build_report

    stage_dirs = {name: Path(entry["path"]) for name, entry in manifest["inputs"].items()}
    settings = ReportSettings.from_config(manifest["config"], manifest["config"].get("dataset", "not recorded"))
    metrics = build_report(stage_dirs, report_dir, settings)
    fields = ("stage", "fingerprint", "config", "inputs", "wall_seconds", "devices", "code_version")
    write_manifest(report_dir, **{key: manifest[key] for key in fields}, metrics=metrics)  # new checksums
    print(f"report: {report_dir / 'report.html'}\n{metrics['headline']}")
    return 0


def find_report_dir(run_dir: Path) -> Path:
    """`run_dir` itself when it is a report stage directory, else the newest finished report under it."""
    if (run_dir / MANIFEST).is_file():
        return run_dir
    finished = [p.parent for p in (run_dir / REPORT).glob(f"*/{MANIFEST}")]
    if not finished:
        raise FileNotFoundError(
            f"no finished report under {run_dir}: pass runs/<experiment> or a report directory of a finished run"
        )
    return max(finished, key=lambda p: (p / MANIFEST).stat().st_mtime)


def serve_command() -> int:
    from prefect import serve

    from pipeline.flow import simclrv2_pipeline

    deployments = [
        simclrv2_pipeline.to_deployment(
            name=path.stem,
            parameters={"config": str(path)},
            description=f"SimCLRv2 pipeline on {path.name}; rerun a stage with --param force=<stage>",
        )
        for path in sorted(CONFIG_DIR.glob("*.yaml"))
    ]
    serve(*deployments)
    return 0


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    commands = {"run": run_command, "report": report_command, "serve": lambda _: serve_command()}
    sys.exit(commands[args.command](args))


if __name__ == "__main__":
    main()
