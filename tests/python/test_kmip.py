"""KMIP adapters end to end: PyKMIP (a real KMIP client) against `keyward serve --kmip-listen`
over mutual TLS, with its certificate registered through the management API
(`/api/v2/kmip_adapters`), as docs/kmip.md describes.

The test makes its own CA, server and client certificates with `cryptography`, its own data
directory and server (the KMIP listener needs flags the shared session server does not have).
"""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import struct
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import _free_port, _start_server, _stop, find_binary, run_admin

from kmip.core import enums
from kmip.pie import objects
from kmip.pie.client import ProxyKmipClient
from kmip.pie.exceptions import KmipOperationFailure

ADAPTER_TYPE = "application/vnd.ibm.kms.kmip_adapter+json"
CERT_TYPE = "application/vnd.ibm.kms.kmip_client_certificate+json"
KEY_TYPE = "application/vnd.ibm.kms.key+json"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key, issuer_name: x509.Name, issuer_key, ca: bool = False,
          san: Optional[list] = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write_pair(d: Path, stem: str, cert: x509.Certificate, key) -> Tuple[Path, Path]:
    c, k = d / f"{stem}.pem", d / f"{stem}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    k.chmod(0o600)
    return c, k


@dataclass
class Kmip:
    url: str
    kmip_port: int
    instance: str
    token: str
    reader_token: str
    ca: Path
    clients: Dict[str, Tuple[Path, Path]]
    log: Path

    def api(self, method: str, path: str, body: Any = None, token: Optional[str] = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "authorization": f"Bearer {token or self.token}",
            "bluemix-instance": self.instance,
            "content-type": "application/json",
        })
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, (json.loads(raw) if raw else None)

    def client(self, who: str = "a") -> ProxyKmipClient:
        cert, key = self.clients[who]
        return ProxyKmipClient(
            hostname="127.0.0.1", port=self.kmip_port, cert=str(cert), key=str(key),
            ca=str(self.ca), ssl_version="PROTOCOL_TLSv1_2", config_file="/dev/null",
        )


def _token(url: str, apikey: str) -> str:
    data = f"grant_type=urn:ibm:params:oauth:grant-type:apikey&apikey={apikey}".encode()
    req = urllib.request.Request(url + "/identity/token", data=data, method="POST",
                                 headers={"content-type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())["access_token"]


def _root_key(env: Kmip, name: str) -> str:
    status, body = env.api("POST", "/api/v2/keys", {
        "metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1},
        "resources": [{"type": KEY_TYPE, "name": name, "extractable": False}]})
    assert status == 201, body
    return body["resources"][0]["id"]


def _adapter(env: Kmip, crk: str, name: str) -> Dict[str, Any]:
    status, body = env.api("POST", "/api/v2/kmip_adapters", {
        "metadata": {"collectionType": ADAPTER_TYPE, "collectionTotal": 1},
        "resources": [{"name": name, "description": "pykmip", "profile": "native_1.0",
                       "profile_data": {"crk_id": crk}}]})
    assert status == 201, body
    return body["resources"][0]


def _register_cert(env: Kmip, adapter: str, who: str, name: str) -> Dict[str, Any]:
    pem = env.clients[who][0].read_text()
    status, body = env.api("POST", f"/api/v2/kmip_adapters/{adapter}/certificates", {
        "metadata": {"collectionType": CERT_TYPE, "collectionTotal": 1},
        "resources": [{"name": name, "certificate": pem}]})
    assert status == 201, body
    return body["resources"][0]


@pytest.fixture(scope="module")
def kmip_env(tmp_path_factory) -> Kmip:
    binary = find_binary()
    base = tmp_path_factory.mktemp("kmip")
    data_dir = base / "data"
    data_dir.mkdir()
    inst = run_admin(binary, data_dir, "instance", "create", "--name", "kmip")["id"]
    manager = run_admin(binary, data_dir, "apikey", "create", "--instance", inst, "--role", "Manager",
                        "--name", "kmip-manager")["apikey"]
    reader = run_admin(binary, data_dir, "apikey", "create", "--instance", inst, "--role", "Reader",
                       "--name", "kmip-reader")["apikey"]

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("keyward-test-ca", ca_key, _name("keyward-test-ca"), ca_key, ca=True)
    ca_path = base / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert("127.0.0.1", srv_key, ca.subject, ca_key,
                san=[x509.DNSName("localhost"), x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))])
    srv_cert, srv_key_path = _write_pair(base, "server", srv, srv_key)
    clients = {}
    for who in ("a", "b", "c", "d"):
        k = ec.generate_private_key(ec.SECP256R1())
        clients[who] = _write_pair(base, f"client-{who}", _cert(f"client-{who}", k, ca.subject, ca_key), k)

    kmip_port = _free_port()
    log = base / "server.log"
    proc, url = _start_server(binary, data_dir, log, [
        "--kmip-listen", f"127.0.0.1:{kmip_port}",
        "--kmip-tls-cert", str(srv_cert), "--kmip-tls-key", str(srv_key_path),
    ])
    env = Kmip(url=url, kmip_port=kmip_port, instance=inst, token=_token(url, manager),
               reader_token=_token(url, reader), ca=ca_path, clients=clients, log=log)
    try:
        yield env
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def adapter(kmip_env: Kmip) -> Dict[str, Any]:
    crk = _root_key(kmip_env, "kmip-root")
    a = _adapter(kmip_env, crk, "vsphere")
    _register_cert(kmip_env, a["id"], "a", "esxi-a")
    return a


