"""What a caller may ask of a deployment (pipeline/deployment_inputs.py): config files only from allowed directories,
overrides that leave the launch command and the paths alone, a bounded wait; and `simclrv2 run --set`'s share."""

import math
import re
from pathlib import Path

import pytest
import yaml

import pipeline.deployment_inputs as inputs
from pipeline.config import DEFAULT_CONFIG, ConfigError, ExperimentConfig
from pipeline.deployment_inputs import (
    CHECKOUT,
    CONFIG_DIRS_ENV,
    LAUNCH_FROM_FILE,
    PATHS_FROM_FILE,
    ConfigRequest,
    RequestRefused,
    check_wait,
    confined_config,
    load_cli_request,
    load_deployment_request,
)

QUICKSTART = yaml.safe_load(DEFAULT_CONFIG.read_text())


@pytest.fixture(autouse=True)
def no_operator_dirs(monkeypatch):
    """Only configs/ is allowed unless a test lists more (the developer's shell may set the variable)."""
    monkeypatch.delenv(CONFIG_DIRS_ENV, raising=False)


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
    """A stand-in checkout with configs/quickstart.yaml, so that tests plant links in its configs/, not the real one's
    (which `simclrv2 serve` globs)."""
    root = tmp_path / "checkout"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "quickstart.yaml").write_text(DEFAULT_CONFIG.read_text())
    monkeypatch.setattr(inputs, "CHECKOUT", root)
    monkeypatch.setattr(inputs, "DEFAULT_CONFIG", root / "configs" / "quickstart.yaml")
    return root


def write_config(directory: Path, name: str = "ops.yaml", **changes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(yaml.safe_dump({**QUICKSTART, **changes}))
    return path


# --- confined_config ------------------------------------------------------------------------------------------------


def test_no_config_is_the_quickstart():
    assert confined_config(None) == DEFAULT_CONFIG


def test_relative_names_are_taken_from_the_checkout_whatever_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "quickstart.yaml").write_text("experiment: planted\n")
    assert confined_config("configs/quickstart.yaml") == DEFAULT_CONFIG.resolve()
    assert confined_config("configs/cifar10.yaml") == (CHECKOUT / "configs" / "cifar10.yaml").resolve()


def test_absolute_paths_inside_configs_are_allowed():
    assert confined_config(str(DEFAULT_CONFIG.resolve())) == DEFAULT_CONFIG.resolve()


@pytest.mark.parametrize(
    "config",
    [
        "/etc/passwd",
        "../../../../etc/passwd",
        "configs/../pyproject.toml",  # inside the checkout, outside configs/
        "pyproject.toml",
        "configs/../../outside.yaml",
        "/proc/self/environ",
    ],
)
def test_paths_outside_the_allowed_directories_are_refused(config):
    with pytest.raises(RequestRefused) as refused:
        confined_config(config)
    message = str(refused.value)
    assert message.startswith(f"config {config!r}: a deployment run reads its config only from ")
    assert str(DEFAULT_CONFIG.parent.resolve()) in message and CONFIG_DIRS_ENV in message
    assert "\n" not in message


def test_a_link_inside_configs_that_points_outside_is_refused(checkout, tmp_path):
    outside = write_config(tmp_path / "elsewhere")
    (checkout / "configs" / "link.yaml").symlink_to(outside)
    (checkout / "configs" / "passwd.yaml").symlink_to("/etc/passwd")
    for name in ("configs/link.yaml", str(checkout / "configs" / "passwd.yaml")):
        with pytest.raises(RequestRefused, match=re.escape(f"config {name!r}: a deployment run reads its config only")):
            confined_config(name)
    inside = checkout / "configs" / "same.yaml"
    inside.symlink_to(checkout / "configs" / "quickstart.yaml")  # a link that stays inside is fine
    assert confined_config("configs/same.yaml") == checkout / "configs" / "quickstart.yaml"


def test_a_linked_configs_directory_still_confines(checkout, tmp_path):
    """An escape through a linked directory on the way: resolved before it is compared."""
    (checkout / "configs" / "up").symlink_to(tmp_path, target_is_directory=True)
    write_config(tmp_path, "ops.yaml")
    with pytest.raises(RequestRefused):
        confined_config("configs/up/ops.yaml")


def test_the_operators_directories_are_allowed(tmp_path, monkeypatch):
    first, second = write_config(tmp_path / "ops"), write_config(tmp_path / "team", "team.yaml")
    beside = write_config(tmp_path / "ops-evil")  # shares the name's start, not the directory
    with pytest.raises(RequestRefused, match=CONFIG_DIRS_ENV):
        confined_config(str(first))
    monkeypatch.setenv(CONFIG_DIRS_ENV, f"{tmp_path / 'ops'}:{tmp_path / 'team'}/")
    assert confined_config(str(first)) == first.resolve()
    assert confined_config(str(second)) == second.resolve()
    assert confined_config("configs/quickstart.yaml") == DEFAULT_CONFIG.resolve()  # configs/ stays allowed
    for refused in (str(beside), str(tmp_path / "ops" / ".." / "ops-evil" / "ops.yaml")):
        with pytest.raises(RequestRefused):
            confined_config(refused)


