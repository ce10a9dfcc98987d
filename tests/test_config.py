"""Settings: environment and .env, validation messages that name the variable, and a token kept secret."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from imaginebot.config import EMBEDDED_MODEL, Settings, describe_settings, load_settings
from imaginebot.engine.planning import Planner
from imaginebot.errors import ConfigError
from imaginebot.params import RequestDefaults

TOKEN = "MTAxMjM0NTY3ODkw.secret-token-value"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Settings read .env from the working directory: run each test in an empty one.
    monkeypatch.chdir(tmp_path)
    for name in describe_settings():
        monkeypatch.delenv(name[0], raising=False)


def model_defaults(settings: Settings) -> RequestDefaults:
    """The embedded model's defaults under these settings."""
    return settings.catalog({EMBEDDED_MODEL.name: Planner.from_folder(EMBEDDED_MODEL)}).default.defaults


def test_defaults() -> None:
    settings = load_settings()
    assert settings.discord_token is None
    assert settings.model_path == str(EMBEDDED_MODEL)
    assert settings.device == "auto" and settings.dtype == "auto"
    # the embedded model's own defaults, since nothing else was configured
    defaults = model_defaults(settings)
    assert (defaults.steps, defaults.cfg) == (20, 5.0)
    assert settings.preview_every == 5
    assert settings.mock_host == "127.0.0.1"
    assert settings.quota_per_day == 100


def test_unlimited_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGINEBOT_QUOTA_PER_DAY", "Unlimited")
    assert load_settings().quota_per_day is None


def test_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "IMAGINEBOT_DEFAULT_STEPS=22\nIMAGINEBOT_DEFAULT_ASPECT=6:4\nIMAGINEBOT_MODEL=/models/sd15\n"
    )
    monkeypatch.setenv("IMAGINEBOT_DEFAULT_STEPS", "40")  # the environment wins over .env
    monkeypatch.setenv("IMAGINEBOT_DEVICE", "cuda:1")
    monkeypatch.setenv("IMAGINEBOT_GUILD_ID", "123456789012345678")
    settings = load_settings()
    assert settings.default_steps == 40
    real_model = settings.catalog({"sd15": Planner(512, 8, guidance_embedded=False)}).default.defaults
    assert real_model.steps == 40 and real_model.cfg == 7.0
    assert settings.default_aspect == "3:2"
    assert settings.request_defaults.aspect == (3, 2)
    assert settings.model_path == "/models/sd15"
    assert settings.device == "cuda:1"
    assert settings.guild_id == 123456789012345678


@pytest.mark.parametrize(
    ("variable", "value", "fragments"),
    [
        ("IMAGINEBOT_DEFAULT_STEPS", "abc", ["IMAGINEBOT_DEFAULT_STEPS='abc'", "integer", "1-150"]),
        ("IMAGINEBOT_DEFAULT_STEPS", "500", ["IMAGINEBOT_DEFAULT_STEPS='500'", "150"]),
        ("IMAGINEBOT_DEFAULT_CFG", "31", ["IMAGINEBOT_DEFAULT_CFG", "30"]),
        ("IMAGINEBOT_DEFAULT_IMAGES", "9", ["IMAGINEBOT_DEFAULT_IMAGES", "1-4"]),
        ("IMAGINEBOT_DEFAULT_SAMPLER", "fast", ["IMAGINEBOT_DEFAULT_SAMPLER='fast'", "euler_a"]),
        ("IMAGINEBOT_DEFAULT_ASPECT", "9:1", ["IMAGINEBOT_DEFAULT_ASPECT='9:1'", "1:4 and 4:1"]),
        ("IMAGINEBOT_DEFAULT_ASPECT", "wide", ["IMAGINEBOT_DEFAULT_ASPECT", "W:H"]),
        ("IMAGINEBOT_DEVICE", "gpu", ["IMAGINEBOT_DEVICE='gpu'", "cuda:N"]),
        ("IMAGINEBOT_DTYPE", "fp8", ["IMAGINEBOT_DTYPE='fp8'", "float16"]),
        ("IMAGINEBOT_PREVIEW_EVERY", "0", ["IMAGINEBOT_PREVIEW_EVERY", "greater than or equal to 1"]),
        ("IMAGINEBOT_QUOTA_PER_DAY", "-3", ["IMAGINEBOT_QUOTA_PER_DAY", "0"]),
        ("IMAGINEBOT_MOCK_PORT", "70000", ["IMAGINEBOT_MOCK_PORT", "65535"]),
        ("IMAGINEBOT_GUILD_ID", "my-server", ["IMAGINEBOT_GUILD_ID", "integer"]),
        ("IMAGINEBOT_DISCORD_URL", "localhost:8080", ["IMAGINEBOT_DISCORD_URL", "http://"]),
        (
            "IMAGINEBOT_SAFETY_CHECKER",
            "/no/such/folder",
            ["IMAGINEBOT_SAFETY_CHECKER", "not a folder", "none"],
        ),
        ("IMAGINEBOT_WEB_URL", "lab-pc:8081", ["IMAGINEBOT_WEB_URL='lab-pc:8081'", "http://"]),
        ("IMAGINEBOT_GALLERY_LINK_HOURS", "0", ["IMAGINEBOT_GALLERY_LINK_HOURS", "greater than 0"]),
    ],
)
def test_invalid_value_names_variable_problem_and_allowed(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, fragments: list[str]
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_token_never_shown(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("IMAGINEBOT_DISCORD_TOKEN", TOKEN)
    settings = load_settings()
    assert settings.discord_token is not None
    assert settings.discord_token.get_secret_value() == TOKEN
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("settings: %s %r", settings, settings)
    assert TOKEN not in str(settings) + repr(settings) + caplog.text
    # also not when start-up fails for another setting
    monkeypatch.setenv("IMAGINEBOT_DEFAULT_STEPS", "zero")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert TOKEN not in str(caught.value)


def test_token_not_echoed_when_it_is_itself_invalid() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(discord_token=["not", TOKEN])
    assert "IMAGINEBOT_DISCORD_TOKEN" in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_every_setting_is_documented() -> None:
    example = (Path(__file__).parents[1] / ".env.example").read_text()
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for variable, _default, description in describe_settings():
        assert description, variable
        assert variable in example, f"{variable} missing from .env.example"
        assert variable in readme, f"{variable} missing from the README's table"


def test_operator_settings_win_over_the_embedded_models_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGINEBOT_DEFAULT_CFG", "9")
    defaults = model_defaults(load_settings())
    assert (defaults.steps, defaults.cfg) == (20, 9.0)


def test_the_safety_checker_is_a_folder_or_none(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert load_settings().safety_checker is None
    monkeypatch.setenv("IMAGINEBOT_SAFETY_CHECKER", "None")
    assert load_settings().safety_checker is None
    monkeypatch.setenv("IMAGINEBOT_SAFETY_CHECKER", str(tmp_path))
    assert load_settings().safety_checker == tmp_path


def test_several_devices_one_worker_each() -> None:
    assert load_settings().worker_devices == ["auto"]
    assert load_settings(device="cuda:1").worker_devices == ["cuda:1"]
    assert load_settings(devices=" cuda:0, cuda:1 ").worker_devices == ["cuda:0", "cuda:1"]
    with pytest.raises(ConfigError, match=r"IMAGINEBOT_DEVICES.*separated by commas"):
        load_settings(devices="cuda:0,gpu1")
