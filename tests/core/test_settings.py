"""Settings from the environment: defaults are the class's own, bad values name the variable."""

from __future__ import annotations

import msgspec
import pytest

from mtdesk.core.errors import ConfigError
from mtdesk.core.settings import Settings


def test_an_empty_environment_gives_the_documented_defaults() -> None:
    read = Settings.from_env({}, dotenv=None)
    defaults = Settings()
    for field in msgspec.structs.fields(Settings):
        if field.name == "providers":  # the environment adds the known providers
            continue
        assert getattr(read, field.name) == getattr(defaults, field.name), field.name
    assert read.redis_url == "redis://127.0.0.1:6379/0"
    assert (read.host, read.port, read.data_dir) == ("127.0.0.1", 8080, "./.mtdesk")
    assert set(read.providers) >= {"openrouter", "fireworks", "minimax", "moonshot", "openai"}


def test_variables_override_the_defaults() -> None:
    read = Settings.from_env({
        "MTDESK_PORT": "9001", "MTDESK_HOST": "0.0.0.0", "MTDESK_CONVERSATION_IDLE_S": "2.5",
        "MTDESK_KB_ALLOW_PRIVATE_URLS": "yes", "MTDESK_STOP_WORDS": "halt, quit",
        "MTDESK_REDIS_URL": "redis://example:1/2", "MTDESK_LOG_LEVEL": "debug",
    }, dotenv=None)
    assert (read.port, read.host, read.conversation_idle_s) == (9001, "0.0.0.0", 2.5)
    assert read.kb_allow_private_urls is True
    assert read.stop_words == ("HALT", "QUIT")
    assert read.redis_url == "redis://example:1/2"
    assert read.log_level == "DEBUG"


@pytest.mark.parametrize(("variable", "value"), [
    ("MTDESK_PORT", "eighty"), ("MTDESK_PORT", "70000"), ("MTDESK_LLM_TIMEOUT_S", "0"),
    ("MTDESK_REDIS_URL", "http://x"), ("MTDESK_KB_ALLOW_PRIVATE_URLS", "perhaps"),
    ("MTDESK_DEDUP_TTL_S", "60"),
])
def test_a_bad_value_is_refused_naming_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value}, dotenv=None)
    assert caught.value.variable == variable


def _serve_env(**extra: str) -> dict[str, str]:
    return {"MTDESK_META_APP_SECRET": "s", "MTDESK_META_VERIFY_TOKEN": "v",
            "MTDESK_ENCRYPTION_KEYS": "A" * 43 + "=", **extra}


def test_serve_refuses_an_operator_token_shorter_than_32_characters() -> None:
    short = Settings.from_env(_serve_env(MTDESK_ADMIN_TOKEN="x" * 31), dotenv=None)
    with pytest.raises(ConfigError) as caught:
        short.require_serve()
    assert caught.value.variable == "MTDESK_ADMIN_TOKEN"
    assert "32" in caught.value.problem
    Settings.from_env(_serve_env(MTDESK_ADMIN_TOKEN="x" * 32), dotenv=None).require_serve()
    Settings.from_env(_serve_env(), dotenv=None).require_serve()  # no operator token: no admin


def test_the_settings_repr_masks_the_password_of_the_redis_and_key_store_urls() -> None:
    settings = Settings.from_env({
        "MTDESK_REDIS_URL": "redis://mtdesk:hunter2-redis@10.0.0.5:6379/0",
        "MTDESK_KEYSTORE_URL": "rediss://:hunter2-keys@10.0.0.9:6380/0",
    }, dotenv=None)
    shown = repr(settings)
    assert "hunter2" not in shown
    assert "redis://mtdesk:***@10.0.0.5:6379/0" in shown
    assert "rediss://:***@10.0.0.9:6380/0" in shown
    assert settings.redis_url == "redis://mtdesk:hunter2-redis@10.0.0.5:6379/0"  # kept to connect
