"""Secure import (import tokens) through IBM's Python SDK, with the client-side crypto done
the way a Key Protect user does it: RSA-OAEP (SHA-256, MGF1-SHA-256, no label) for the key
material and AES-GCM (96-bit IV, no AAD) for the token's nonce under that material."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Optional

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kwhelpers import (
    api_error,
    b64,
    error_body,
    error_msg,
    first_resource,
    jbody,
    key_envelope,
    reasons,
    result,
    unb64,
    unique_name,
    unwrap,
    wrap,
)

OAEP_SHA256 = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
OAEP_SHA1 = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)


def parse_date(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def public_key(token: dict) -> rsa.RSAPublicKey:
    pem = unb64(token["payload"])
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----\n"), pem[:40]
    assert pem.rstrip().endswith(b"-----END PUBLIC KEY-----"), pem[-40:]
    key = serialization.load_pem_public_key(pem)
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def secure_fields(token: dict, material: bytes, *, nonce: Optional[bytes] = None,
                  nonce_key: Optional[bytes] = None, iv: Optional[bytes] = None,
                  oaep=OAEP_SHA256, algorithm: Optional[str] = "RSAES_OAEP_SHA_256") -> dict:
    """payload / encryptedNonce / iv / encryptionAlgorithm for a secure import or rotate."""
    encrypted_material = public_key(token).encrypt(material, oaep)
    iv = os.urandom(12) if iv is None else iv
    plain_nonce = unb64(token["nonce"]) if nonce is None else nonce
    encrypted_nonce = AESGCM(material if nonce_key is None else nonce_key).encrypt(iv, plain_nonce, None)
    fields = {"payload": b64(encrypted_material), "encryptedNonce": b64(encrypted_nonce), "iv": b64(iv)}
    if algorithm is not None:
        fields["encryptionAlgorithm"] = algorithm
    return fields


class Tokens:
    """The import token of one instance as the tests last fetched it. Every POST made by a
    test goes through `fresh` (or calls `forget`) so `current` never hands out a replaced one."""

    def __init__(self, client, instance):
        self.client = client
        self.instance = instance
        self._current = None

    def post(self, expiration: int = 600, retrievals: int = 1) -> dict:
        resp = self.client.post_import_token(bluemix_instance=self.instance, expiration=expiration,
                                             max_allowed_retrievals=retrievals)
        self._current = None
        assert resp.get_status_code() == 200, resp
        return result(resp)

    def get(self) -> dict:
        resp = self.client.get_import_token(bluemix_instance=self.instance)
        assert resp.get_status_code() == 200, resp
        return result(resp)

    def fresh(self, expiration: int = 600, retrievals: int = 1) -> dict:
        self.post(expiration, retrievals)
        token = self.get()
        self._current = token
        return token

    def current(self) -> dict:
        if self._current is None:
            self.fresh(expiration=3600, retrievals=1)
        return self._current

    def forget(self) -> None:
        self._current = None


@pytest.fixture(scope="module")
def kpi(keyward):
    return keyward.client_for("py-import")


@pytest.fixture(scope="module")
def inst(keyward) -> str:
    return keyward.instances["py-import"]


@pytest.fixture(scope="module")
def tokens(kpi, inst) -> Tokens:
    return Tokens(kpi, inst)


def secure_create(client, instance, fields: dict, *, name: Optional[str] = None, extractable=False):
    return client.create_key(
        bluemix_instance=instance,
        key_create_body=key_envelope(name=name or unique_name("sec"), extractable=extractable, **fields),
        prefer="return=representation",
    )


def assert_same_error(errors):
    first = errors[0]
    for other in errors[1:]:
        assert error_msg(other) == error_msg(first), (error_body(first), error_body(other))
        assert reasons(other) == reasons(first), (error_body(first), error_body(other))


# --------------------------------------------------------------------------------------------
# import token lifecycle
# --------------------------------------------------------------------------------------------


def test_import_token_post_and_get(tokens):
    posted = tokens.post(expiration=900, retrievals=3)
    assert posted["maxAllowedRetrievals"] == 3
    assert posted["remainingRetrievals"] == 3
    assert posted.get("expiration") == 900
    created = parse_date(posted["creationDate"])
    expires = parse_date(posted["expirationDate"])
    assert (expires - created).total_seconds() == 900

    first = tokens.get()
    assert first["remainingRetrievals"] == 2
    assert first["maxAllowedRetrievals"] == 3
    assert first["creationDate"] == posted["creationDate"]
    assert first["expirationDate"] == posted["expirationDate"]
    assert public_key(first).key_size == 4096
    assert len(unb64(first["nonce"])) == 12

    second = tokens.get()
    assert second["remainingRetrievals"] == 1
    assert second["nonce"] == first["nonce"], "the nonce is fixed for the life of a token"
    assert second["payload"] == first["payload"]
    assert tokens.get()["remainingRetrievals"] == 0

    for _ in range(2):  # the counter never goes below 0
        with api_error(409, "IMPORT_TOKEN_RETRIEVALS_EXHAUSTED_ERR"):
            tokens.client.get_import_token(bluemix_instance=tokens.instance)


def test_import_token_single_retrieval(tokens):
    token = tokens.fresh(expiration=600, retrievals=1)
    assert token["remainingRetrievals"] == 0
    with api_error(409, "IMPORT_TOKEN_RETRIEVALS_EXHAUSTED_ERR"):
        tokens.client.get_import_token(bluemix_instance=tokens.instance)


def test_new_token_replaces_previous(tokens):
    a = tokens.fresh()
    b = tokens.fresh()
    assert a["nonce"] != b["nonce"]
    assert a["payload"] != b["payload"]


def test_import_token_range_boundaries_accepted(tokens):
    low = tokens.post(expiration=300, retrievals=500)
    assert low["maxAllowedRetrievals"] == 500
    assert (parse_date(low["expirationDate"]) - parse_date(low["creationDate"])).total_seconds() == 300
    high = tokens.post(expiration=86400, retrievals=1)
    assert (parse_date(high["expirationDate"]) - parse_date(high["creationDate"])).total_seconds() == 86400
    tokens.forget()


INVALID_TOKEN_PARAMS = [
    (299, 1, "expiration"),
    (86401, 1, "expiration"),
    (600.5, 1, "expiration"),
    ("600", 1, "expiration"),
    (600, 0, "maxAllowedRetrievals"),
    (600, 501, "maxAllowedRetrievals"),
    (600, 1.5, "maxAllowedRetrievals"),
    (600, "2", "maxAllowedRetrievals"),
]


def test_import_token_invalid_params_leave_previous_token(tokens):
    tokens.post(expiration=600, retrievals=len(INVALID_TOKEN_PARAMS) + 1)
    before = tokens.get()
    for expiration, retrievals, field in INVALID_TOKEN_PARAMS:
        with api_error(400, "INVALID_FIELD_ERR") as e:
            tokens.client.post_import_token(bluemix_instance=tokens.instance, expiration=expiration,
                                            max_allowed_retrievals=retrievals)
        target = reasons(e.err)[0].get("target", {}).get("name")
        assert target == field, (expiration, retrievals, error_body(e.err))
        after = tokens.get()
        assert after["nonce"] == before["nonce"], "a refused POST must not replace the token"
        assert after["payload"] == before["payload"]
        assert after["remainingRetrievals"] == before["remainingRetrievals"] - 1
        before = after
    tokens.forget()


def test_no_token_in_instance(keyward, tokens):
    client = keyward.client_for("py-notoken")
    instance = keyward.instances["py-notoken"]
    with api_error(404, "IMPORT_TOKEN_NOT_FOUND_ERR"):
        client.get_import_token(bluemix_instance=instance)
    # an envelope built from another instance's token: this instance has none
    fields = secure_fields(tokens.current(), os.urandom(32))
    with api_error(404, "IMPORT_TOKEN_NOT_FOUND_ERR"):
        secure_create(client, instance, fields)


def test_reader_cannot_use_import_tokens(keyward, inst):
    reader = keyward.client_for("py-import", "Reader")
    with api_error(403):
        reader.post_import_token(bluemix_instance=inst, expiration=600, max_allowed_retrievals=1)
    with api_error(403):
        reader.get_import_token(bluemix_instance=inst)


# --------------------------------------------------------------------------------------------
# secure import
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 16, 24], ids=["AES-256", "AES-128", "AES-192"])
def test_secure_import_then_wrap_unwrap(kpi, inst, tokens, size):
    tokens.post(expiration=600, retrievals=1)
    token = tokens.get()  # the single retrieval: the token stays usable for imports
    material = os.urandom(size)
    fields = secure_fields(token, material)
    resp = secure_create(kpi, inst, fields)
    assert resp.get_status_code() == 201
    key = first_resource(resp)
    assert key["imported"] is True
    assert key["extractable"] is False
    assert key["state"] == 1
    assert "payload" not in key
    for name in ("encryptedNonce", "iv", "encryptionAlgorithm"):
        assert name not in key, f"create-only field {name} echoed"

    meta = first_resource(kpi.get_key_metadata(id=key["id"], bluemix_instance=inst))
    assert (meta["imported"], meta["extractable"], meta["state"]) == (True, False, 1)
    got = first_resource(kpi.get_key(id=key["id"], bluemix_instance=inst))
    assert "payload" not in got

    dek = os.urandom(32)
    wrapped = wrap(kpi, inst, key["id"], {"plaintext": b64(dek), "aad": ["imported", str(size)]})
    assert wrapped["keyVersion"]["id"] == key["keyVersion"]["id"]
    out = unwrap(kpi, inst, key["id"], {"ciphertext": wrapped["ciphertext"], "aad": ["imported", str(size)]})
    assert unb64(out["plaintext"]) == dek
    generated = wrap(kpi, inst, key["id"], None)
    assert unb64(unwrap(kpi, inst, key["id"], {"ciphertext": generated["ciphertext"]})["plaintext"]) \
        == unb64(generated["plaintext"])


def test_one_token_imports_several_keys(kpi, inst, tokens):
    token = tokens.fresh(expiration=600, retrievals=1)
    ids = set()
    for _ in range(3):
        resp = secure_create(kpi, inst, secure_fields(token, os.urandom(32)))
        assert resp.get_status_code() == 201
        ids.add(first_resource(resp)["id"])
    assert len(ids) == 3


def test_encryption_algorithm_defaults_to_sha256(kpi, inst, tokens):
    fields = secure_fields(tokens.current(), os.urandom(32), algorithm=None)
    assert "encryptionAlgorithm" not in fields
    resp = secure_create(kpi, inst, fields)
    assert resp.get_status_code() == 201
    assert first_resource(resp)["imported"] is True


def test_oaep_sha1_accepted_when_declared(kpi, inst, tokens):
    fields = secure_fields(tokens.current(), os.urandom(32), oaep=OAEP_SHA1, algorithm="RSAES_OAEP_SHA_1")
    resp = secure_create(kpi, inst, fields)
    assert resp.get_status_code() == 201


def test_wrong_nonce(kpi, inst, tokens):
    token = tokens.current()
    wrong = os.urandom(12)
    assert wrong != unb64(token["nonce"])
    with api_error(400, "INCORRECT_NONCE_ERR"):
        secure_create(kpi, inst, secure_fields(token, os.urandom(32), nonce=wrong))


def test_nonce_of_replaced_token(kpi, inst, tokens):
    old = tokens.fresh()
    new = tokens.fresh()
    fields = secure_fields(new, os.urandom(32), nonce=unb64(old["nonce"]))
    with api_error(400, "INCORRECT_NONCE_ERR"):
        secure_create(kpi, inst, fields)


def test_flipped_encrypted_nonce(kpi, inst, tokens):
    token = tokens.current()
    fields = secure_fields(token, os.urandom(32))
    flipped = bytearray(unb64(fields["encryptedNonce"]))
    flipped[3] ^= 0x80
    fields["encryptedNonce"] = b64(bytes(flipped))
    with api_error(400, "INCORRECT_NONCE_IV_ERR"):
        secure_create(kpi, inst, fields)


def test_nonce_under_other_key_or_iv(kpi, inst, tokens):
    token = tokens.current()
    other_iv = secure_fields(token, os.urandom(32))
    other_iv["iv"] = b64(os.urandom(12))
    with api_error(400, "INCORRECT_NONCE_IV_ERR"):
        secure_create(kpi, inst, other_iv)
    other_key = secure_fields(token, os.urandom(32), nonce_key=os.urandom(32))
    with api_error(400, "INCORRECT_NONCE_IV_ERR"):
        secure_create(kpi, inst, other_key)


def test_invalid_payload_errors_are_identical(kpi, inst, tokens):
    """Wrong material length, corrupt/truncated RSA ciphertext, wrong OAEP hash, PKCS#1 v1.5,
    material for a replaced token: one uniform 400 INVALID_FIELD_ERR (target payload)."""
    replaced = tokens.fresh()
    for_replaced = secure_fields(replaced, os.urandom(32))
    token = tokens.fresh()
    pub = public_key(token)

    cases = {}
    for size in (20, 31, 48, 64):
        cases[f"length-{size}"] = secure_fields(token, os.urandom(size), nonce_key=os.urandom(32))
    corrupt = secure_fields(token, os.urandom(32))
    raw = bytearray(unb64(corrupt["payload"]))
    raw[len(raw) // 2] ^= 0x01
    corrupt["payload"] = b64(bytes(raw))
    cases["corrupt"] = corrupt
    truncated = secure_fields(token, os.urandom(32))
    truncated["payload"] = b64(unb64(truncated["payload"])[:-1])
    cases["truncated"] = truncated
    cases["sha1-declared-sha256"] = secure_fields(token, os.urandom(32), oaep=OAEP_SHA1)
    material = os.urandom(32)
    pkcs1 = secure_fields(token, material)
    pkcs1["payload"] = b64(pub.encrypt(material, padding.PKCS1v15()))
    cases["pkcs1v15"] = pkcs1
    cases["replaced-token"] = {**for_replaced,
                               **{k: v for k, v in secure_fields(token, os.urandom(32)).items()
                                  if k != "payload"}}

    errors = []
    for label, fields in cases.items():
        with api_error(400, "INVALID_FIELD_ERR") as e:
            secure_create(kpi, inst, fields, name=unique_name(label))
        assert reasons(e.err)[0].get("target", {}).get("name") == "payload", (label, error_body(e.err))
        errors.append(e.err)
    assert_same_error(errors)


def test_token_import_refuses_extractable_true(kpi, inst, tokens):
    fields = secure_fields(tokens.current(), os.urandom(32))
    with api_error(400, "INVALID_FIELD_ERR"):
        secure_create(kpi, inst, fields, extractable=True)


@pytest.mark.parametrize("missing", ["iv", "encryptedNonce"])
def test_only_one_of_nonce_and_iv(kpi, inst, tokens, missing):
    fields = secure_fields(tokens.current(), os.urandom(32))
    del fields[missing]
    with api_error(400, "INVALID_FIELD_ERR") as e:
        secure_create(kpi, inst, fields)
    assert reasons(e.err)[0].get("target", {}).get("name") in ("iv", "encryptedNonce"), error_body(e.err)


def test_iv_must_be_12_bytes(kpi, inst, tokens):
    fields = secure_fields(tokens.current(), os.urandom(32), iv=os.urandom(16))
    with api_error(400, "INVALID_FIELD_ERR") as e:
        secure_create(kpi, inst, fields)
    assert reasons(e.err)[0].get("target", {}).get("name") == "iv", error_body(e.err)


@pytest.mark.parametrize("algorithm", ["RSAES_PKCS1_V1_5", "RSAES_OAEP_SHA_512", "rsaes_oaep_sha_256x"])
def test_unknown_encryption_algorithm(kpi, inst, tokens, algorithm):
    fields = secure_fields(tokens.current(), os.urandom(32), algorithm=algorithm)
    with api_error(400, "INVALID_FIELD_ERR"):
        secure_create(kpi, inst, fields)


# --------------------------------------------------------------------------------------------
# rotate of an imported key
# --------------------------------------------------------------------------------------------


def import_key(kpi, inst, token, material):
    resp = secure_create(kpi, inst, secure_fields(token, material))
    assert resp.get_status_code() == 201
    return first_resource(resp)


def test_rotate_imported_key_with_token(kpi, inst, tokens):
    key = import_key(kpi, inst, tokens.fresh(), os.urandom(32))
    v1 = key["keyVersion"]["id"]
    dek = os.urandom(32)
    aad = ["before-rotation"]
    old = wrap(kpi, inst, key["id"], {"plaintext": b64(dek), "aad": aad})

    new_token = tokens.fresh()
    resp = kpi.rotate_key(id=key["id"], bluemix_instance=inst,
                          key_action_rotate_body=jbody(secure_fields(new_token, os.urandom(24))))
    assert resp.get_status_code() == 204

    meta = first_resource(kpi.get_key_metadata(id=key["id"], bluemix_instance=inst))
    v2 = meta["keyVersion"]["id"]
    assert v2 != v1
    assert meta["imported"] is True and meta["extractable"] is False and meta["state"] == 1
    parse_date(meta["lastRotateDate"])

    out = unwrap(kpi, inst, key["id"], {"ciphertext": old["ciphertext"], "aad": aad})
    assert unb64(out["plaintext"]) == dek
    assert out["rewrappedKeyVersion"]["id"] == v2
    assert unb64(unwrap(kpi, inst, key["id"], {"ciphertext": out["ciphertext"], "aad": aad})["plaintext"]) == dek

    fresh = wrap(kpi, inst, key["id"], {"plaintext": b64(dek)})
    assert fresh["keyVersion"]["id"] == v2
    assert unb64(unwrap(kpi, inst, key["id"], {"ciphertext": fresh["ciphertext"]})["plaintext"]) == dek


def test_rotate_imported_key_requires_payload(kpi, inst, tokens):
    key = import_key(kpi, inst, tokens.current(), os.urandom(32))
    with api_error(400, "KEY_PAYLOAD_REQ_ERR"):
        kpi.rotate_key(id=key["id"], bluemix_instance=inst)
    with api_error(400, "KEY_PAYLOAD_REQ_ERR"):
        kpi.rotate_key(id=key["id"], bluemix_instance=inst, key_action_rotate_body=jbody({}))
    meta = first_resource(kpi.get_key_metadata(id=key["id"], bluemix_instance=inst))
    assert meta["keyVersion"]["id"] == key["keyVersion"]["id"]


def test_rotate_imported_key_with_wrong_nonce(kpi, inst, tokens):
    token = tokens.current()
    key = import_key(kpi, inst, token, os.urandom(32))
    fields = secure_fields(token, os.urandom(32), nonce=os.urandom(12))
    with api_error(400, "INCORRECT_NONCE_ERR"):
        kpi.rotate_key(id=key["id"], bluemix_instance=inst, key_action_rotate_body=jbody(fields))
    meta = first_resource(kpi.get_key_metadata(id=key["id"], bluemix_instance=inst))
    assert meta["keyVersion"]["id"] == key["keyVersion"]["id"]
    assert "lastRotateDate" not in meta
