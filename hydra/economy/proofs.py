"""What a federation member checks before it co-signs a mint or a slash: the proof the
submitter sends along, which the log itself never holds.

A mint needs a receipt its payer signed and its payee countersigned, naming the minting
account as payee; the log records only a claim digest (payer, payee, hop session), so the
payer stays unnamed to everyone but the members. A slash needs an ``Equivocation``: the
accused signed a commitment chain saying one output for a step and a receipt to its successor
saying another. Nothing else convicts by signatures alone (a recompute that disagrees needs
the model to re-check; it lowers reputation, it does not slash).
"""

import hashlib

from hydra.economy.receipts import countersigned, opened
from hydra.verification.commitments import CommitmentChain, Terms, head_signed, receipt_valid
from protocols.codec import encode
from protocols.errors import ErrorCode, ProtocolError
from protocols.receipt import REQUESTS as RECEIPTS
from protocols.receipt import Receipt, ReceiptBody
from protocols.token import HASH_BYTES, PROOFS, Equivocation, Event, MintProof

CLAIM_DOMAIN = b"openhydra/mint-claim/v1\x00"


def claim(body: ReceiptBody) -> bytes:
    """The log's name for what a receipt pays: one payee's work in one hop session."""
    raw = "\x00".join((body.payer, body.payee)).encode() + b"\x00" + body.session_id
    return hashlib.blake2b(CLAIM_DOMAIN + raw, digest_size=HASH_BYTES).digest()


def evidence_ref(evidence: Equivocation) -> bytes:
    return hashlib.blake2b(encode(evidence), digest_size=HASH_BYTES).digest()


def check_proof(event: Event, proof: bytes) -> None:
    """Raise ``ProtocolError`` unless ``proof`` backs ``event`` (only mints and slashes need one)."""
    if event.kind not in ("mint", "slash"):
        return
    if not proof:
        raise ProtocolError(ErrorCode.BAD_EVIDENCE, f"a {event.kind} needs its proof")
    decoded = PROOFS.decode(proof)
    if event.kind == "mint" and isinstance(decoded, MintProof):
        check_mint(event, decoded)
    elif event.kind == "slash" and isinstance(decoded, Equivocation):
        check_equivocation(event, decoded)
    else:
        raise ProtocolError(ErrorCode.BAD_EVIDENCE, f"a {decoded.TYPE} does not prove a {event.kind}")


def check_mint(event: Event, proof: MintProof) -> None:
    receipt = RECEIPTS.decode(proof.receipt)
    body = opened(receipt) if isinstance(receipt, Receipt) else None
    if body is None:
        raise ProtocolError(ErrorCode.BAD_RECEIPT_SIGNATURE, "the receipt is not signed by its payer")
    assert isinstance(receipt, Receipt)
    if body.payee != event.account or body.payer == body.payee:
        raise ProtocolError(
            ErrorCode.BAD_EVIDENCE, "the receipt does not pay this account for another's work"
        )
    if not countersigned(body.payee, receipt, proof.countersignature):
        raise ProtocolError(ErrorCode.BAD_RECEIPT_SIGNATURE, "the payee did not countersign the receipt")
    if event.ref != claim(body) or event.amount != body.tokens:
        raise ProtocolError(
            ErrorCode.WRONG_AMOUNT, f"the receipt is for {body.tokens} tokens of another claim"
        )


def check_equivocation(event: Event, evidence: Equivocation) -> None:
    if event.account != evidence.peer or event.ref != evidence_ref(evidence):
        raise ProtocolError(ErrorCode.BAD_EVIDENCE, "the evidence is about another peer or another slash")
    terms = Terms(
        evidence.session_id,
        evidence.model,
        evidence.layer_start,
        evidence.layer_end,
        evidence.model_hash,
        evidence.dtype,
    )
    chain = CommitmentChain(terms)
    for step in evidence.steps:
        chain.append(step.position, step.tokens, step.in_hash, step.out_hash)
    if not head_signed(evidence.peer, chain.head, evidence.head_signature):
        raise ProtocolError(ErrorCode.BAD_EVIDENCE, "the accused did not sign that commitment chain")
    committed = chain.at(evidence.position)
    if committed is None:
        raise ProtocolError(ErrorCode.BAD_EVIDENCE, f"the chain has no step at {evidence.position}")
    if not receipt_valid(
        evidence.peer, evidence.next_session_id, evidence.position, evidence.digest, evidence.receipt
    ):
        raise ProtocolError(ErrorCode.BAD_EVIDENCE, "the accused did not sign that receipt")
    if committed.out_hash == evidence.digest:
        raise ProtocolError(ErrorCode.BAD_EVIDENCE, "the receipt and the commitment agree: nothing to slash")
