import base64
import json

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.api import tokens
from chalicelib.core.errors import Unauthorized


def test_issued_token_carries_instance_and_expiry(aws_mock):
    claims = tokens.verify(tokens.issue("user-1", "instance-1"))
    assert claims["sub"] == "user-1" and claims["instance_id"] == "instance-1"
    assert claims["exp"] > claims["iat"]


def test_expired_token_is_refused(aws_mock, settings_env):
    settings_env(TFBATCH_TOKEN_TTL_SECONDS=-10)
    token = tokens.issue("user-1", "instance-1")
    with pytest.raises(Unauthorized) as refused:
        tokens.verify(token)
    assert refused.value.code == "token_expired"


def test_forged_and_tampered_tokens_are_refused(aws_mock):
    forged = jwt.encode({"iss": "tfbatch", "sub": "u", "instance_id": "i", "iat": 1, "exp": 4102444800},
                        "not-the-signing-key-of-this-service", algorithm="HS256")
    unsigned = jwt.encode({"iss": "tfbatch", "sub": "u", "instance_id": "i", "iat": 1, "exp": 4102444800},
                          None, algorithm="none")
    good = tokens.issue("user-1", "instance-1")
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for token in (forged, unsigned, tampered, "garbage"):
        with pytest.raises(Unauthorized) as refused:
            tokens.verify(token)
        assert refused.value.code == "invalid_token"
        assert token not in refused.value.message


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(username=st.uuids(), instance_id=st.uuids(), ttl=st.integers(1800, 10 ** 7))
def test_the_ibm_client_can_read_every_token_with_plain_base64(aws_mock, settings_env, username, instance_id, ttl):
    """The IBM client decodes the payload with base64.b64decode, which drops base64url's '-' and
    '_': the payload must hold neither, and its exp must be a number."""
    settings_env(TFBATCH_TOKEN_TTL_SECONDS=ttl)
    payload = tokens.issue(str(username), str(instance_id)).split(".")[1]
    assert "-" not in payload and "_" not in payload
    claims = json.loads(base64.b64decode(payload + "=" * (len(payload) % 4)).decode())
    assert isinstance(claims["exp"], int) and claims["instance_id"] == str(instance_id)
