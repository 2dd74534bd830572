from pathlib import Path

import pytest

from attnserve.settings import DEFAULT_MODEL_REPOSITORY, Settings


def test_defaults_bind_to_loopback_and_serve_the_committed_repository() -> None:
    settings = Settings()
    assert settings.triton.host == "127.0.0.1" and settings.gateway.host == "127.0.0.1"
    assert settings.triton.model_repository == DEFAULT_MODEL_REPOSITORY
    assert settings.triton.grpc_target == "127.0.0.1:8001"


def test_environment_overrides_nested_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTNSERVE_GATEWAY__PORT", "9100")
    monkeypatch.setenv("ATTNSERVE_TRITON__URL", "triton.internal:8001")
    monkeypatch.setenv("ATTNSERVE_TRITON__MODEL_REPOSITORY", "/srv/models")
    settings = Settings()
    assert settings.gateway.port == 9100
    assert settings.triton.grpc_target == "triton.internal:8001"
    assert settings.triton.model_repository == Path("/srv/models")


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTNSERVE_GATEWAY__PORT", "70000")
    with pytest.raises(ValueError, match="port"):
        Settings()


def test_outside_a_source_checkout_the_defaults_say_what_to_pass(tmp_path: Path) -> None:
    from attnserve.demo import run_demo
    from attnserve.errors import SetupError
    from attnserve.server.triton.process import check_repository

    with pytest.raises(SetupError, match="pass --image"):
        run_demo(Settings(), None, tmp_path / "overlay.png")
    with pytest.raises(SetupError, match="pass --repository PATH or set ATTNSERVE_TRITON__MODEL_REPOSITORY"):
        check_repository(tmp_path / "model_repository")
    assert not (tmp_path / "overlay.png").exists()
