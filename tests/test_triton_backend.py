"""The Triton adapter's error mapping: every tritonclient failure leaves as the right domain error."""

from __future__ import annotations

import pytest
from tritonclient.utils import InferenceServerException

from attnserve import errors
from attnserve.server.gateway.triton import error_from_triton


@pytest.mark.parametrize(
    ("message", "status", "expected"),
    [
        ("failed to connect to all addresses", "StatusCode.UNAVAILABLE", errors.Unavailable),
        ("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED", errors.DeadlineExceeded),
        ("too many requests", "StatusCode.RESOURCE_EXHAUSTED", errors.Overloaded),
        ("Request for unknown model: 'x' is not found", "StatusCode.NOT_FOUND", errors.ModelNotReady),
        # Triton's HTTP endpoint and older servers say it in words, with another status
        ("unknown model: 'x' has no available versions", "StatusCode.INTERNAL", errors.ModelNotReady),
        ("model 'x' is not ready", None, errors.ModelNotReady),
        ("unexpected shape for input 'image'", "StatusCode.INVALID_ARGUMENT", errors.InvalidInput),
        ("onnxruntime exploded", "StatusCode.INTERNAL", errors.UpstreamError),
        ("no status at all", None, errors.UpstreamError),
    ],
)
def test_each_triton_failure_becomes_one_domain_error(
    message: str, status: str | None, expected: type[errors.AttnserveError]
) -> None:
    error = error_from_triton(InferenceServerException(message, status=status), "inference on 'x'")
    assert type(error) is expected
    if expected is errors.Unavailable:  # its details (Triton's address) go to the log only
        assert message not in str(error)
    else:
        assert "inference on 'x'" in str(error) and message in str(error)


def test_unavailable_says_what_to_do_and_not_where_triton_is() -> None:
    details = "failed to connect to all addresses; last error: 10.0.0.7:8001: Connection refused"
    error = error_from_triton(InferenceServerException(details, "StatusCode.UNAVAILABLE"), "listing")
    assert "retry when the gateway is SERVING" in str(error) and "10.0.0.7" not in str(error)