def test_management_api_shapes_and_roles(kmip_env: Kmip, adapter: Dict[str, Any]):
    # Key Protect's role table: KMIP management is the Manager's, reads included
    status, body = kmip_env.api("GET", "/api/v2/kmip_adapters", token=kmip_env.reader_token)
    assert status == 403, body
    status, body = kmip_env.api("GET", "/api/v2/kmip_adapters?totalCount=true")
    assert status == 200, body
    assert body["metadata"]["collectionType"] == ADAPTER_TYPE
    assert [a["id"] for a in body["resources"]] == [adapter["id"]]
    assert adapter["profile"] == "native_1.0" and adapter["profile_data"]["crk_id"]
    # by name too
    status, body = kmip_env.api("GET", "/api/v2/kmip_adapters/vsphere")
    assert status == 200 and body["resources"][0]["id"] == adapter["id"]
    # a Reader cannot create adapters or register certificates
    status, body = kmip_env.api("POST", "/api/v2/kmip_adapters", {
        "metadata": {"collectionType": ADAPTER_TYPE, "collectionTotal": 1},
        "resources": [{"profile": "native_1.0", "profile_data": {"crk_id": adapter["profile_data"]["crk_id"]}}]},
        token=kmip_env.reader_token)
    assert status == 403, body
    status, body = kmip_env.api("GET", f"/api/v2/kmip_adapters/{adapter['id']}/certificates")
    assert status == 200 and body["resources"][0]["name"] == "esxi-a", body
    # a second registration of the same certificate is refused
    pem = kmip_env.clients["a"][0].read_text()
    status, body = kmip_env.api("POST", f"/api/v2/kmip_adapters/{adapter['id']}/certificates", {
        "metadata": {"collectionType": CERT_TYPE, "collectionTotal": 1},
        "resources": [{"name": "again", "certificate": pem}]})
    assert status == 409, body
    status, body = kmip_env.api("POST", f"/api/v2/kmip_adapters/{adapter['id']}/certificates", {
        "metadata": {"collectionType": CERT_TYPE, "collectionTotal": 1},
        "resources": [{"certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"}]})
    assert status == 400, body


def test_aes_key_lifecycle_over_kmip(kmip_env: Kmip, adapter: Dict[str, Any]):
    with kmip_env.client() as c:
        uid = c.create(enums.CryptographicAlgorithm.AES, 256, name="disk-key-1")
        key = c.get(uid)
        assert isinstance(key, objects.SymmetricKey)
        assert len(key.value) == 32
        assert key.cryptographic_algorithm == enums.CryptographicAlgorithm.AES
        attrs = c.get_attributes(uid, ["State", "Cryptographic Length", "Name"])
        got = {a.attribute_name.value: a.attribute_value for a in attrs[1]}
        assert got["State"].value == enums.State.PRE_ACTIVE
        assert got["Cryptographic Length"].value == 256
        c.activate(uid)
        got = {a.attribute_name.value: a.attribute_value for a in c.get_attributes(uid, ["State"])[1]}
        assert got["State"].value == enums.State.ACTIVE
        # an active key cannot be destroyed
        with pytest.raises(KmipOperationFailure) as e:
            c.destroy(uid)
        assert e.value.reason == enums.ResultReason.PERMISSION_DENIED
        assert c.locate(attributes=[c.attribute_factory.create_attribute(
            enums.AttributeType.NAME, "disk-key-1")]) == [uid]
        names = c.get_attribute_list(uid)
        assert "State" in names and "Name" in names
        # the same material again
        assert c.get(uid).value == key.value
        c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
        got = {a.attribute_name.value: a.attribute_value for a in c.get_attributes(uid, ["State"])[1]}
        assert got["State"].value == enums.State.DEACTIVATED
        c.destroy(uid)
        with pytest.raises(KmipOperationFailure):
            c.get(uid)
        for bits in (128, 192):
            assert len(c.get(c.create(enums.CryptographicAlgorithm.AES, bits)).value) == bits // 8