def test_empty_entries_of_the_operators_list_allow_nothing_more(tmp_path, monkeypatch):
    """`SIMCLRV2_CONFIG_DIRS=":"` or a trailing ':' must not allow the working directory."""
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path)
    monkeypatch.setenv(CONFIG_DIRS_ENV, ": :")
    with pytest.raises(RequestRefused):
        confined_config(str(config))


def test_a_refused_file_is_never_read(tmp_path, monkeypatch):
    secret = tmp_path / "secret.yaml"
    secret.write_text("experiment: the-secret-is-42\n")
    with pytest.raises(RequestRefused) as refused:
        load_deployment_request(str(secret), [])
    assert "the-secret-is-42" not in str(refused.value)


def test_a_non_config_file_in_an_allowed_directory_is_named_by_its_type_only(tmp_path, monkeypatch):
    monkeypatch.setenv(CONFIG_DIRS_ENV, str(tmp_path))
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(ConfigError) as refused:
        load_deployment_request(str(tmp_path / "passwd"), [])
    assert "root:" not in str(refused.value) and "got a str" in str(refused.value)


# --- check_overrides: the protected keys ----------------------------------------------------------------------------

ATTACK = '["--no_python","sh","-c","id > /tmp/pwned-marker"]'


@pytest.mark.parametrize(
    ("override", "key"),
    [
        (f"launch.extra_args={ATTACK}", "launch.extra_args"),
        ("launch.main_process_ip=10.6.6.6", "launch.main_process_ip"),
        ("launch.rank_deployment=evil/ranks", "launch.rank_deployment"),
        ("runs_dir=/tmp/elsewhere", "runs_dir"),
        ("data.source=imagefolder:/root", "data.source"),
        ("data.labels=/etc/shadow", "data.labels"),
        ("data.unlabeled=imagefolder:/home", "data.unlabeled"),
        ("subsets={20: /etc/passwd}", "subsets"),
        ("subsets.20=/etc/passwd", "subsets"),
        # a whole section written over reaches the key all the same
        (f"launch={{num_processes: 2, extra_args: {ATTACK}}}", "launch.extra_args"),
        ("launch={main_process_ip: 10.6.6.6}", "launch.main_process_ip"),
        ("data={source: 'imagefolder:/root'}", "data.source"),
        ("data={source: digits, labels: /etc/shadow}", "data.labels"),
        # spelled loosely: what apply_override reads as the same key
        (f" launch.extra_args ={ATTACK}", "launch.extra_args"),
        ("runs_dir=runs/", "runs_dir"),  # another spelling of the same directory: compared as written
        ("launch.extra_args=[]", "launch.extra_args"),  # written where it was not
    ],
)
def test_a_deployment_run_may_not_change_a_protected_key(override, key):
    with pytest.raises(RequestRefused) as refused:
        load_deployment_request(None, [override])
    message = str(refused.value)
    assert message == (
        f"deployment run: overrides may not change {key}; set it in the config file ({DEFAULT_CONFIG}), which the "
        "machine's operator chose"
    )
    assert "pwned-marker" not in message


def test_every_protected_key_is_named_once_in_one_line():
    overrides = ["runs_dir=/x", "launch.extra_args=[a]", "data.source=imagefolder:/x", "launch.num_processes=2"]
    with pytest.raises(RequestRefused) as refused:
        load_deployment_request(None, overrides)
    assert "overrides may not change launch.extra_args, runs_dir, data.source; set them in the config" in str(
        refused.value
    )


def test_a_protected_key_changed_and_changed_back_passes():
    """What counts is the result: the value the run would use."""
    cfg = load_deployment_request(None, ["runs_dir=/tmp/elsewhere", "runs_dir=runs"])
    assert cfg.runs_dir == Path("runs")


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["pretrain.epochs=1", "budgets=[20]", "launch.num_processes=2", "launch.use_cpu=true"],
        ["launch.main_process_port=29777", "launch.stage_timeout=60", "model.width=0.125"],
        ["runs_dir=runs", "data.source=digits"],  # unchanged values
        ["launch={num_processes: 2}"],  # a section rewritten without a protected key
        ["data={source: digits, image_size: 8}"],
    ],
)
def test_training_settings_budgets_and_processes_may_change(overrides):
    assert isinstance(load_deployment_request(None, overrides), ExperimentConfig)


