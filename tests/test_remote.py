"""A daemon for other machines (issue 14): wss:// over real loopback TLS, the client's certificate pin, plain ws://
refused beyond loopback, named tokens, turns per token, and ``gimp-inpaint connect``.

The daemon binds 127.0.0.1 with TLS forced on (``tls = True``), as it serves every other host: no test sends
anything beyond this machine.
"""

from __future__ import annotations

import contextlib
import json
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from gimp_inpaint.client import cli
from gimp_inpaint.client.connection import (
    CertificateChanged,
    ConnectionConfigError,
    DaemonError,
    DaemonUnavailable,
    InpaintClient,
    connect_or_start,
    pinning_context,
    read_connection_config,
    write_connection_config,
)
from gimp_inpaint.client.local_daemon import configured_fingerprint, configured_url
from gimp_inpaint.daemon import __main__ as daemon_main
from gimp_inpaint.daemon.config import ConfigError, Settings, ensure_token, load_settings
from gimp_inpaint.daemon.engines.base import CancelCheck, EngineJob, ProgressCallback
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine
from gimp_inpaint.daemon.server import DaemonServer
from gimp_inpaint.daemon.tls import CERTIFICATE_FILE, KEY_FILE, server_tls
from gimp_inpaint.daemon.tokens import TOKENS_FILE
from gimp_inpaint.protocol import (
    PROTOCOL_VERSION,
    Accepted,
    Error,
    ErrorCode,
    FillOptions,
    Hello,
    InpaintRequest,
    Plane,
    Result,
    Welcome,
    decode,
    encode,
)
from running_daemon import WAIT, StepEngine, free_port, serving
from websockets.sync.client import ClientConnection, connect
from websockets.sync.server import serve

pytestmark = pytest.mark.timeout(60)


def tls_settings(config_dir: Path, **values: object) -> Settings:
    """Settings of a daemon on 127.0.0.1 (a free port) with TLS forced on."""
    return Settings(config_dir=config_dir, log_file=config_dir / "daemon.log", port=0, tray=False,
                    **{"tls": True, **values})  # type: ignore[arg-type]


@contextmanager
def tls_daemon(config_dir: Path, *engines: object) -> Iterator[tuple[DaemonServer, str]]:
    """A daemon serving wss:// on 127.0.0.1 with ``engines`` (default: opencv); yields it and its local token."""
    token = ensure_token(config_dir)
    server = DaemonServer(tls_settings(config_dir), list(engines) or [OpenCVEngine()], token)  # type: ignore[arg-type]
    with serving(server):
        yield server, token


def new_certificate(config_dir: Path) -> None:
    """Delete the daemon's self-signed certificate and key: its next start makes new ones."""
    (config_dir / CERTIFICATE_FILE).unlink()
    (config_dir / KEY_FILE).unlink()


def request(job_id: str, engine: str = "opencv", prompt: str = "") -> InpaintRequest:
    """A 32×24 gradient with a hole in the middle."""
    image = np.zeros((24, 32, 4), np.uint8)
    image[..., 0] = np.arange(32, dtype=np.uint8) * 8
    image[..., 3] = 255
    mask = np.zeros((24, 32), np.uint8)
    mask[8:16, 12:20] = 255
    return InpaintRequest(job_id=job_id, x=0, y=0, image=Plane(32, 24, 4, image.tobytes()),
                          mask=Plane(32, 24, 1, mask.tobytes()),
                          options=FillOptions(engine=engine, prompt=prompt, grow=0, feather=0, seed=1,
                                              color_match=False))


# -- wss:// and the pin ------------------------------------------------------------------------------------------------

