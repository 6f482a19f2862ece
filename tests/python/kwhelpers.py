"""Small helpers shared by the SDK tests (request bodies, response bodies, error bodies)."""

from __future__ import annotations

import base64
import io
import json
import uuid
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional

import pytest
from ibm_cloud_sdk_core import ApiException, DetailedResponse

KEY_TYPE = "application/vnd.ibm.kms.key+json"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def jbody(obj: Any) -> io.BytesIO:
    """A request body the way the SDK's own examples pass it (a binary stream of JSON)."""
    return io.BytesIO(json.dumps(obj).encode("utf-8"))


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def key_envelope(**resource: Any) -> io.BytesIO:
    res = {"type": KEY_TYPE}
    res.update({k: v for k, v in resource.items() if v is not None})
    return jbody({"metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1}, "resources": [res]})


def result(resp: DetailedResponse) -> Dict[str, Any]:
    """The decoded JSON body. The SDK decodes only `application/json`; anything else comes
    back as a raw requests.Response, which is decoded here so that one content-type test,
    not every test, reports such a deviation."""
    res = resp.get_result()
    if isinstance(res, dict):
        return res
    assert res is not None, f"expected a JSON body, got none (status {resp.get_status_code()})"
    return res.json()


def first_resource(resp: DetailedResponse) -> Dict[str, Any]:
    body = result(resp)
    assert "resources" in body, body
    assert len(body["resources"]) >= 1, body
    return body["resources"][0]


def error_body(err: ApiException) -> Dict[str, Any]:
    assert err.http_response is not None, "ApiException carries no HTTP response"
    try:
        return err.http_response.json()
    except ValueError as exc:  # not JSON
        raise AssertionError(f"error body is not JSON: {err.http_response.text!r}") from exc


def reasons(err: ApiException) -> List[Dict[str, Any]]:
    body = error_body(err)
    res = body.get("resources") or [{}]
    return res[0].get("reasons") or []


def reason_code(err: ApiException) -> Optional[str]:
    """resources[0].reasons[0].code of a Key Protect error envelope."""
    rs = reasons(err)
    return rs[0].get("code") if rs else None


def error_msg(err: ApiException) -> Optional[str]:
    res = error_body(err).get("resources") or [{}]
    return res[0].get("errorMsg")


class Raised:
    err: ApiException


@contextmanager
def api_error(status: int, code: Optional[str] = None) -> Iterator[Raised]:
    """Expect an ApiException with this HTTP status and (if given) reasons[0].code."""
    box = Raised()
    with pytest.raises(ApiException) as info:
        yield box
    err = info.value
    box.err = err
    body_text = err.http_response.text if err.http_response is not None else None
    assert err.status_code == status, f"expected HTTP {status}, got {err.status_code}: {body_text}"
    if code is not None:
        body = error_body(err)
        assert body.get("metadata", {}).get("collectionType") == "application/vnd.ibm.kms.error+json", body
        assert reason_code(err) == code, f"expected reason {code}, got body {body_text}"


def create_key(client, instance: str, *, name: Optional[str] = None, extractable: Optional[bool],
               prefer: Optional[str] = None, **resource: Any) -> Dict[str, Any]:
    resp = client.create_key(
        bluemix_instance=instance,
        key_create_body=key_envelope(name=name or unique_name("k"), extractable=extractable, **resource),
        prefer=prefer,
    )
    assert resp.get_status_code() == 201, resp
    return first_resource(resp)


def wrap(client, instance: str, key_id: str, body: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    resp = client.wrap_key(id=key_id, bluemix_instance=instance,
                           key_action_wrap_body=None if body is None else jbody(body))
    assert resp.get_status_code() == 200, resp
    return result(resp)


def unwrap(client, instance: str, key_id: str, body: Dict[str, Any]) -> Dict[str, Any]:
    resp = client.unwrap_key(id=key_id, bluemix_instance=instance, key_action_unwrap_body=jbody(body))
    assert resp.get_status_code() == 200, resp
    return result(resp)


def decode_wrapped(ciphertext: str) -> Dict[str, Any]:
    """Outer form of a wrapped DEK: base64 of a JSON object (decisions.md)."""
    return json.loads(unb64(ciphertext))
