"""The experiment config: one YAML file, validated by pydantic, that drives every stage of the pipeline.

- sections.py: the YAML sections; a stage's is generated from its config dataclass, so each field's default, bounds
  and help text live once, on the stage (stages/config_schema.py)
- experiment.py: the experiment, its label budgets, and each stage instance's config, built once when validated
- loading.py: the YAML file and `--set` overrides
- errors.py: every problem as one line naming its dotted key
"""

from pipeline.config.errors import ConfigError, format_error
from pipeline.config.experiment import FULL_LABELS, ExperimentConfig, stage_config
from pipeline.config.loading import DEFAULT_CONFIG, apply_override, load_config, parse_yaml, validate_config
from pipeline.config.sections import BUDGET_STAGES, STAGE_CLASSES, STAGES, LaunchConfig, ReportConfig

__all__ = [
    "BUDGET_STAGES",
    "DEFAULT_CONFIG",
    "FULL_LABELS",
    "STAGES",
    "STAGE_CLASSES",
    "ConfigError",
    "ExperimentConfig",
    "LaunchConfig",
    "ReportConfig",
    "apply_override",
    "format_error",
    "load_config",
    "parse_yaml",
    "stage_config",
    "validate_config",
]
