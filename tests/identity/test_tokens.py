import datetime as dt
import time

import jwt
import pytest

from nsmd.identity import tokens
from nsmd.identity.ca import init_ca, issue_svid
from nsmd.identity.svid import load_svid_dir


@pytest.fixture(scope="module")
def svid(tmp_path_factory):
    base = tmp_path_factory.mktemp("t")
    init_ca(str(base / "ca"), "example.org")
    return load_svid_dir(issue_svid(str(base / "ca"), "spiffe://example.org/node/a",
                                    str(base / "a"), dt.timedelta(hours=1)))


def test_signed_tokens_name_signer_audience_and_expiry(svid):
    now = time.time()
    token, exp = tokens.sign(svid, "spiffe://example.org/node/b", now, 600)
    assert exp == pytest.approx(now + 600)
    claims = tokens.verify(token, svid.chain[0].public_key())
    assert claims == tokens.read(token) == tokens.Claims(
        "spiffe://example.org/node/a", "spiffe://example.org/node/b", exp)
    assert jwt.get_unverified_header(token)["alg"] == "ES256"


def test_a_token_never_outlives_its_svid(svid):
    now = time.time()
    _, exp = tokens.sign(svid, "spiffe://example.org/node/b", now, 7200)
    assert exp == svid.not_after.timestamp() < now + 7200


def test_unsigned_foreign_and_malformed_tokens_are_refused(svid, tmp_path):
    claims = {"sub": "spiffe://example.org/node/a", "aud": "x", "exp": time.time() + 60}
    none = jwt.encode(claims, None, algorithm="none")
    with pytest.raises(tokens.TokenError, match="ES256"):
        tokens.read(none)
    with pytest.raises(tokens.TokenError):
        tokens.verify(none, svid.chain[0].public_key())
    init_ca(str(tmp_path / "other"), "example.org")
    other = load_svid_dir(issue_svid(str(tmp_path / "other"), "spiffe://example.org/node/a",
                                     str(tmp_path / "o")))
    token, _ = tokens.sign(other, "x", time.time(), 60)
    with pytest.raises(tokens.SignatureError):
        tokens.verify(token, svid.chain[0].public_key())
    for bad in ("", "a.b", "a.b.c", jwt.encode({"sub": 1}, svid.key, algorithm="ES256")):
        with pytest.raises(tokens.TokenError):
            tokens.read(bad)
