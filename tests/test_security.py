"""TLS, mutual TLS and API keys on both fronts, with certificates made here by openssl.

Proven: plaintext to a TLS port fails; a client certificate from another CA fails; a missing
or wrong key gets UNAUTHENTICATED / 401 and the backend (Triton) sees nothing; health and the
probes stay open; the right key over the right TLS gets answers.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from attnserve.clients import Client, Credentials, HttpClient
from attnserve.errors import SetupError, Unauthenticated, Unavailable
from attnserve.server.gateway.security import ApiKeys
from attnserve.settings import GatewaySettings

from .conftest import FakeBackend, GatewayThread, gateway_settings, triton_settings
from .conftest import grey_png as png

KEY = "k3y-0f-the-right-length-42"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _ca(name: str, cwd: Path) -> None:
    _openssl("req", "-x509", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.pem",
             "-days", "2", "-subj", f"/CN={name}", cwd=cwd)  # fmt: skip


def _signed(name: str, ca: str, cwd: Path, extension: str) -> None:
    (cwd / f"{name}.ext").write_text(extension)
    _openssl("req", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=cwd)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
             cwd=cwd)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca → server (127.0.0.1) and client; another CA → a stranger's client certificate."""
    folder = tmp_path_factory.mktemp("pki")
    _ca("ca", folder)
    _ca("other-ca", folder)
    _signed(
        "server", "ca", folder, "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    _signed("client", "ca", folder, "extendedKeyUsage=clientAuth\n")
    _signed("stranger", "other-ca", folder, "extendedKeyUsage=clientAuth\n")
    (folder / "keys.txt").write_text(f"# one key per line\n{KEY}\n")
    return folder


@pytest.fixture(scope="module")
def secured(pki: Path) -> Iterator[tuple[GatewayThread, FakeBackend]]:
    backend = FakeBackend()
    settings = gateway_settings(
        triton_settings(),
        tls_cert_file=pki / "server.pem",
        tls_key_file=pki / "server.key",
        tls_client_ca_file=pki / "ca.pem",
        api_keys_file=pki / "keys.txt",
    )
    thread = GatewayThread(settings, backend).start()
    with Client(thread.address, credentials=trusted(pki)) as client:
        client.wait_until_serving(10)
    yield thread, backend
    thread.stop()


def trusted(pki: Path, key: str | None = KEY, cert: str = "client") -> Credentials:
    return Credentials(key, pki / "ca.pem", pki / f"{cert}.pem", pki / f"{cert}.key")


def https(thread: GatewayThread) -> str:
    return thread.http_url.replace("http://", "https://")


def test_the_right_key_over_mutual_tls_gets_answers_on_both_fronts(
    secured: tuple[GatewayThread, FakeBackend], pki: Path
) -> None:
    thread, _ = secured
    with Client(thread.address, credentials=trusted(pki)) as client:
        assert client.predict(png(), top_k=2).predictions
        assert [m.name for m in client.list_models().models] == ["cbam"]
    with HttpClient(https(thread), credentials=trusted(pki)) as client:
        assert client.predict(png(), top_k=2).predictions
        assert client.health() == "SERVING"


def test_missing_or_wrong_keys_are_refused_before_the_backend_sees_anything(
    secured: tuple[GatewayThread, FakeBackend], pki: Path
) -> None:
    thread, backend = secured
    calls = len(backend.calls)
    for key in (None, "not-the-key-but-long-enough"):
        with Client(thread.address, credentials=trusted(pki, key)) as client:
            with pytest.raises(Unauthenticated):
                client.predict(png())
            with pytest.raises(Unauthenticated):
                client.list_models()
            with pytest.raises(Unauthenticated):
                list(client.predict_stream([png()]))
            assert client.health() == "SERVING", "health checks stay open for probes"
        with (
            HttpClient(https(thread), credentials=trusted(pki, key)) as client,
            pytest.raises(Unauthenticated),
        ):
            client.predict(png())
    assert len(backend.calls) == calls
    context = _client_context(pki)
    refused = httpx.post(https(thread) + "/v1/predict", content=png(), verify=context,
                         headers={"Content-Type": "image/png", "Authorization": "Bearer nope"})  # fmt: skip
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["message"] == "the API key is not valid"
    assert httpx.get(https(thread) + "/live", verify=context).status_code == 200
    assert httpx.get(https(thread) + "/", verify=context).status_code == 200, "the page asks for the key"
    metrics = httpx.get(https(thread) + "/metrics", verify=context, headers={"x-api-key": KEY}).text
    assert 'code="UNAUTHENTICATED",method="Predict"' in metrics and 'code="401"' in metrics


def _client_context(pki: Path, cert: str = "client") -> object:
    import ssl

    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"))
    return context


def test_plaintext_and_strangers_cannot_connect(
    secured: tuple[GatewayThread, FakeBackend], pki: Path
) -> None:
    thread, backend = secured
    calls = len(backend.calls)
    with Client(thread.address, timeout_s=5, credentials=Credentials(KEY)) as plaintext:
        with pytest.raises(Unavailable):
            plaintext.predict(png())
    with Client(thread.address, timeout_s=5, credentials=trusted(pki, cert="stranger")) as stranger:
        with pytest.raises(Unavailable):
            stranger.predict(png())
    with Client(thread.address, timeout_s=5, credentials=Credentials(KEY, pki / "ca.pem")) as anonymous:
        with pytest.raises(Unavailable):
            anonymous.predict(png())
    with pytest.raises(httpx.HTTPError):
        httpx.get(thread.http_url + "/live", timeout=5)  # plain HTTP to the TLS port
    with pytest.raises(httpx.HTTPError):
        httpx.get(https(thread) + "/live", verify=_client_context(pki, "stranger"), timeout=5)
    assert len(backend.calls) == calls


def test_settings_and_key_files_are_checked(tmp_path: Path, pki: Path) -> None:
    with pytest.raises(ValueError, match="go together"):
        GatewaySettings(tls_cert_file=pki / "server.pem")
    with pytest.raises(ValueError, match="mutual TLS"):
        GatewaySettings(tls_client_ca_file=pki / "ca.pem")
    empty, short = tmp_path / "empty.txt", tmp_path / "short.txt"
    empty.write_text("# nothing\n\n")
    short.write_text("abc\n")
    with pytest.raises(SetupError, match="no key"):
        ApiKeys.from_file(empty)
    with pytest.raises(SetupError, match="16 characters"):
        ApiKeys.from_file(short)
    with pytest.raises(SetupError, match="cannot read"):
        ApiKeys.from_file(tmp_path / "missing.txt")
    keys = ApiKeys.from_file(pki / "keys.txt")
    keys.check({"x-api-key": KEY}.get)
    keys.check({"authorization": f"bearer {KEY}"}.get)
    with pytest.raises(Unauthenticated, match="needs an API key"):
        keys.check({"authorization": f"Basic {KEY}"}.get)


@pytest.mark.browser
def test_the_page_asks_for_the_key_and_then_works(pki: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH (`make test` installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    thread = GatewayThread(
        gateway_settings(triton_settings(), api_keys_file=pki / "keys.txt"), FakeBackend()
    ).start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(thread.http_url + "/")
            page.wait_for_selector("#key-box:not([hidden])")
            assert page.inner_text("#status").startswith("401")
            page.fill("#api-key", KEY)
            page.dispatch_event("#api-key", "change")
            page.wait_for_selector("#model option", state="attached")
            assert page.input_value("#model") == "cbam" and page.inner_text("#status") == ""
            browser.close()
    finally:
        thread.stop()


def test_reflection_needs_the_key_too_and_its_refusal_is_unauthenticated(
    secured: tuple[GatewayThread, FakeBackend], pki: Path
) -> None:
    """Every service but health needs the key; a refusal is mapped like any other error (not
    UNKNOWN), whichever service it is for."""
    import grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    thread, _ = secured
    credentials = grpc.ssl_channel_credentials(
        (pki / "ca.pem").read_bytes(), (pki / "client.key").read_bytes(), (pki / "client.pem").read_bytes()
    )
    listing = reflection_pb2.ServerReflectionRequest(list_services="")
    with grpc.secure_channel(thread.address, credentials) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.ServerReflectionInfo(iter([listing]), timeout=10))
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED, refused.value
        (answer,) = stub.ServerReflectionInfo(iter([listing]), timeout=10, metadata=(("x-api-key", KEY),))
        services = {s.name for s in answer.list_services_response.service}
        assert "attnserve.v1.AttentionService" in services, services
