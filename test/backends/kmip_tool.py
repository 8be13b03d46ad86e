"""Test helper for the kmip backend, run with PyKMIP's Python (pykmip-python, scripts/setup/71-pykmip.sh).

  certs DIR                         a CA, a server certificate for 127.0.0.1 and client certificates
                                    (client = "atrest", other = "someone-else"), PEM, in DIR
  create HOST PORT DIR NAME [WHO]   PyKMIP's client creates and activates an AES-256 key named NAME
                                    (usable for Encrypt/Decrypt); prints its Unique Identifier
  locate HOST PORT DIR NAME         PyKMIP's client locates active symmetric keys named NAME (JSON)
  revoke HOST PORT DIR UID          PyKMIP's client revokes (deactivates) key UID
  codec                             reads JSON cases on stdin; encodes/decodes each with PyKMIP's
                                    own TTLV message classes (KMIP 1.4); prints JSON results

Used to cross-check our TTLV codec (src/backends/kmip/) against PyKMIP's and to provision keys the
way an operator's KMIP tooling would. Certificates are for tests only.
"""

import datetime
import ipaddress
import json
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kmip.core import enums, utils
from kmip.core import objects as cobjects
from kmip.core.messages import contents, messages, payloads
from kmip.core import attributes as cattributes
from kmip.core.factories import attributes as attribute_factory


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _cert(subject, issuer, key, issuer_key, ca=False, eku=None, san=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if san is not None:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def certs(d):
    os.makedirs(d, exist_ok=True)
    pem = serialization.Encoding.PEM
    key_pem = lambda k: k.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("atrest test KMIP CA", "atrest test KMIP CA", ca_key, ca_key, ca=True)
    _write(os.path.join(d, "ca.pem"), ca.public_bytes(pem))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert(
        "127.0.0.1",
        "atrest test KMIP CA",
        server_key,
        ca_key,
        eku=[ExtendedKeyUsageOID.SERVER_AUTH],
        san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    _write(os.path.join(d, "server.pem"), server.public_bytes(pem))
    _write(os.path.join(d, "server-key.pem"), key_pem(server_key))
    for who, cn in (("client", "atrest"), ("other", "someone-else")):
        k = ec.generate_private_key(ec.SECP256R1())
        c = _cert(cn, "atrest test KMIP CA", k, ca_key, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
        _write(os.path.join(d, who + ".pem"), c.public_bytes(pem))
        _write(os.path.join(d, who + "-key.pem"), key_pem(k))


def _client(host, port, d, who="client"):
    from kmip.pie.client import ProxyKmipClient

    return ProxyKmipClient(
        hostname=host,
        port=int(port),
        cert=os.path.join(d, who + ".pem"),
        key=os.path.join(d, who + "-key.pem"),
        ca=os.path.join(d, "ca.pem"),
        config_file=os.devnull,
    )


def create(host, port, d, name, who="client"):
    with _client(host, port, d, who) as c:
        uid = c.create(
            enums.CryptographicAlgorithm.AES,
            256,
            name=name,
            cryptographic_usage_mask=[
                enums.CryptographicUsageMask.ENCRYPT,
                enums.CryptographicUsageMask.DECRYPT,
            ],
        )
        c.activate(uid)
        print(uid)


def locate(host, port, d, name):
    f = attribute_factory.AttributeFactory()
    with _client(host, port, d) as c:
        uids = c.locate(
            attributes=[
                f.create_attribute(enums.AttributeType.NAME, name),
                f.create_attribute(enums.AttributeType.STATE, enums.State.ACTIVE),
            ]
        )
        print(json.dumps(uids))


def revoke(host, port, d, uid):
    with _client(host, port, d) as c:
        c.revoke(enums.RevocationReasonCode.KEY_COMPROMISE, uid=uid)


V14 = enums.KMIPVersion.KMIP_1_4


def _gcm(tag_length):
    return cattributes.CryptographicParameters(
        block_cipher_mode=enums.BlockCipherMode.GCM,
        cryptographic_algorithm=enums.CryptographicAlgorithm.AES,
        tag_length=tag_length,
    )


def _request(operation, payload):
    header = messages.RequestHeader(
        protocol_version=contents.ProtocolVersion(1, 4),
        batch_count=contents.BatchCount(1),
    )
    item = messages.RequestBatchItem(
        operation=contents.Operation(operation), request_payload=payload
    )
    return messages.RequestMessage(request_header=header, batch_items=[item])


def _encode(message):
    stream = utils.BytearrayStream()
    message.write(stream, kmip_version=V14)
    return bytes(stream.buffer).hex()


def codec_case(case):
    op = case["op"]
    h = lambda k: bytes.fromhex(case[k])
    if op == "encrypt-request":
        return _encode(
            _request(
                enums.Operation.ENCRYPT,
                payloads.EncryptRequestPayload(
                    unique_identifier=case["uid"],
                    cryptographic_parameters=_gcm(case["tagLength"]),
                    data=h("data"),
                    iv_counter_nonce=h("iv"),
                    auth_additional_data=h("aad"),
                ),
            )
        )
    if op == "decrypt-request":
        return _encode(
            _request(
                enums.Operation.DECRYPT,
                payloads.DecryptRequestPayload(
                    unique_identifier=case["uid"],
                    cryptographic_parameters=_gcm(len(h("tag"))),
                    data=h("data"),
                    iv_counter_nonce=h("iv"),
                    auth_additional_data=h("aad"),
                    auth_tag=h("tag"),
                ),
            )
        )
    if op == "encrypt-response":
        header = messages.ResponseHeader(
            protocol_version=contents.ProtocolVersion(1, 4),
            time_stamp=contents.TimeStamp(1700000000),
            batch_count=contents.BatchCount(1),
        )
        item = messages.ResponseBatchItem(
            operation=contents.Operation(enums.Operation.ENCRYPT),
            result_status=contents.ResultStatus(enums.ResultStatus.SUCCESS),
            response_payload=payloads.EncryptResponsePayload(
                unique_identifier=case["uid"], data=h("data"), auth_tag=h("tag")
            ),
        )
        return _encode(messages.ResponseMessage(response_header=header, batch_items=[item]))
    if op == "decode-request":
        m = messages.RequestMessage()
        m.read(utils.BytearrayStream(h("hex")), kmip_version=V14)
        item = m.batch_items[0]
        p = item.request_payload
        out = {
            "version": [
                m.request_header.protocol_version.major,
                m.request_header.protocol_version.minor,
            ],
            "operation": item.operation.value.name,
        }
        if isinstance(p, (payloads.EncryptRequestPayload, payloads.DecryptRequestPayload)):
            cp = p.cryptographic_parameters
            out.update(
                uid=p.unique_identifier,
                mode=cp.block_cipher_mode.name,
                algorithm=cp.cryptographic_algorithm.name,
                tagLength=cp.tag_length,
                data=p.data.hex(),
                iv=p.iv_counter_nonce.hex(),
                aad=p.auth_additional_data.hex(),
            )
            if isinstance(p, payloads.DecryptRequestPayload):
                out["tag"] = p.auth_tag.hex()
        elif isinstance(p, payloads.LocateRequestPayload):
            out["attributes"] = sorted(a.attribute_name.value for a in p.attributes)
        return out
    if op == "decode-item":
        # One primitive item, read with PyKMIP's primitive classes.
        from kmip.core import primitives

        kinds = {
            "integer": primitives.Integer,
            "longInteger": primitives.LongInteger,
            "boolean": primitives.Boolean,
            "textString": primitives.TextString,
            "byteString": primitives.ByteString,
            "dateTime": primitives.DateTime,
            "interval": primitives.Interval,
        }
        item = kinds[case["type"]](tag=enums.Tags(case["tag"]))
        item.read(utils.BytearrayStream(h("hex")))
        v = item.value
        if isinstance(v, bytes):
            v = v.hex()
        elif hasattr(v, "value"):
            v = v.value
        elif isinstance(v, bool):
            pass
        elif isinstance(v, int):
            v = str(v)
        return v
    raise ValueError("unknown op " + op)


def codec():
    cases = json.load(sys.stdin)
    print(json.dumps([codec_case(c) for c in cases]))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"certs": certs, "create": create, "locate": locate, "revoke": revoke, "codec": codec}[cmd](
        *args
    )
