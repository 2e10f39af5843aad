import subprocess
import sys

import pytest

from doctor.config import ConfigError, build
from monitor.cli import build_parser, load_config
from monitor.config import MonitorConfig, Target


def load(argv, tmp_path=None, ini=None):
    if ini is not None:
        path = tmp_path / "doctor.conf"
        path.write_text(ini)
        argv = ["--config-file", str(path), *argv]
    return load_config(build_parser().parse_args(argv))


def test_targets_from_file_section_and_flags_are_merged(tmp_path):
    config = load(["--target", "c3=198.18.0.12", "--interval-ms", "20"], tmp_path,
                  "[monitor]\ntargets = c1=198.18.0.10\ntimeout_ms = 30\n"
                  "[targets]\nCompute-2 = 198.18.0.11\n")
    assert config.targets == [Target("c1", "198.18.0.10"), Target("Compute-2", "198.18.0.11"),
                              Target("c3", "198.18.0.12")]
    assert (config.interval_ms, config.timeout_ms) == (20, 30)


@pytest.mark.parametrize("argv, message", [
    (["--target", "compute-1"], "targets: 'compute-1' is not hostname=address"),
    (["--target", "compute-1=198.18.0"], "'198.18.0' is not an IPv4 address"),
    (["--target", "a=198.18.0.1", "--interval-ms", "-5"], "interval_ms: must be >= 1, got -5"),
    (["--target", "a=198.18.0.1", "--timeout-ms", "soon"],
     "timeout_ms: expected a whole number, got 'soon'"),
    (["--target", "a=198.18.0.1", "--target", "a=198.18.0.2"], "host 'a' is listed twice"),
    (["--target", "a=198.18.0.1", "--inspector-url", "ftp://x"], "inspector_url: 'ftp://x'"),
    ([], "targets: no host to watch"),
])
def test_bad_flags_name_the_field(argv, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load(argv)


def test_unknown_option_in_file_names_it_and_the_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load([], tmp_path, "[monitor]\nintervall_ms = 5\n[targets]\na = 198.18.0.1\n")
    assert "[monitor] intervall_ms: unknown option" in str(info.value)
    assert "doctor.conf" in str(info.value)


def test_bad_value_in_file_names_section_field_and_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load([], tmp_path, "[monitor]\nmisses_before_down = 0\n[targets]\na = 198.18.0.1\n")
    assert str(info.value).startswith("[monitor] misses_before_down: must be >= 1, got 0")
    assert "doctor.conf" in str(info.value)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="No such file"):
        load(["--config-file", str(tmp_path / "nope.conf")])


def test_build_converts_types_and_lists():
    config = build(MonitorConfig, "monitor", {
        "targets": "a=198.18.0.1, b=198.18.0.2", "self_suspect_fraction": "0.25",
        "reference_hosts": "198.18.0.254"})
    assert [t.hostname for t in config.targets] == ["a", "b"]
    assert config.self_suspect_fraction == 0.25
    assert config.reference_hosts == ["198.18.0.254"]


def test_console_script_exits_2_with_the_field_on_stderr():
    result = subprocess.run([sys.executable, "-m", "monitor.cli", "--target", "x=1.2.3.4",
                             "--interval-ms", "-1"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "doctor-monitor: error: [monitor] interval_ms: must be >= 1" in result.stderr


def test_the_shipped_sample_config_loads():
    sample = __import__("pathlib").Path(__file__).parents[2] / "etc" / "doctor.conf.sample"
    config = load(["--config-file", str(sample), "--target", "c1=198.18.0.10"])
    assert config.interval_ms == 50 and config.targets == [Target("c1", "198.18.0.10")]


def test_doctor_hosts_help_is_its_own():
    result = subprocess.run([sys.executable, "-m", "client.main", "hosts", "--help"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: doctor hosts")
