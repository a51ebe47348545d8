import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner

from linegate.signing import (
    IN_TOTO_PAYLOAD_TYPE,
    SignatureError,
    dsse_sign,
    dsse_verify,
    dsse_verify_parsed,
    generate_private_key,
    key_id,
    load_public_key,
    pae,
    parse_envelope,
    public_key_pem,
)

STATEMENT = json.dumps({"_type": "https://in-toto.io/Statement/v1", "subject": []}).encode()


def test_pae_matches_the_dsse_spec_example():
    # Test vector from the DSSE protocol document.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


@pytest.mark.parametrize(
    "make_key",
    [
        lambda: ec.generate_private_key(ec.SECP256R1()),
        lambda: ec.generate_private_key(ec.SECP384R1()),
        ed25519.Ed25519PrivateKey.generate,
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ],
    ids=["p256", "p384", "ed25519", "rsa2048"],
)
def test_sign_then_verify_round_trips_for_every_key_type(make_key):
    key = make_key()
    envelope = dsse_sign(STATEMENT, IN_TOTO_PAYLOAD_TYPE, key)
    verified = dsse_verify(envelope, [key.public_key()])
    assert verified.payload == STATEMENT
    assert verified.signer_key_ids == (key_id(key.public_key()),)


def test_verifies_an_envelope_signed_by_securesystemslib_without_a_keyid():
    key = generate_private_key()
    signer = CryptoSigner(key)
    envelope = Envelope(payload=STATEMENT, payload_type=IN_TOTO_PAYLOAD_TYPE, signatures={})
    envelope.sign(signer)
    as_json = envelope.to_dict()
    for sig in as_json["signatures"]:
        sig.pop("keyid")  # real tools often omit it; DSSE makes it optional
    assert dsse_verify(as_json, [key.public_key()]).payload == STATEMENT


def test_accepts_url_safe_unpadded_base64():
    key = generate_private_key()
    envelope = dsse_sign(STATEMENT, IN_TOTO_PAYLOAD_TYPE, key, with_keyid=False)
    sig = base64.b64decode(envelope["signatures"][0]["sig"])
    envelope["signatures"][0]["sig"] = base64.urlsafe_b64encode(sig).decode().rstrip("=")
    envelope["payload"] = base64.urlsafe_b64encode(STATEMENT).decode().rstrip("=")
    assert dsse_verify(envelope, [key.public_key()]).payload == STATEMENT


def test_tampered_payload_is_refused():
    key = generate_private_key()
    envelope = dsse_sign(STATEMENT, IN_TOTO_PAYLOAD_TYPE, key)
    envelope["payload"] = base64.b64encode(STATEMENT.replace(b"[]", b"[1]")).decode()
    with pytest.raises(SignatureError, match="no signature verifies"):
        dsse_verify(envelope, [key.public_key()])


def test_changed_payload_type_is_refused():
    key = generate_private_key()
    envelope = dsse_sign(STATEMENT, IN_TOTO_PAYLOAD_TYPE, key)
    envelope["payloadType"] = "application/json"
    with pytest.raises(SignatureError):
        dsse_verify(envelope, [key.public_key()])


def test_signature_by_an_untrusted_key_is_refused_even_with_a_matching_keyid():
    trusted, attacker = generate_private_key(), generate_private_key()
    envelope = dsse_sign(STATEMENT, IN_TOTO_PAYLOAD_TYPE, attacker)
    envelope["signatures"][0]["keyid"] = key_id(trusted.public_key())
    with pytest.raises(SignatureError):
        dsse_verify(envelope, [trusted.public_key()])


def test_keys_given_by_key_id_verify_as_a_list_of_them_does():
    trusted, attacker = generate_private_key(), generate_private_key()
    by_id = {key_id(trusted.public_key()): trusted.public_key()}
    envelope = dsse_sign(STATEMENT, IN_TOTO_PAYLOAD_TYPE, trusted)
    assert dsse_verify(envelope, by_id).signer_key_ids == tuple(by_id)
    assert dsse_verify_parsed(*parse_envelope(envelope), by_id).payload == STATEMENT
    forged = dsse_sign(STATEMENT, IN_TOTO_PAYLOAD_TYPE, attacker)
    forged["signatures"][0]["keyid"] = key_id(trusted.public_key())
    with pytest.raises(SignatureError):
        dsse_verify(forged, by_id)
    with pytest.raises(SignatureError):
        dsse_verify_parsed(*parse_envelope(forged), by_id)


def test_threshold_counts_distinct_keys():
    a, b = generate_private_key(), generate_private_key()
    env = dsse_sign(STATEMENT, IN_TOTO_PAYLOAD_TYPE, a)
    env["signatures"].append(dsse_sign(STATEMENT, IN_TOTO_PAYLOAD_TYPE, b)["signatures"][0])
    assert len(dsse_verify(env, [a.public_key(), b.public_key()], threshold=2).signer_key_ids) == 2
    env["signatures"][1] = env["signatures"][0]  # the same signature twice is one signer
    with pytest.raises(SignatureError, match="1 of 2"):
        dsse_verify(env, [a.public_key(), b.public_key()], threshold=2)


@pytest.mark.parametrize(
    ("envelope", "message"),
    [
        ([], "JSON object"),
        ({"payload": "e30=", "signatures": [{"sig": "AA=="}]}, "payloadType"),
        ({"payloadType": "x", "signatures": [{"sig": "AA=="}]}, "no payload"),
        ({"payloadType": "x", "payload": "e30=", "signatures": []}, "no signatures"),
        ({"payloadType": "x", "payload": "!!!", "signatures": [{"sig": "AA=="}]}, "base64"),
        ({"payloadType": "x", "payload": "e30=", "signatures": [{"sig": ""}]}, "empty"),
        ({"payloadType": "x", "payload": "e30=", "signatures": [{"keyid": "k"}]}, "no 'sig'"),
    ],
)
def test_malformed_envelopes_are_refused_with_the_reason(envelope, message):
    with pytest.raises(SignatureError, match=message):
        dsse_verify(envelope, [generate_private_key().public_key()])


def test_weak_and_unknown_public_keys_are_refused():
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(SignatureError, match="2048"):
        load_public_key(public_key_pem(weak.public_key()))
    with pytest.raises(SignatureError, match="not a PEM"):
        load_public_key("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
