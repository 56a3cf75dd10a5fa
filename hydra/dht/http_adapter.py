"""HTTP DHT adapter: REST announce/lookup over the Kademlia DHT (not a side table).

    POST /announce   {"body": base64, "signature": base64}  a SignedRecord, verified, then
                     stored in the DHT under its model key and the swarm key
    GET  /lookup?model=M                                      who serves which layers of M
    GET  /peers                                               every announcing peer

Errors: ``{"error": {"code": ..., "message": ...}}`` with a 4xx status.
"""

import base64
import binascii
import json
from typing import Any

from quart import Blueprint, request

from hydra.dht.kademlia import Dht
from hydra.dht.keyspace import SWARM_KEY, model_key
from hydra.dht.store import Entry
from hydra.models.catalog import load_catalog
from protocols.errors import ProtocolError
from protocols.kad import MAX_KEY
from protocols.records import SignedRecord


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def entry_json(entry: Entry) -> dict[str, Any]:
    r = entry.record
    return {
        "peer_id": r.peer_id,
        "model": r.model,
        "layers": [r.layer_start, r.layer_end],
        "total_layers": r.total_layers,
        "dtype": r.dtype,
        "quantization": r.quantization,
        "throughput": r.throughput,
        "cache_tokens_free": r.cache_tokens_free,
        "region": r.region,
        "addrs": list(r.addrs),
        "version": r.version,
        "seq": r.seq,
        "issued_at": r.issued_at,
        "expires_at": r.expires_at,
        "signed": {
            "body": base64.b64encode(entry.signed.body).decode(),
            "signature": base64.b64encode(entry.signed.signature).decode(),
        },
    }


def signed_from_json(data: Any) -> SignedRecord:
    if not isinstance(data, dict) or set(data) != {"body", "signature"}:
        raise ValueError('expected {"body": base64, "signature": base64}')
    try:
        body, signature = (base64.b64decode(data[k], validate=True) for k in ("body", "signature"))
    except (binascii.Error, TypeError, ValueError):
        raise ValueError("body and signature must be base64 strings") from None
    return SignedRecord.from_wire({"body": body, "signature": signature})


async def read_json() -> Any:
    """The request body as JSON, or None if it is not UTF-8 JSON (never an exception)."""
    raw = await request.get_data(as_text=False)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def dht_blueprint(dht: Dht) -> Blueprint:
    bp = Blueprint("dht", __name__)
    catalog = load_catalog()  # so /lookup takes aliases, as the APIs do

    @bp.post("/announce")
    async def announce() -> Any:
        data = await read_json()
        try:
            signed = signed_from_json(data)
            record = dht.store.validate(signed)
        except ProtocolError as exc:
            return error_body(exc.code, exc.message), 400
        except ValueError as exc:
            return error_body("bad_request", str(exc)), 400
        stored = await dht.put(model_key(record.model), signed)
        await dht.put(SWARM_KEY, signed)
        return {"peer_id": record.peer_id, "model": record.model, "stored_on": stored}

    @bp.get("/lookup")
    async def lookup() -> Any:
        model = request.args.get("model", "")
        if not model or len(model_key(model)) > MAX_KEY:
            return error_body("bad_request", f"query parameter ?model= is required (at most {MAX_KEY - 6} characters)"), 400
        try:
            model = catalog.resolve(model).id
        except KeyError:
            pass  # not in our catalog: the swarm may still know it by this id
        entries = await dht.get(model_key(model))
        return {"model": model, "peers": [entry_json(e) for e in entries]}

    @bp.get("/peers")
    async def peers() -> Any:
        entries = await dht.get(SWARM_KEY)
        return {"peers": [entry_json(e) for e in entries], "routing_table": len(dht.routing)}

    return bp