def test_register_a_key(kmip_env: Kmip, adapter: Dict[str, Any]):
    material = bytes(range(32))
    with kmip_env.client() as c:
        uid = c.register(objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 256, material,
                                              name="imported"))
        got = c.get(uid)
        assert got.value == material
        # a key of a length AES does not have is refused, and changes nothing
        before = c.locate()
        with pytest.raises(KmipOperationFailure):
            c.register(objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 40, b"\x01" * 5))
        assert c.locate() == before


def test_unsupported_operation_is_a_clean_error(kmip_env: Kmip, adapter: Dict[str, Any]):
    with kmip_env.client() as c:
        with pytest.raises(KmipOperationFailure) as e:
            c.create_key_pair(enums.CryptographicAlgorithm.RSA, 2048)
        assert e.value.status == enums.ResultStatus.OPERATION_FAILED
        assert e.value.reason == enums.ResultReason.OPERATION_NOT_SUPPORTED
        # the connection keeps serving
        assert c.create(enums.CryptographicAlgorithm.AES, 128)


def test_unregistered_certificate_is_refused(kmip_env: Kmip, adapter: Dict[str, Any]):
    with pytest.raises(KmipOperationFailure) as e:
        with kmip_env.client("b") as c:
            c.create(enums.CryptographicAlgorithm.AES, 128)
    assert e.value.reason == enums.ResultReason.AUTHENTICATION_NOT_SUCCESSFUL
    # nothing was created for anyone
    status, body = kmip_env.api("GET", f"/api/v2/kmip_adapters/{adapter['id']}/kmip_objects?totalCount=true")
    assert status == 200
    assert all(o["created_by_kmip_client_cert_id"] for o in body["resources"])


def test_a_removed_certificate_is_refused_at_its_next_request(kmip_env: Kmip):
    crk = _root_key(kmip_env, "kmip-root-3")
    a = _adapter(kmip_env, crk, "third")
    cert = _register_cert(kmip_env, a["id"], "d", "client-d")
    with kmip_env.client("d") as c:
        uid = c.create(enums.CryptographicAlgorithm.AES, 128)
        status, _ = kmip_env.api("DELETE", f"/api/v2/kmip_adapters/{a['id']}/certificates/{cert['id']}")
        assert status == 204
        # the same open connection: refused from the next request on
        with pytest.raises(KmipOperationFailure) as e:
            c.get(uid)
        assert e.value.reason == enums.ResultReason.AUTHENTICATION_NOT_SUCCESSFUL
    with pytest.raises(KmipOperationFailure) as e:
        with kmip_env.client("d") as c:
            c.get(uid)
    assert e.value.reason == enums.ResultReason.AUTHENTICATION_NOT_SUCCESSFUL


def test_objects_are_listed_and_deleting_one_makes_it_unavailable(kmip_env: Kmip, adapter: Dict[str, Any]):
    with kmip_env.client() as c:
        uid = c.create(enums.CryptographicAlgorithm.AES, 256)
        status, body = kmip_env.api("GET", f"/api/v2/kmip_adapters/{adapter['id']}/kmip_objects/{uid}")
        assert status == 200, body
        obj = body["resources"][0]
        assert obj["id"] == uid and obj["kmip_object_type"] == 2 and obj["state"] == 1
        status, body = kmip_env.api("GET", f"/api/v2/kmip_adapters/{adapter['id']}/kmip_objects")
        assert uid in [o["id"] for o in body["resources"]]
        # a Reader cannot delete it
        status, _ = kmip_env.api("DELETE", f"/api/v2/kmip_adapters/{adapter['id']}/kmip_objects/{uid}",
                                 token=kmip_env.reader_token)
        assert status == 403
        assert len(c.get(uid).value) == 32
        # an active object cannot be deleted
        c.activate(uid)
        status, body = kmip_env.api("DELETE", f"/api/v2/kmip_adapters/{adapter['id']}/kmip_objects/{uid}")
        assert status == 409, body
        c.revoke(enums.RevocationReasonCode.KEY_COMPROMISE, uid)
        status, body = kmip_env.api("DELETE", f"/api/v2/kmip_adapters/{adapter['id']}/kmip_objects/{uid}")
        assert status == 204, body
        with pytest.raises(KmipOperationFailure):
            c.get(uid)
        status, body = kmip_env.api("GET", f"/api/v2/kmip_adapters/{adapter['id']}/kmip_objects/{uid}")
        assert body["resources"][0]["state"] == 6 and body["resources"][0]["destroyed_by"]
    # an adapter with live objects cannot be deleted
    status, body = kmip_env.api("DELETE", f"/api/v2/kmip_adapters/{adapter['id']}")
    assert status == 409, body


