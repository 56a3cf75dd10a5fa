"""Signing, checking and posting cumulative receipts (``protocols.receipt``).

A receipt's ledger entry is keyed by the hop (the counterparty and the hop's session id), so
each hop's latest receipt is what counts: ``Ledger.post_receipt`` posts only the increase."""

import hashlib
from collections.abc import Iterable

from libp2p.crypto.keys import KeyPair

from hydra.economy.ledger import Ledger, Posted
from hydra.p2p.identity import signed_by
from protocols.codec import encode
from protocols.receipt import BODIES, Receipt, ReceiptBody
from protocols.verify import DIGEST_BYTES

RECEIPT_DOMAIN = b"openhydra/payment-receipt/v1\x00"
COUNTERSIGN_DOMAIN = b"openhydra/payment-countersign/v1\x00"
SELF = "self"  # a node's own account in its ledger


def peer_account(peer_id: str) -> str:
    return f"peer:{peer_id}"


def work_root(digests: Iterable[bytes]) -> bytes:
    """A chain over the digests of the activations one hop carried, in order: payer and payee
    both know them (they are the payer's committed outputs and the payee's committed inputs)."""
    root = bytes(DIGEST_BYTES)
    for digest in digests:
        root = hashlib.blake2b(root + digest, digest_size=DIGEST_BYTES).digest()
    return root


def sign(identity: KeyPair, body: ReceiptBody) -> Receipt:
    raw = encode(body)
    return Receipt(raw, identity.private_key.sign(RECEIPT_DOMAIN + raw))


def opened(receipt: Receipt) -> ReceiptBody | None:
    """The body of ``receipt`` if its payer signed it (None otherwise)."""
    body = BODIES.decode(receipt.body)
    assert isinstance(body, ReceiptBody)
    return body if signed_by(body.payer, RECEIPT_DOMAIN + receipt.body, receipt.payer_signature) else None


def countersign(identity: KeyPair, receipt: Receipt) -> bytes:
    return identity.private_key.sign(COUNTERSIGN_DOMAIN + receipt.body)


def countersigned(payee: str, receipt: Receipt, signature: bytes) -> bool:
    return signed_by(payee, COUNTERSIGN_DOMAIN + receipt.body, signature)


def hop_key(counterparty: str, session_id: bytes) -> str:
    return f"{counterparty}:{session_id.hex()}"


def post_paid(ledger: Ledger, body: ReceiptBody) -> Posted:
    """The payer's side: it owes ``body.units`` stage-tokens to the payee."""
    key = hop_key(body.payee, body.session_id)
    return ledger.post_receipt(key, body.seq, body.units, payer=SELF, payee=peer_account(body.payee))


def post_earned(ledger: Ledger, body: ReceiptBody) -> None:
    """The payee's side: it is owed ``body.units`` stage-tokens by the payer."""
    key = hop_key(body.payer, body.session_id)
    ledger.post_receipt(key, body.seq, body.units, payer=peer_account(body.payer), payee=SELF)
