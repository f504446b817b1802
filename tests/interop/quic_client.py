"""A Keyward client over QUIC written with a QUIC implementation that is not ours: Python's aioquic,
with the ECDH and AES-GCM done by Python's `cryptography`. It follows spec/transport-quic.md: ALPN
keyward/1, a client certificate, one JSON-RPC message per bidirectional stream.

usage: python3 quic_client.py PORT TLS_DIR
"""
import asyncio
import json
import os
import sys

from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
import base64


async def main(port: int, tls_dir: str) -> None:
    config = QuicConfiguration(is_client=True, alpn_protocols=["keyward/1"], server_name="127.0.0.1")
    config.load_verify_locations(os.path.join(tls_dir, "ca.crt"))
    config.load_cert_chain(os.path.join(tls_dir, "client.crt"), os.path.join(tls_dir, "client.key"))
    async with connect("127.0.0.1", port, configuration=config) as connection:

        async def send(message: dict) -> dict:
            reader, writer = await connection.create_stream()
            writer.write(json.dumps(message).encode())
            writer.write_eof()
            return json.loads(await asyncio.wait_for(reader.read(), 10))

        ours = ec.generate_private_key(ec.SECP256K1())
        public = ours.public_key().public_bytes(Encoding.X962, PublicFormat.CompressedPoint).hex()
        init = await send({"jsonrpc": "2.0", "method": "init_secure_api", "params": {"ecdh_pubkey": public}, "id": 1})
        server = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), bytes.fromhex(init["result"]["Ok"]))
        aes = AESGCM(ours.exchange(ec.ECDH(), server))  # the X coordinate, as Owner API V3 uses it
        next_id = [2]

        async def call(method: str, params: dict) -> dict:
            inner_id = next_id[0]
            next_id[0] += 2
            nonce = os.urandom(12)
            plain = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": inner_id}).encode()
            body = base64.b64encode(aes.encrypt(nonce, plain, None)).decode()
            outer = await send({"jsonrpc": "2.0", "method": "encrypted_request_v3", "id": inner_id + 1,
                                "params": {"nonce": nonce.hex(), "body_enc": body}})
            ok = outer["result"]["Ok"]
            inner = json.loads(aes.decrypt(bytes.fromhex(ok["nonce"]), base64.b64decode(ok["body_enc"]), None))
            assert inner["id"] == inner_id, inner
            return inner

        created = await call("create_wallet", {"name": "py", "mnemonic": None, "mnemonic_length": 16, "password": "py-pass"})
        assert created == {"id": 2, "jsonrpc": "2.0", "result": {"Ok": None}}, created
        token = (await call("open_wallet", {"name": "py", "password": "py-pass"}))["result"]["Ok"]
        assert len(token) == 64, token
        accounts = (await call("accounts", {"token": token}))["result"]["Ok"]
        assert accounts == [{"label": "default", "path": "0200000000000000000000000000000000"}], accounts
        wrong = await call("accounts", {"token": "11" * 32})
        assert wrong["error"]["message"] == "InvalidKeychainMask", wrong
        print(json.dumps({"ok": True, "accounts": accounts}))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