def test_disabled_root_key_makes_objects_unusable(kmip_env: Kmip):
    crk = _root_key(kmip_env, "kmip-root-2")
    a = _adapter(kmip_env, crk, "second")
    _register_cert(kmip_env, a["id"], "c", "client-c")
    with kmip_env.client("c") as c:
        uid = c.create(enums.CryptographicAlgorithm.AES, 128)
        material = c.get(uid).value
    status, body = kmip_env.api("POST", f"/api/v2/keys/{crk}/actions/disable", {})
    assert status == 204, body
    with kmip_env.client("c") as c:
        for op in (lambda: c.get(uid), lambda: c.activate(uid),
                   lambda: c.create(enums.CryptographicAlgorithm.AES, 128)):
            with pytest.raises(KmipOperationFailure) as e:
                op()
            assert e.value.reason == enums.ResultReason.PERMISSION_DENIED
    # the rule of Key Protect: enable waits 30 s after a disable; the key comes back usable
    # only through enable, which this test does not wait for.
    status, body = kmip_env.api("GET", f"/api/v2/kmip_adapters/{a['id']}/kmip_objects/{uid}")
    assert status == 200 and body["resources"][0]["state"] == 1
    assert len(material) == 16


def _raw_connection(env: Kmip, who: str = "a") -> ssl.SSLSocket:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(env.ca))
    ctx.load_cert_chain(str(env.clients[who][0]), str(env.clients[who][1]))
    ctx.check_hostname = False
    sock = socket.create_connection(("127.0.0.1", env.kmip_port), timeout=10)
    return ctx.wrap_socket(sock)


def _read_response(s: ssl.SSLSocket) -> bytes:
    head = b""
    while len(head) < 8:
        chunk = s.recv(8 - len(head))
        if not chunk:
            return head
        head += chunk
    length = struct.unpack(">I", head[4:8])[0]
    body = b""
    while len(body) < length:
        chunk = s.recv(length - len(body))
        if not chunk:
            break
        body += chunk
    return head + body


def _closed(s: ssl.SSLSocket) -> bool:
    try:
        return s.recv(1) == b""
    except (ssl.SSLError, OSError):
        return True


@pytest.mark.parametrize("payload", [
    b"\x42\x00\x78\x01\xff\xff\xff\xf0",                      # a huge declared length
    b"\x42\x00\x7b\x01\x00\x00\x00\x00",                      # a Response Message
    b"\x42\x00\x78\x01\x00\x00\x00\x10" + b"\x42\x00\x77\x01\x00\x00\x00\x20" + b"\x00" * 8,  # inner overrun
    b"\x42\x00\x78\x01\x00\x00\x00\x08" + b"\x42\x00\x77\x0c\x00\x00\x00\x00",  # unknown type
    b"\x42\x00\x78\x01\x00\x00\x00\x00",                      # an empty request
])
def test_malformed_ttlv_gets_an_error_and_the_server_keeps_serving(kmip_env: Kmip, adapter, payload):
    s = _raw_connection(kmip_env)
    try:
        s.sendall(payload)
        resp = _read_response(s)
        # an error response (a Response Message) or a closed connection
        if resp:
            assert resp[:3] == b"\x42\x00\x7b", resp[:16]
            assert b"\x42\x00\x7f\x05\x00\x00\x00\x04\x00\x00\x00\x01" in resp  # Operation Failed
    finally:
        s.close()
    with kmip_env.client() as c:
        assert c.create(enums.CryptographicAlgorithm.AES, 128)


def test_a_nested_bomb_is_refused(kmip_env: Kmip, adapter):
    inner = b""
    for _ in range(40):
        inner = b"\x42\x00\x01\x01" + struct.pack(">I", len(inner)) + inner
    msg = b"\x42\x00\x78\x01" + struct.pack(">I", len(inner)) + inner
    s = _raw_connection(kmip_env)
    try:
        s.sendall(msg)
        resp = _read_response(s)
        assert not resp or resp[:3] == b"\x42\x00\x7b"
        assert _closed(s)
    finally:
        s.close()