def test_the_operators_config_file_may_set_every_protected_key(tmp_path, monkeypatch):
    monkeypatch.setenv(CONFIG_DIRS_ENV, str(tmp_path))
    launch = {"num_processes": 1, "extra_args": ["--mixed_precision", "no"], "main_process_ip": "10.0.0.7"}
    config = write_config(tmp_path, runs_dir=str(tmp_path / "runs"), launch=launch)
    cfg = load_deployment_request(str(config), ["pretrain.epochs=1"])
    assert cfg.launch.extra_args == ["--mixed_precision", "no"] and cfg.runs_dir == tmp_path / "runs"
    with pytest.raises(
        RequestRefused, match=re.escape(f"change launch.extra_args; set it in the config file ({config})")
    ):
        load_deployment_request(str(config), ["launch.extra_args=[]"])


def test_bad_overrides_are_still_one_config_error():
    with pytest.raises(ConfigError, match=r"pretrain\.epochs") as error:
        load_deployment_request(None, ["pretrain.epochs=-1"])
    assert not isinstance(error.value, RequestRefused)
    with pytest.raises(ConfigError):  # a section replaced by a scalar: invalid, not a way around the check
        load_deployment_request(None, ["launch=5"])


def test_the_protected_keys_are_the_documented_ones():
    assert LAUNCH_FROM_FILE == ("launch.extra_args", "launch.main_process_ip", "launch.rank_deployment")
    assert PATHS_FROM_FILE == ("runs_dir", "data.source", "data.labels", "data.unlabeled", "subsets")


# --- simclrv2 run --set ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", LAUNCH_FROM_FILE)
def test_the_command_line_may_not_set_the_launch_keys_either(key):
    value = {"launch.extra_args": "[--no_python, sh]", "launch.main_process_ip": "10.0.0.7"}.get(key, "a/b")
    with pytest.raises(RequestRefused, match=re.escape(f"--set: overrides may not change {key}; set it in the config")):
        load_cli_request(None, [f"{key}={value}"])


def test_the_command_line_may_set_paths_and_read_any_file(tmp_path):
    config = write_config(tmp_path)  # outside configs/: the user's own machine, the user's own files
    cfg = load_cli_request(config, [f"runs_dir={tmp_path / 'runs'}", "data.source=digits", "subsets={}"])
    assert cfg.runs_dir == tmp_path / "runs"
    assert load_cli_request(None, []).experiment == "quickstart"


# --- check_wait -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [0, 0.0, 30.5, 86400])
def test_a_wait_of_up_to_a_day_is_allowed(seconds):
    assert check_wait(seconds) == seconds


@pytest.mark.parametrize("seconds", [-1, -0.001, 86400.5, 1e12, math.inf, math.nan])
def test_a_negative_or_endless_wait_is_refused(seconds):
    with pytest.raises(RequestRefused, match=r"^wait_for_lock: .* s is out of range; it must be >= 0 and <= 86400$"):
        check_wait(seconds)


# --- ConfigRequest --------------------------------------------------------------------------------------------------


def test_other_machines_get_the_config_relative_to_the_checkout_when_it_lies_inside(tmp_path):
    assert ConfigRequest().for_other_machines() is None
    assert ConfigRequest.of(None, None) == ConfigRequest(None, ())
    assert ConfigRequest.of(DEFAULT_CONFIG, ["a=1"]) == ConfigRequest(str(DEFAULT_CONFIG), ("a=1",))
    inside = ConfigRequest(str(CHECKOUT.resolve() / "configs" / "cifar10.yaml"))
    assert inside.for_other_machines() == "configs/cifar10.yaml"  # the checkouts may sit at different places
    outside = ConfigRequest(str(tmp_path / "ops" / ".." / "ops.yaml"))
    assert outside.for_other_machines() == str(tmp_path / "ops.yaml")


def test_what_other_machines_get_is_what_they_accept(tmp_path, monkeypatch):
    """Round trip: the name rank 0 sends is one that `confined_config` on another machine reads as the same file."""
    monkeypatch.setenv(CONFIG_DIRS_ENV, str(tmp_path))
    config = write_config(tmp_path)
    for request in (ConfigRequest(str(DEFAULT_CONFIG)), ConfigRequest(str(config))):
        assert confined_config(request.for_other_machines()) == Path(request.config).resolve()


def test_a_relative_config_is_passed_on_as_the_file_that_was_read(tmp_path, monkeypatch):
    """A deployment run reads `configs/x.yaml` from the checkout, whatever its worker's directory; `simclrv2 run`
    from the current directory. Either way the other machines get that same file."""
    monkeypatch.chdir(tmp_path)
    deployed = ConfigRequest.of("configs/quickstart.yaml", [], deployment=True)
    assert deployed.for_other_machines() == "configs/quickstart.yaml"
    assert confined_config(deployed.for_other_machines()) == DEFAULT_CONFIG.resolve()
    (tmp_path / "mine.yaml").write_text(DEFAULT_CONFIG.read_text())
    assert ConfigRequest.of("mine.yaml", []).for_other_machines() == str(tmp_path.resolve() / "mine.yaml")