def test_wss_with_a_generated_certificate(tmp_path: Path) -> None:
    with tls_daemon(tmp_path) as (server, token):
        assert server.url is not None and re.fullmatch(r"wss://127\.0\.0\.1:\d+", server.url)
        pem = (tmp_path / CERTIFICATE_FILE).read_bytes()
        certificate = x509.load_pem_x509_certificate(pem)
        assert server.fingerprint == ":".join(f"{b:02X}" for b in certificate.fingerprint(hashes.SHA256()))
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "localhost" in names.get_values_for_type(x509.DNSName)
        assert {str(a) for a in names.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1", "::1"}
        assert isinstance(certificate.public_key(), ec.EllipticCurvePublicKey)
        assert certificate.public_key().curve.name == "secp256r1"
        assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
        with InpaintClient.connect(server.url, token, "pytest", WAIT, server.fingerprint.lower()) as client:
            assert client.fingerprint == server.fingerprint and client.welcome.token_owner == "local"
            sent = request("tls")
            [variant] = client.inpaint(sent)
        hole = np.frombuffer(variant.image.data, np.uint8).reshape(variant.image.height, variant.image.width, 4)
        assert (variant.x, variant.y, variant.image.width, variant.image.height) == (12, 8, 8, 8)
        assert hole[..., 3].min() == 255 and 0 < hole[..., 0].mean() < 255  # Telea filled it from the gradient
        with pytest.raises(DaemonUnavailable):  # plain WebSocket to the TLS port
            InpaintClient.connect(server.url.replace("wss://", "ws://"), token, "pytest", WAIT)
    with tls_daemon(tmp_path) as (again, _):  # the certificate is kept: the pin holds from one start to the next
        assert again.fingerprint == server.fingerprint


def test_a_wss_url_without_a_pin_and_ws_beyond_loopback_are_refused_before_connecting() -> None:
    with pytest.raises(ConnectionConfigError, match=re.escape("gimp-inpaint connect wss://127.0.0.1:9 --token")):
        InpaintClient.connect("wss://127.0.0.1:9", "t", "pytest")  # port 9: nothing is ever asked there
    with pytest.raises(ConnectionConfigError, match=r"unencrypted.*use wss://192\.0\.2\.7:7869"):
        InpaintClient.connect("ws://192.0.2.7:7869", "t", "pytest")  # TEST-NET-1: refused before any packet
    with pytest.raises(ConnectionConfigError, match="not a SHA-256 fingerprint"):
        InpaintClient.connect("wss://127.0.0.1:9", "t", "pytest", fingerprint="12:34")


@contextmanager
def recording_tls_peer(settings: Settings) -> Iterator[tuple[str, list[bytes | str], str]]:
    """A TLS WebSocket peer with the daemon's certificate that records every message it receives and answers the
    first one UNAUTHORIZED; yields its URL, the messages and the certificate's fingerprint."""
    tls = server_tls(settings)
    received: list[bytes | str] = []

    def handler(websocket: object) -> None:
        with contextlib.suppress(Exception):
            received.append(websocket.recv(timeout=WAIT))  # type: ignore[attr-defined]
            websocket.send(encode(Error(ErrorCode.UNAUTHORIZED, "recorded")))  # type: ignore[attr-defined]

    with serve(handler, "127.0.0.1", 0, ssl=tls.context, open_timeout=WAIT) as peer:
        thread = threading.Thread(target=peer.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"wss://127.0.0.1:{peer.socket.getsockname()[1]}", received, tls.fingerprint
        finally:
            peer.shutdown()
            thread.join(WAIT)


def test_a_changed_certificate_is_refused_before_the_token_is_sent(tmp_path: Path) -> None:
    settings = tls_settings(tmp_path)
    with recording_tls_peer(settings) as (url, received, pinned):
        with pytest.raises(DaemonError):  # the pinned certificate: the Hello goes out, with the token …
            InpaintClient.connect(url, "s3cret-token", "pytest", WAIT, pinned)
        assert len(received) == 1 and isinstance(hello := decode(received[0]), Hello)
        assert hello.token == "s3cret-token"
    new_certificate(tmp_path)
    with recording_tls_peer(settings) as (url, received, changed):
        assert changed != pinned
        with pytest.raises(CertificateChanged) as caught:  # … another one: nothing at all is sent
            InpaintClient.connect(url, "s3cret-token", "pytest", WAIT, pinned)
        time.sleep(0.2)  # the peer's handler has seen the connection close by now, and would have recorded a frame
        assert received == []
    assert caught.value.seen == changed and caught.value.pinned == pinned
    message = caught.value.message
    assert changed in message and pinned in message and "nothing was sent" in message
    assert f"gimp-inpaint connect {url} --token TOKEN --reset-fingerprint" in message


def test_the_client_verifies_by_pin_and_not_by_ca_and_the_daemon_sends_no_session_tickets(tmp_path: Path) -> None:
    context = pinning_context()
    assert not context.check_hostname and context.verify_mode.name == "CERT_NONE"
    assert context.minimum_version.name == "TLSv1_2"
    served = server_tls(tls_settings(tmp_path)).context
    assert served.num_tickets == 0 and served.minimum_version.name == "TLSv1_2"


# -- plain ws:// beyond loopback ---------------------------------------------------------------------------------------

def test_plain_ws_beyond_loopback_is_refused_at_start(tmp_path: Path) -> None:
    assert Settings(config_dir=tmp_path, log_file=tmp_path / "log", host="0.0.0.0").serves_tls  # the default: wss
    assert not Settings(config_dir=tmp_path, log_file=tmp_path / "log").serves_tls  # loopback: ws:// as before
    with pytest.raises(ConfigError, match=r"host='0\.0\.0\.0' is not a loopback address.*unencrypted"):
        DaemonServer(Settings(config_dir=tmp_path, log_file=tmp_path / "log", host="0.0.0.0", port=0, tls=False),
                     [OpenCVEngine()], "t")
    with pytest.raises(ConfigError, match=r"^command line: host='192\.0\.2\.7'.*host=127\.0\.0\.1"):
        load_settings(tmp_path, {"host": "192.0.2.7", "tls": False})
    (tmp_path / "daemon.toml").write_text('host = "0.0.0.0"\ntls = false\n')
    with pytest.raises(ConfigError, match=r"daemon\.toml: host='0\.0\.0\.0'"):
        load_settings(tmp_path)
    (tmp_path / "daemon.toml").write_text('tls_certificate = "mine.pem"\n')
    with pytest.raises(ConfigError, match="tls_certificate and tls_key go together"):
        load_settings(tmp_path)
    process = subprocess.run([sys.executable, "-m", "gimp_inpaint.daemon", "--no-tray", "--port", "0",
                              "--config-dir", str(tmp_path / "cli"), "--host", "0.0.0.0", "--no-tls"],
                             capture_output=True, text=True, timeout=WAIT, cwd=Path(__file__).parent.parent)
    assert process.returncode == 2 and process.stdout == ""
    assert "is not a loopback address" in process.stderr and "drop tls = false / --no-tls" in process.stderr


def test_the_listening_line_names_wss_and_the_fingerprint(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-m", "gimp_inpaint.daemon", "--no-tray", "--port", "0",
                                "--config-dir", str(tmp_path), "--tls"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, cwd=Path(__file__).parent.parent)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
    finally:
        process.terminate()
        process.wait(WAIT)
        if process.stdout is not None:
            process.stdout.close()
    match = re.fullmatch(r"gimp-inpaint daemon listening on wss://127\.0\.0\.1:\d+ \(certificate SHA-256 "
                         r"((?:[0-9A-F]{2}:){31}[0-9A-F]{2})\)\n", line)
    assert match, line
    certificate = x509.load_pem_x509_certificate((tmp_path / CERTIFICATE_FILE).read_bytes())
    assert match[1] == certificate.fingerprint(hashes.SHA256()).hex(":").upper()


# -- named tokens ------------------------------------------------------------------------------------------------------

def token_command(config_dir: Path, capsys: pytest.CaptureFixture[str], *words: str) -> tuple[int, str, str]:
    """``gimp-inpaint-daemon --config-dir CONFIG_DIR token WORDS…``: its exit status, stdout and stderr."""
    status = daemon_main.main(["--config-dir", str(config_dir), "token", *words])
    out, err = capsys.readouterr()
    return status, out, err


def added_token(config_dir: Path, capsys: pytest.CaptureFixture[str], name: str) -> str:
    """``token add NAME``'s new token, read from the line that holds it alone."""
    status, out, _ = token_command(config_dir, capsys, "add", name)
    found = re.search(r"^([0-9a-f]{64})$", out, re.MULTILINE)
    assert status == 0 and found, out
    return found[1]


def test_named_tokens_added_used_and_revoked(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             caplog: pytest.LogCaptureFixture) -> None:
    alice = added_token(tmp_path, capsys, "alice")
    stored = (tmp_path / TOKENS_FILE).read_text()
    assert alice not in stored and stat.S_IMODE((tmp_path / TOKENS_FILE).stat().st_mode) == 0o600
    assert token_command(tmp_path, capsys, "add", "alice")[0] == 2  # taken
    assert token_command(tmp_path, capsys, "add", "local")[2].count("local token") == 1  # reserved
    assert token_command(tmp_path, capsys, "add", "bad name")[0] == 2
    bob = added_token(tmp_path, capsys, "bob")
    listing = token_command(tmp_path, capsys, "list")[1].splitlines()
    assert [line.split()[0] for line in listing] == ["NAME", "local", "alice", "bob"]
    with caplog.at_level("INFO", logger="gimp_inpaint.daemon.server"), tls_daemon(tmp_path) as (server, local):
        assert server.url is not None and server.fingerprint is not None
        for token, owner in ((alice, "alice"), (bob, "bob"), (local, "local")):
            with InpaintClient.connect(server.url, token, "pytest", WAIT, server.fingerprint) as client:
                assert client.welcome.token_owner == owner
                assert len(client.inpaint(request(f"by-{owner}"))) == 1
        assert re.search(r"connection \d+: \S+, token alice, from", caplog.text)
        assert token_command(tmp_path, capsys, "revoke", "alice")[1].startswith("revoked alice's token")
        with pytest.raises(DaemonError) as refused:  # the next handshake, no restart
            InpaintClient.connect(server.url, alice, "pytest", WAIT, server.fingerprint)
        assert refused.value.code is ErrorCode.UNAUTHORIZED and "token add NAME" in refused.value.message
        with InpaintClient.connect(server.url, bob, "pytest", WAIT, server.fingerprint) as client:
            assert client.welcome.token_owner == "bob"  # the others keep working
    assert token_command(tmp_path, capsys, "revoke", "alice")[0] == 2  # gone
    assert [line.split()[0] for line in token_command(tmp_path, capsys, "list")[1].splitlines()] == \
        ["NAME", "local", "bob"]


# -- turns per token ---------------------------------------------------------------------------------------------------

class HoldingEngine(StepEngine):
    """Holds its first job until :attr:`release` is set (the others queue behind it); records the prompts."""

    def __init__(self) -> None:
        super().__init__("hold", steps=1)
        self.started = threading.Event()
        self.release = threading.Event()

    def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        self.started.set()
        assert self.release.wait(WAIT)
        return super().inpaint(job, progress, cancelled)


def test_two_connections_of_one_token_share_its_turn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alice_token = added_token(tmp_path, capsys, "alice")
    engine = HoldingEngine()
    with tls_daemon(tmp_path, engine) as (server, local):
        assert server.url is not None

        def opened(token: str) -> ClientConnection:
            ws = stack.enter_context(connect(server.url, ssl=pinning_context(), compression=None, max_size=None,
                                             open_timeout=WAIT))
            ws.send(encode(Hello(protocol_version=PROTOCOL_VERSION, client="pytest", token=token)))
            assert isinstance(decode(ws.recv(timeout=WAIT)), Welcome)
            return ws

        def submit(ws: ClientConnection, job_id: str) -> Accepted:
            ws.send(encode(request(job_id, engine="hold", prompt=job_id)))
            while not isinstance(reply := decode(ws.recv(timeout=WAIT)), Accepted):  # the running job's progress
                assert not isinstance(reply, Error), reply
            assert reply.job_id == job_id
            return reply

        with contextlib.ExitStack() as stack:
            mine, laptop, desktop = opened(local), opened(alice_token), opened(alice_token)
            assert submit(mine, "local-1").position == 0
            assert engine.started.wait(WAIT)
            assert submit(laptop, "alice-laptop").position == 1
            assert submit(desktop, "alice-desktop").position == 2
            assert submit(mine, "local-2").position == 2  # alice's two connections took one turn: local's is next
            engine.release.set()
            for ws, jobs in ((mine, 2), (laptop, 1), (desktop, 1)):
                while jobs:
                    if isinstance(message := decode(ws.recv(timeout=WAIT)), Result):
                        jobs -= 1
                    assert not isinstance(message, Error), message
    assert [prompt for prompt, _ in engine.seen] == ["local-1", "alice-laptop", "local-2", "alice-desktop"]


# -- gimp-inpaint connect ----------------------------------------------------------------------------------------------

def command(words: list[str]) -> int:
    """``gimp-inpaint WORDS… --timeout WAIT``'s exit status (the wait generous: a loaded machine is no failure)."""
    return cli.main([*words, "--timeout", str(WAIT)])


def test_connect_writes_connection_json_and_pins_the_certificate(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    daemon_dir, plugin = tmp_path / "daemon", tmp_path / "connection.json"
    write_connection_config(plugin, "ws://127.0.0.1:7869", "local-token", ["/venv/python", "-m", "x"])
    monkeypatch.setattr(cli, "plugin_connection_files", lambda: [plugin])  # the installed plug-in's file
    token = added_token(daemon_dir, capsys, "desk")
    with tls_daemon(daemon_dir) as (server, _):
        assert server.url is not None and server.fingerprint is not None
        assert command(["connect", server.url, "--token", token]) == 0
        out = capsys.readouterr().out
        assert "token of desk" in out and f"certificate SHA-256 {server.fingerprint}: pinned on first use" in out
        assert f"wrote {plugin}" in out
        written = json.loads(plugin.read_text())
        assert written == {"url": server.url, "token": token, "daemon_command": ["/venv/python", "-m", "x"],
                           "fingerprint": server.fingerprint}
        assert stat.S_IMODE(plugin.stat().st_mode) == 0o600
        with connect_or_start(read_connection_config(plugin), "pytest", tmp_path / "log", timeout=WAIT) as client:
            assert client.welcome.token_owner == "desk"  # the plug-in's path: the pin from connection.json
        assert command(["status", "--url", server.url, "--token", token]) == 0  # the CLI finds the same pin
        assert "token of desk" in capsys.readouterr().out
        assert command(["connect", server.url, "--token", token]) == 0
        assert f"{server.fingerprint}: as pinned" in capsys.readouterr().out
    new_certificate(daemon_dir)
    with tls_daemon(daemon_dir) as (server, _):
        assert server.url is not None and server.fingerprint is not None
        pinned = written["fingerprint"]
        write_connection_config(plugin, server.url, token, None, pinned)  # this port (port 0 moved), the old pin
        assert command(["connect", server.url, "--token", token]) == 1
        assert "--reset-fingerprint" in capsys.readouterr().err
        assert read_connection_config(plugin).fingerprint == pinned
        with pytest.raises(CertificateChanged):
            connect_or_start(read_connection_config(plugin), "pytest", tmp_path / "log", timeout=WAIT)
        assert command(["connect", server.url, "--token", token, "--reset-fingerprint"]) == 0
        assert read_connection_config(plugin).fingerprint == server.fingerprint != pinned
        assert command(["connect", server.url, "--token", token, "--fingerprint", pinned, "--reset-fingerprint"]) \
            == 1  # a fingerprint given is checked, never trusted on first use


def test_the_cli_pins_a_local_wss_daemon_by_its_own_certificate_file(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "plugin_connection_files", lambda: [])  # no plug-in's pin to lean on
    (tmp_path / "daemon.toml").write_text("tls = true\nport = 7999\n")
    assert configured_url(tmp_path) == "wss://127.0.0.1:7999"
    assert configured_fingerprint(tmp_path) is None  # no certificate made yet: no pin
    with tls_daemon(tmp_path) as (server, _):
        assert server.url is not None
        assert configured_fingerprint(tmp_path) == server.fingerprint  # read from the file, not trusted on use
        assert command(["status", "--url", server.url, "--config-dir", str(tmp_path)]) == 0
        assert "token of local" in capsys.readouterr().out
        other = server_tls(tls_settings(tmp_path / "other")).certificate  # another daemon's certificate …
        (tmp_path / CERTIFICATE_FILE).write_bytes(other.read_bytes())  # … in the file: not what the daemon serves
        assert command(["status", "--url", server.url, "--config-dir", str(tmp_path)]) == 1
        assert "nothing was sent" in capsys.readouterr().err


def test_the_installers_pin_lets_the_plugin_reach_this_machines_wss_daemon(tmp_path: Path) -> None:
    from gimp_inpaint.installer.__main__ import main as installer
    from gimp_inpaint.plugin_gimp.dialog_model import list_engines

    config = tmp_path / "config"
    config.mkdir()
    (config / "daemon.toml").write_text(f"tls = true\nport = {free_port()}\n")
    assert installer(["install", "--plugin-dir", str(tmp_path / "plug-ins"), "--config-dir", str(config),
                      "--gimp-config-dir", str(tmp_path / "gimp")]) == 0
    connection = tmp_path / "plug-ins" / "gimp-inpaint" / "connection.json"
    server = DaemonServer(load_settings(config), [OpenCVEngine()], ensure_token(config))
    with serving(server):  # it serves the certificate the installer made: the plug-in's pin, with no connect step
        assert server.url == json.loads(connection.read_text())["url"]
        listing = list_engines(connection, "", "pytest", tmp_path / "engines.msgpack")
        assert listing.live and listing.problem is None and [e.name for e in listing.engines] == ["opencv"]


def test_the_dialogs_engine_list_checks_the_pin_of_connection_json(tmp_path: Path) -> None:
    from gimp_inpaint.client.connection import write_connection_config
    from gimp_inpaint.plugin_gimp.dialog_model import list_engines

    with tls_daemon(tmp_path / "config") as (server, token):
        assert server.url is not None and server.fingerprint is not None
        pinned = tmp_path / "connection.json"
        write_connection_config(pinned, server.url, token, fingerprint=server.fingerprint)
        listing = list_engines(pinned, "", "pytest", tmp_path / "engines.msgpack")
        assert listing.live and listing.problem is None and [e.name for e in listing.engines] == ["opencv"]
        wrong = tmp_path / "wrong.json"
        write_connection_config(wrong, server.url, token, fingerprint="AB:" * 31 + "AB")
        refused = list_engines(wrong, "", "pytest", tmp_path / "none.msgpack")
        assert not refused.live and refused.problem and "fingerprint" in refused.problem.lower()


def test_the_doctor_checks_a_local_wss_daemon_by_its_certificate_file(tmp_path: Path) -> None:
    from gimp_inpaint.installer import doctor

    config = tmp_path / "config"
    config.mkdir()
    (config / "daemon.toml").write_text("tls = true\n")
    with tls_daemon(config) as (server, token):
        assert server.url is not None
        assert doctor.connect_daemon(server.url, token, config_dir=config).engines[0].name == "opencv"
