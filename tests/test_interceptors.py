import grpc
import pytest

from attnserve import errors
from attnserve.server.grpc.interceptors import describe, status_for


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidInput("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.ModelNotFound("x"), grpc.StatusCode.NOT_FOUND),
        (errors.ModelNotReady("x"), grpc.StatusCode.UNAVAILABLE),
        (errors.Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (errors.Overloaded("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.DeadlineExceeded("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.UpstreamError("x"), grpc.StatusCode.INTERNAL),
        (errors.SetupError("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (KeyError("secret detail"), grpc.StatusCode.INTERNAL),
    ],
)
def test_every_error_has_one_status(error: BaseException, code: grpc.StatusCode) -> None:
    assert status_for(error) is code


def test_subclasses_inherit_their_status_and_internals_stay_private() -> None:
    from attnserve.export.onnx_export import ParityError

    assert status_for(ParityError("x")) is grpc.StatusCode.INTERNAL
    assert describe(errors.InvalidInput("bad top_k")) == "bad top_k"
    assert "secret" not in describe(KeyError("secret detail"))
