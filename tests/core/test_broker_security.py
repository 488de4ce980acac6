"""The hub against a broker that wants credentials, and over TLS (real Mosquitto)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hub.provision.mosquitto_auth import hash_password
from tests.support.hubproc import HubProcess, wait_for
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.mosquitto


def test_username_password(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text(f"hub:{hash_password('hub-secret')}\npub:{hash_password('pub-secret')}\n")
    with Mosquitto(
        tmp_path / "broker", extra_config=f"password_file {passwd}\nallow_anonymous false"
    ) as broker:
        (tmp_path / "wrong").mkdir()
        wrong = HubProcess(
            tmp_path / "wrong", broker.url, {"broker": {"username": "hub", "password": "nope"}}
        )
        wrong.start(wait_connected=False)
        # Wrong credentials at start are a wrong config: a clear message and exit code 3.
        assert wrong.proc is not None and wrong.proc.wait(30) == 3
        assert (
            "refused the connection: Not authorized (check broker.username and broker.password)"
            in wrong.log()
        )
        assert "nope" not in wrong.log()
        (tmp_path / "right").mkdir()
        hub = HubProcess(
            tmp_path / "right",
            broker.url,
            {"broker": {"username": "hub", "password": "hub-secret"}},
        ).start()
        from hub.sources.simulate import SimulatorPublisher

        publisher = SimulatorPublisher(
            broker.host, broker.port, client_id="pub", username="pub", password="pub-secret"
        )
        publisher.connect()
        publisher.publish("hub/readings/rig", b'{"values": {"current": 1.5}}')
        assert publisher.flush()
        publisher.close()
        wait_for(
            lambda: hub.sample_count() >= 1, 20, what="a reading through an authenticated broker"
        )
        assert (
            "hub-secret" not in hub.log()
            and "hub-secret" not in (hub.data_dir / "status.json").read_text()
        )
        hub.stop()


def make_certs(directory: Path) -> tuple[Path, Path, Path]:
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=hub-test-ca",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca_crt),
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(key),
        "-out",
        str(csr),
    )
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca_crt),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        str(crt),
    )
    return ca_crt, crt, key


def test_tls(tmp_path: Path) -> None:
    ca, crt, key = make_certs(tmp_path)
    tls = f"cafile {ca}\ncertfile {crt}\nkeyfile {key}\n"
    with Mosquitto(tmp_path / "broker", extra_config=tls) as broker:
        (tmp_path / "hub").mkdir()
        url = f"mqtts://127.0.0.1:{broker.port}"
        hub = HubProcess(tmp_path / "hub", url, {"broker": {"tls": {"ca_file": str(ca)}}}).start()
        assert hub.status()["broker"]["url"] == url
        # a plain client cannot even connect to this listener; the hub did, over TLS
        hub.stop()
        (tmp_path / "untrusted").mkdir()
        untrusted = HubProcess(tmp_path / "untrusted", url).start(wait_connected=False)
        wait_for(
            lambda: "TLS certificate is not trusted" in untrusted.log(),
            30,
            what="a clear message about the certificate",
        )
        assert untrusted.status().get("broker", {}).get("state") != "connected"
        untrusted.stop()
