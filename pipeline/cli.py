"""The `simclrv2` command.

    simclrv2 run [CONFIG] [--set KEY=VALUE ...] [--only STAGE ...] [--force STAGE ...]
    simclrv2 serve                        # serve one deployment per configs/*.yaml for `prefect deployment run`
    simclrv2 report RUN_DIR               # rebuild the label-budget report of a finished run
    simclrv2 predict MODEL_OR_RUN IMAGES  # pre-label any folder of images
    simclrv2 select RUN --budget N        # the N unlabeled images to label next
    simclrv2 export STAGE_DIR --format safetensors|torchvision|onnx

Without CONFIG, `run` runs configs/quickstart.yaml and ends by printing where the report is. A mistake (a bad config
or data source, a budget the labels cannot fill, a missing upstream for `--only`, a second run of a running
experiment; pipeline/preflight.py checks these before Prefect starts, the stages the rest) is one line on stderr and
exit status 2; a crash is one line and status 1. Both lines name the failed stage and the run's full log
(runs/<experiment>/logs/).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.config import DEFAULT_CONFIG, ConfigError, ExperimentConfig
from pipeline.deployment_inputs import load_cli_request
from pipeline.failures import MISTAKE_EXIT
from pipeline.manifest import read_manifest, write_manifest
from pipeline.plan import build_plan, downstream, select
from pipeline.run_log import log_path, run_log
from pipeline.run_outputs import (
    data_settings,
    default_classifier,
    find_report_dir,
    pretrain_dir,
    stage_config,
    teacher_dir,
)
from pipeline.store import ExperimentLocked, experiment_lock

CONFIG_DIR = DEFAULT_CONFIG.parent
USAGE_ERRORS = (ConfigError, ExperimentLocked, ValueError, FileNotFoundError, FileExistsError)
PREDICT_EXAMPLES = """examples:
  simclrv2 predict runs/quickstart ~/new-images                 # the run's model (distilled, last budget)
  simclrv2 predict runs/quickstart/distill-10pct/<fp> imagefolder:/data/batch2 --out batch2-prelabels
  simclrv2 predict runs/quickstart parquet:/data/shots/*.parquet --top-k 3

Writes OUT/prelabels.csv and OUT/prelabels.parquet: image, path, predicted, confidence, top1..topK with their
probabilities. Review the least confident rows first."""
SELECT_EXAMPLES = """examples:
  simclrv2 run my.yaml --only pretrain && simclrv2 select runs/my --budget 100   # cold start: no labels yet
  simclrv2 select runs/my --budget 50 --out round2                               # uses the run's fine-tuned teacher
  simclrv2 select runs/my --budget 50 --strategy k-center --no-teacher

Writes OUT/to_label.csv (image, label, path, rank, score, reason) and, for image files, OUT/label_studio_tasks.json.
Fill in the label column, append the rows to your labels file (data.labels), and run again: pretraining is reused."""


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
        "--verbose",
        action="store_true",
        help="show Prefect's tracebacks on the terminal too (they are always in runs/<experiment>/logs/)",
    )
    run.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another run of the same experiment to finish (default: stop at once)",
    )
    commands.add_parser("serve", help="serve the deployments (one per configs/*.yaml) until interrupted")
    add_predict_parser(commands)
    add_select_parser(commands)
    # Listed here for `simclrv2 --help`; `main` hands its command line to stages/export.py whole, --help included.
    commands.add_parser(
        "export", help="export a trained classifier (safetensors, torchvision, onnx); see `simclrv2 export --help`"
    )
    report = commands.add_parser("report", help="rebuild the label-budget report of a finished run, without training")
    report.add_argument("run_dir", type=Path, help="runs/<experiment> (its newest report) or a report stage directory")
    return parser


def check_run_request(args: argparse.Namespace) -> ExperimentConfig:
    """Everything that can be checked before Prefect starts, so that mistakes are one line, not a failed flow: the
    config, the stage names, the experiment lock, and the data, budgets, lists and batches (pipeline/preflight.py).
    Returns the validated config, for the flow to run without loading it again."""
    from pipeline.preflight import preflight  # imports the data path: only for `run`

    cfg = load_cli_request(args.config, args.overrides)
    plan = build_plan(cfg)
    targets = select(plan, args.only) if args.only else set(plan)
    forced = downstream(plan, select(plan, args.force)) & targets if args.force else set()
    with experiment_lock(cfg.runs_dir, cfg.experiment, timeout=args.wait):
        preflight(cfg, plan, targets, forced)
    return cfg


def run_command(args: argparse.Namespace) -> int:
    from pipeline.failures import PipelineFailed

    try:
        cfg = check_run_request(args)
    except USAGE_ERRORS as error:
        print(f"simclrv2 run: {error}", file=sys.stderr)
        return MISTAKE_EXIT
    except Exception as error:  # the machine's fault (a permission, a full disk, the network): its kind decides
        if args.verbose:
            raise
        failed = PipelineFailed("checking the run", error)
        print(f"simclrv2 run: {failed}", file=sys.stderr)
        return failed.exit_code
    # Prefect's temporary server can take longer than its default 20 s to start on a small, busy machine, and its
    # telemetry heartbeat races the first start's database migration ("database is locked" tracebacks). Both are
    # defaults only: the user's own settings win.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from pipeline.flow import simclrv2_pipeline  # Prefect is imported only when a flow really runs

    config = str(args.config) if args.config else None
    log_file = log_path(cfg.runs_dir, cfg.experiment)
    with run_log(log_file, args.verbose):
        try:
            report = simclrv2_pipeline(config, args.overrides, args.only or None, args.force or None, args.wait, cfg)
        except Exception as error:
            if args.verbose and not isinstance(error, PipelineFailed):
                raise
            failed = error if isinstance(error, PipelineFailed) else PipelineFailed("the flow", error)
            print(f"simclrv2 run: {failed}; full log: {log_file}", file=sys.stderr)
            return failed.exit_code
    if args.only and not Path(report).is_file():  # --only, without the report
        print(f"done: {', '.join(args.only)} (no report: run without --only to build it)")
        return 0
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
    experiment_dir = report_dir.resolve().parents[1]  # runs_dir/<experiment>/report/<fingerprint>
    try:
        with experiment_lock(experiment_dir.parent, experiment_dir.name):  # a run may be writing this report
            metrics = build_report(stage_dirs, report_dir, settings)
            fields = ("stage", "fingerprint", "config", "inputs", "wall_seconds", "devices", "code_version")
            write_manifest(report_dir, **{key: manifest[key] for key in fields}, metrics=metrics)  # new checksums
    except ExperimentLocked as error:
        print(f"simclrv2 report: {error}", file=sys.stderr)
        return 2
    print(f"report: {report_dir / 'report.html'}\n{metrics['headline']}")
    return 0


def add_predict_parser(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser(
        "predict",
        help="pre-label a folder (or any source) of images with a trained classifier",
        epilog=PREDICT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    predict.add_argument("model", type=Path, metavar="MODEL_OR_RUN", help="runs/<experiment>, or a classifier's dir")
    predict.add_argument("images", metavar="IMAGES", help="a folder of images, or a source (imagefolder:, parquet:...)")
    predict.add_argument("--out", type=Path, default=Path("prelabels"), help="output directory (default: prelabels)")
    predict.add_argument("--top-k", type=int, default=5, help="most likely classes listed per image (default: 5)")
    predict.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: 256)")
    predict.add_argument("--image-size", type=int, help="crop side; default: the model's training image_size")


def add_select_parser(commands: argparse._SubParsersAction) -> None:
    choose = commands.add_parser(
        "select",
        help="rank the unlabeled images of a run: the ones to label next",
        epilog=SELECT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    choose.add_argument("run_dir", type=Path, metavar="RUN", help="runs/<experiment> (or a pretrain stage directory)")
    choose.add_argument("--budget", type=int, required=True, help="how many images to pick")
    choose.add_argument("--out", type=Path, default=Path("to-label"), help="output directory (default: to-label)")
    choose.add_argument("--strategy", default="auto", help="auto | typical | k-center | uncertainty (default: auto)")
    choose.add_argument("--no-teacher", action="store_true", help="ignore the run's fine-tuned model")
    choose.add_argument("--seed", type=int, default=0, help="seed of the clustering (default: 0)")
    choose.add_argument("--label-studio-root", default="/", help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT")
    choose.add_argument("--labels", type=Path, help="the labels file as it is now (default: the run's data.labels)")


def as_source(images: str) -> str:
    """A folder becomes `imagefolder:<folder>`; anything else is a source already."""
    return f"imagefolder:{images}" if Path(images).is_dir() else images


def predict_command(args: argparse.Namespace) -> int:
    from stages.data.sources import DataConfig
    from stages.predict import PREDICT_FILES, PredictConfig, run

    try:
        classifier = default_classifier(args.model)
        made_with = stage_config(classifier)
        image_size = args.image_size or made_with.get("image_size")
        if image_size is None:
            raise ValueError(f"{classifier} has no manifest to read its image size from; pass --image-size")
        existing = [args.out / name for name in PREDICT_FILES if (args.out / name).exists()]
        if existing:
            raise FileExistsError(f"{existing[0]} exists and is kept; pass another --out directory")
        trained_on = made_with.get("data", {})  # its images' size and the pixel limit the run read them with
        data = DataConfig(**{key: trained_on[key] for key in ("image_size", "max_image_pixels") if key in trained_on})
        config = PredictConfig(
            data=data,
            images=as_source(args.images),
            image_size=image_size,
            top_k=args.top_k,
            eval_batch_size=args.batch_size,
        )
        metrics = run(config, {"classifier": classifier}, args.out)
    except USAGE_ERRORS as error:
        print(f"simclrv2 predict: {error}", file=sys.stderr)
        return 2
    print(
        f"pre-labeled {metrics['num_prelabeled']} images ({metrics['num_skipped']} unreadable, skipped) "
        f"with {classifier}"
    )
    print(f"pre-labels: {args.out / 'prelabels.csv'} (and .parquet)")
    return 0


def select_command(args: argparse.Namespace) -> int:
    from stages.data.sources import DataConfig
    from stages.select import SELECTION_CSV, SelectConfig, run

    try:
        pretrain = pretrain_dir(args.run_dir)
        made_with = stage_config(pretrain)
        if not made_with:
            raise ValueError(f"{pretrain} has no manifest to read its data config from; pass runs/<experiment>")
        data = data_settings(args.run_dir) | ({"labels": str(args.labels)} if args.labels else {})
        inputs = {"pretrain": pretrain}
        teacher = None if args.no_teacher else teacher_dir(args.run_dir)
        if teacher is not None:
            inputs["teacher"] = teacher
            inputs["subset"] = Path(read_manifest(teacher)["inputs"]["subset"]["path"])
        config = SelectConfig(
            data=DataConfig(**data),
            budget=args.budget,
            image_size=made_with["image_size"],
            strategy=args.strategy,
            seed=args.seed,
            label_studio_root=args.label_studio_root,
        )
        metrics = run(config, inputs, args.out)
    except USAGE_ERRORS as error:
        print(f"simclrv2 select: {error}", file=sys.stderr)
        return 2
    print(f"{metrics['num_selected']} images to label next ({metrics['strategy']}): {args.out / SELECTION_CSV}")
    return 0


def export_command(argv: list[str]) -> int:
    from stages.export import main as export_main

    export_main(argv, prog="simclrv2 export")
    return 0


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
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["export"]:  # its own parser, whose options argparse would not pass through a subcommand
        sys.exit(export_command(argv[1:]))
    args = build_parser().parse_args(argv)
    commands = {
        "run": run_command,
        "report": report_command,
        "serve": lambda _: serve_command(),
        "predict": predict_command,
        "select": select_command,
    }
    sys.exit(commands[args.command](args))


if __name__ == "__main__":
    main()
