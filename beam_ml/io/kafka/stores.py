"""Java trust and key stores (JKS, PKCS12) as the PEM files kafka-python reads.

Java clients, Confluent's docs and Google's Dataflow templates hand out TLS material
as keystores (``ssl.truststore.location``, ``ssl.keystore.location``); kafka-python and
librdkafka read PEM. The stores are converted in process: JKS with ``pyjks``, PKCS12
with ``cryptography``. Nothing is shelled out to ``keytool`` or ``openssl``.

    files = pem_files_from_java_stores({"ssl_truststore_location": "truststore.jks",
                                        "ssl_truststore_password": "changeit"})
    files["ssl_cafile"]   # a PEM file of every trusted certificate

The PEM files go to a private temporary directory (mode 0700, files 0600) of this
process; the client key is written decrypted there, as kafka-python must read it.
"""
from __future__ import annotations

import os
import tempfile
from typing import Callable, Mapping, Optional

import jks  # pyjks
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

__all__ = ["pem_files_from_java_stores", "load_store"]

_PEM_DIR: Optional[str] = None


def _private_dir() -> str:
    global _PEM_DIR  # pylint: disable=global-statement
    if _PEM_DIR is None or not os.path.isdir(_PEM_DIR):
        _PEM_DIR = tempfile.mkdtemp(prefix="beam_ml-kafka-tls-")  # mode 0700
    return _PEM_DIR


def _write(name: str, data: bytes) -> str:
    fd, path = tempfile.mkstemp(prefix=name, suffix=".pem", dir=_private_dir())  # mode 0600
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def _pem_cert(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def load_store(path: str, password: Optional[str], kind: Optional[str] = None,
               key_password: Optional[str] = None) -> tuple[list[bytes], Optional[bytes], list[bytes]]:
    """Reads a JKS or PKCS12 store.

    Returns:
      (trusted certificates as PEM, the first private key as unencrypted PKCS8 PEM or None,
      that key's certificate chain as PEM).

    Raises:
      ValueError: the file cannot be read or the password is wrong (the message never holds it).
    """
    kind = (kind or ("PKCS12" if path.lower().endswith((".p12", ".pfx")) else "JKS")).upper()
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    if data.lstrip().startswith(b"-----BEGIN"):
        # Already PEM (a truststore given as a CA file): the certificates as they are.
        certs = x509.load_pem_x509_certificates(data)
        return [c.public_bytes(serialization.Encoding.PEM) for c in certs], None, []
    if kind == "PKCS12":
        try:
            key, cert, extra = pkcs12.load_key_and_certificates(data, password.encode() if password else None)
        except ValueError as e:
            raise ValueError(f"{path}: not a PKCS12 store, or a wrong password ({e})") from None
        chain = ([cert.public_bytes(serialization.Encoding.PEM)] if cert else []) + [
            c.public_bytes(serialization.Encoding.PEM) for c in extra or []]
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()) if key else None
        return (chain if key is None else chain[1:]), key_pem, chain
    if kind != "JKS":
        raise ValueError(f"{path}: store type {kind}: expected JKS or PKCS12")
    try:
        store = jks.KeyStore.loads(data, password or "", try_decrypt_keys=False)
    except (jks.util.KeystoreSignatureException, jks.util.BadKeystoreFormatException) as e:
        raise ValueError(f"{path}: not a JKS store, or a wrong store password ({type(e).__name__})") from None
    trusted = [_pem_cert(entry.cert) for entry in store.certs.values()]
    key_pem, chain = None, []
    for entry in store.private_keys.values():
        if not entry.is_decrypted():
            try:
                entry.decrypt(key_password or password or "")
            except jks.util.DecryptionFailureException:
                raise ValueError(f"{path}: cannot decrypt the private key '{entry.alias}' (wrong key "
                                 "password)") from None
        key = serialization.load_der_private_key(entry.pkey_pkcs8, None)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        chain = [_pem_cert(der) for _, der in entry.cert_chain]
        break
    return trusted, key_pem, chain


def pem_files_from_java_stores(settings: Mapping[str, str],
                               label: Callable[[str], str] = lambda key: key) -> dict[str, str]:
    """Converts ``ssl_truststore_*`` / ``ssl_keystore_*`` settings to PEM file settings.

    Args:
      settings: normalised keys (``ssl_truststore_location``, ``ssl_truststore_password``,
        ``ssl_truststore_type``, ``ssl_keystore_location``, ``ssl_keystore_password``,
        ``ssl_keystore_type``, ``ssl_key_password``).
      label: how to name a key in errors (its flag or file key).

    Returns:
      ``ssl_cafile`` (from the truststore), ``ssl_certfile`` and ``ssl_keyfile`` (from the
      keystore), for `KafkaClientConfig`.

    Raises:
      ValueError: naming the store's key, never a password.
    """
    out: dict[str, str] = {}
    location = settings.get("ssl_truststore_location")
    if location:
        try:
            trusted, _, chain = load_store(location, settings.get("ssl_truststore_password"),
                                           settings.get("ssl_truststore_type"))
        except ValueError as e:
            raise ValueError(f"{label('ssl_truststore_location')}: {e}") from None
        trusted = trusted or chain
        if not trusted:
            raise ValueError(f"{label('ssl_truststore_location')}: {location} holds no trusted certificate")
        out["ssl_cafile"] = _write("ca-", b"".join(trusted))
    location = settings.get("ssl_keystore_location")
    if location:
        try:
            _, key_pem, chain = load_store(location, settings.get("ssl_keystore_password"),
                                           settings.get("ssl_keystore_type"), settings.get("ssl_key_password"))
        except ValueError as e:
            raise ValueError(f"{label('ssl_keystore_location')}: {e}") from None
        if key_pem is None or not chain:
            raise ValueError(f"{label('ssl_keystore_location')}: {location} holds no private key with a "
                             "certificate")
        out["ssl_certfile"] = _write("client-", b"".join(chain))
        out["ssl_keyfile"] = _write("client-key-", key_pem)
    return out
