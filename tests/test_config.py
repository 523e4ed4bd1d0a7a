from pathlib import Path

import pytest

from biblioedge.agent.config import AgentConfig, apply_tunables, load_config
from biblioedge.cli import main
from biblioedge.settings import ConfigError

BASE = 'role = "gate"\nsite = "tv-tinh"\ndevice_id = "gate-01"\ndata_dir = "/tmp/x"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_file_loads_with_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE), environ={})
    assert cfg.role == "gate" and cfg.broker.port == 1883 and cfg.sync.batch_max_events == 500


def test_unknown_key_is_rejected_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sync.batch_size"):
        load_config(write(tmp_path, BASE + "[sync]\nbatch_size = 3\n"), environ={})


def test_wrong_type_and_bad_values_are_named(tmp_path: Path) -> None:
    text = BASE.replace('"gate"', '"turnstile"') + '[broker]\nurl = "http://x"\n'
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), environ={})
    assert "role" in str(err.value) and "broker.url" in str(err.value)


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "role = = gate"), environ={})


def test_environment_and_secret_file_override(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    env = {
        "BIBLIOEDGE_AGENT_BROKER__URL": "mqtts://broker.lib.vn:8883",
        "BIBLIOEDGE_AGENT_BROKER__PASSWORD_FILE": str(secret),
        "BIBLIOEDGE_AGENT_SYNC__BATCH_MAX_EVENTS": "100",
        "BIBLIOEDGE_CENTRAL_ADMIN_TOKEN": "not ours",
    }
    cfg = load_config(write(tmp_path, BASE), environ=env)
    assert cfg.broker.tls and cfg.broker.port == 8883 and cfg.broker.host == "broker.lib.vn"
    assert cfg.broker.password is not None and cfg.broker.password.get_secret_value() == "s3cret"
    assert cfg.sync.batch_max_events == 100
    assert "s3cret" not in repr(cfg)


def test_missing_secret_file_is_a_clear_error(tmp_path: Path) -> None:
    env = {"BIBLIOEDGE_AGENT_BROKER__PASSWORD_FILE": str(tmp_path / "nope")}
    with pytest.raises(ConfigError, match="cannot read secret file"):
        load_config(write(tmp_path, BASE), environ=env)


def test_ids_must_be_slugs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="device_id"):
        load_config(write(tmp_path, BASE.replace("gate-01", "Gate 01/#")), environ={})


def test_tunables_apply_and_identity_is_not_tunable(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE), environ={})
    new = apply_tunables(cfg, {"sync": {"batch_max_events": 50}, "log": {"level": "DEBUG"}})
    assert new.sync.batch_max_events == 50 and new.log.level == "DEBUG"
    assert cfg.sync.batch_max_events == 500
    with pytest.raises(ConfigError, match="not tunable remotely: device_id"):
        apply_tunables(cfg, {"device_id": "evil"})
    with pytest.raises(ConfigError, match="batch_max_events"):
        apply_tunables(cfg, {"sync": {"batch_max_events": -1}})


def test_every_field_is_described() -> None:
    def walk(model: type) -> None:
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            assert field.description, f"{model.__name__}.{name} has no description"
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann)

    walk(AgentConfig)


def test_config_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, BASE)
    assert main(["config", "check", str(good)]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE + "colour = 1\n")
    assert main(["config", "check", str(bad)]) == 2
    assert "colour" in capsys.readouterr().err


def test_config_schema_command_lists_every_section(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"role", "site", "device_id", "broker", "sync", "outbox"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    assert main(["config", "schema", "--central"]) == 0
    assert "accept_unknown_devices" in json.loads(capsys.readouterr().out)["properties"]


def test_gate_relay_spec_is_checked(tmp_path: Path) -> None:
    ok = load_config(write(tmp_path, BASE + '[gate]\nrelay = "line:/dev/ttyUSB0"\n'), environ={})
    assert ok.gate.relay == "line:/dev/ttyUSB0"
    with pytest.raises(ConfigError, match="gate.relay"):
        load_config(write(tmp_path, BASE + '[gate]\nrelay = "gpio17"\n'), environ={})


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\xff\xfe\x00r\x00o\x00l\x00e", "not UTF-8"),  # a UTF-16 file
        (bytes(range(256)), "not UTF-8"),
        (b"role = 'gate'\x00\x01", "not valid TOML"),
    ],
)
def test_binary_or_foreign_config_files_exit_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, reason: str
) -> None:
    path = tmp_path / "agent.toml"
    path.write_bytes(content)
    for argv in (["config", "check", str(path)], ["agent", "--config", str(path)]):
        assert main(argv) == 2
        assert reason in capsys.readouterr().err


def test_a_data_dir_that_cannot_hold_data_is_refused_before_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for data_dir, reason in (
        ("/proc/self/biblioedge", "/proc"),
        ("/sys/kernel", "/sys"),
        (str(blocker / "data"), "not a writable directory"),
    ):
        path = write(tmp_path, BASE.replace('"/tmp/x"', f'"{data_dir}"'))
        assert main(["config", "check", str(path)]) == 2
        assert reason in capsys.readouterr().err
        assert main(["agent", "--config", str(path)]) == 2
        assert reason in capsys.readouterr().err


@pytest.mark.parametrize(
    ("section", "words"),
    [
        ('ils = "ftp://kiosk@10.0.0.5:6001"', "sip2:// or sip2s://"),
        ('ils = "sip2://kiosk@10.0.0.5:6001?colour=red"', "unknown library system URL options"),
        ("", "the library system's sip2:// URL is required"),
        (
            'ils = "sip2://kiosk@10.0.0.5:6001"\npassword_file = "/nonexistent/sip2.password"',
            "/nonexistent/sip2.password: cannot be read",
        ),
        ('ils = "sip2://kiosk@10.0.0.5:6001"\nrfid = "usb"', "rfid"),
        ('ils = "sip2://kiosk@10.0.0.5:6001"\nrfid = "none"', "the pad's reader"),
        ('ils = "sip2://k@h:1"\nrfid = "sim"\npepper_file = "/nonexistent"', "does not exist"),
    ],
)
def test_a_bad_self_check_config_is_a_clear_error_at_check_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, words: str
) -> None:
    if "rfid" not in section:
        section += '\nrfid = "sim"'
    doc = BASE.replace('role = "gate"', 'role = "selfcheck"') + (
        f"\n[selfcheck]\nenabled = true\n{section}\n"
    )
    path = tmp_path / "sc.toml"
    path.write_text(doc)
    assert main(["config", "check", str(path)]) == 2
    assert words in capsys.readouterr().err


def test_the_self_check_password_comes_from_its_file(tmp_path: Path) -> None:
    secret = tmp_path / "sip2.password"
    secret.write_text("s3cret\n")
    doc = BASE.replace('role = "gate"', 'role = "selfcheck"') + (
        f'\n[selfcheck]\nenabled = true\nils = "sip2://kiosk@10.0.0.5:6001"\n'
        f'password_file = "{secret}"\nrfid = "sim"\n'
    )
    cfg = load_config(write(tmp_path, doc))
    account = cfg.selfcheck.account()
    assert (account.user, account.password) == ("kiosk", "s3cret")
