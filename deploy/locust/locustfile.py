"""Locust against the attnserve gateway's HTTP API, for users who load-test with Locust.

    pip install locust
    locust -f deploy/locust/locustfile.py --host http://127.0.0.1:8501 \\
        --headless -u 16 -r 4 -t 60s

Each user posts the same prediction as `attnserve bench --server http://…` does (the JSON
mapping of a `PredictRequest`, the image base64): the image and the options come from the
environment, so one file serves every scenario:

    ATTNSERVE_LOCUST_IMAGE    image file (default: docs/samples/digit.png)
    ATTNSERVE_LOCUST_MODEL    model name (default: the gateway's default)
    ATTNSERVE_LOCUST_MAPS     comma-separated map names or "primary" (default: every map)
    ATTNSERVE_LOCUST_FORMS    comma-separated: raw, upsampled, heatmap_png, overlay_png (default raw)
    ATTNSERVE_LOCUST_OPTIONS  more request fields as JSON, e.g.
                              '{"attention": {"image_encoding": "IMAGE_ENCODING_JPEG"}}'
    ATTNSERVE_API_KEY         sent as a bearer token when set

A refusal (429 with Retry-After, 503) counts as a failure with its status, as Locust does.
gRPC clients are measured with `attnserve bench` (closed and open loops, no Locust needed).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from locust import HttpUser, constant, task

ROOT = Path(__file__).resolve().parents[2]


def prediction_body(environ: dict[str, str] | os._Environ[str] = os.environ) -> dict[str, Any]:
    """The JSON body of the prediction every user sends, from the environment."""
    image = Path(environ.get("ATTNSERVE_LOCUST_IMAGE", ROOT / "docs" / "samples" / "digit.png"))
    attention: dict[str, Any] = {}
    if maps := environ.get("ATTNSERVE_LOCUST_MAPS"):
        attention["maps"] = [name.strip() for name in maps.split(",") if name.strip()]
    forms = environ.get("ATTNSERVE_LOCUST_FORMS", "raw")
    attention["formats"] = [f"MAP_FORMAT_{form.strip().upper()}" for form in forms.split(",") if form.strip()]
    body: dict[str, Any] = {"image": base64.b64encode(image.read_bytes()).decode(), "attention": attention}
    if model := environ.get("ATTNSERVE_LOCUST_MODEL"):
        body["model"] = model
    extra = json.loads(environ.get("ATTNSERVE_LOCUST_OPTIONS", "{}"))
    for key, value in extra.items():
        body[key] = {**body.get(key, {}), **value} if isinstance(value, dict) else value
    return body


def prediction_path(body: dict[str, Any]) -> str:
    return f"/v1/models/{body['model']}:predict" if "model" in body else "/v1/predict"


class Predictor(HttpUser):
    """Sends the prediction back to back (a closed loop per user, as `attnserve bench`)."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.body = json.dumps(prediction_body())
        self.path = prediction_path(json.loads(self.body))
        self.headers = {"content-type": "application/json"}
        if key := os.environ.get("ATTNSERVE_API_KEY"):
            self.headers["authorization"] = f"Bearer {key}"

    @task
    def predict(self) -> None:
        self.client.post(self.path, data=self.body, headers=self.headers, name="predict")
