import jwt
import pytest

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
