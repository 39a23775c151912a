"""The client key deployer uses to log in to its emulated boards (made here, no ssh-keygen needed)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deployer.fsutil import atomic_open

KEY_NAME = "client_ed25519"


def ensure_client_key(state_dir: Path) -> tuple[Path, str]:
    """Private key path (mode 600) and its OpenSSH public line; created once per simulator state dir."""
    path = state_dir / KEY_NAME
    pub = path.with_name(KEY_NAME + ".pub")
    if not (path.exists() and pub.exists()):
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        with atomic_open(path, "wb") as fh:
            fh.write(private)
        with atomic_open(pub, "wb") as fh:
            fh.write(public + b" deployer-sim\n")
        pub.chmod(0o644)
    path.chmod(0o600)   # atomic_open gives new files open()'s 0644; OpenSSH refuses a readable private key
    return path, pub.read_text().strip()
