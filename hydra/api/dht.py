"""HTTP DHT adapter: REST announce/lookup over the Kademlia DHT (not a side table).

    POST /announce   {"body": base64, "signature": base64}  a SignedRecord, verified, then
                     stored in the DHT under its model key and the swarm key
    GET  /lookup?model=M                                      who serves which layers of M
    GET  /peers                                               every announcing peer

Errors: ``{"error": {"code": ..., "message": ...}}`` with a 4xx status.
"""

import base64
import binascii
from typing import Any

from quart import Blueprint, request

from hydra.api.bodies import read_json
from hydra.api.errors import APIError
from hydra.dht.kademlia import Dht
from hydra.dht.keyspace import SWARM_KEY, model_key
from hydra.dht.store import Entry
from hydra.errors import UnknownModel
from hydra.models.catalog import Catalog
from protocols.errors import ProtocolError
from protocols.kad import MAX_KEY
from protocols.records import SignedRecord


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


def bad_request(message: str, code: str = "bad_request") -> APIError:
    return APIError(400, message, code=code)


def signed_from_json(data: Any) -> SignedRecord:
    """The ``SignedRecord`` a client posted; a 400 saying what is wrong with it."""
    if not isinstance(data, dict) or set(data) != {"body", "signature"}:
        raise bad_request('expected {"body": base64, "signature": base64}')
    try:
        body, signature = (base64.b64decode(data[k], validate=True) for k in ("body", "signature"))
    except (binascii.Error, TypeError, ValueError):
        raise bad_request("body and signature must be base64 strings") from None
    try:
        return SignedRecord.from_wire({"body": body, "signature": signature})
    except ProtocolError as exc:
        raise bad_request(exc.message, exc.code) from None


class DhtEndpoints:
    def __init__(self, dht: Dht, catalog: Catalog) -> None:
        self.dht = dht
        self.catalog = catalog  # so /lookup takes aliases, as the APIs do

    async def announce(self) -> Any:
        signed = signed_from_json(await read_json())
        try:
            record = self.dht.store.validate(signed)
        except ProtocolError as exc:
            raise bad_request(exc.message, exc.code) from None
        stored = await self.dht.put(model_key(record.model), signed)
        await self.dht.put(SWARM_KEY, signed)
        return {"peer_id": record.peer_id, "model": record.model, "stored_on": stored}

    async def lookup(self) -> Any:
        model = request.args.get("model", "")
        if not model or len(model_key(model)) > MAX_KEY:
            longest = MAX_KEY - len(model_key(""))
            raise bad_request(f"query parameter ?model= is required (at most {longest} characters)")
        try:
            model = self.catalog.resolve(model).id
        except UnknownModel:
            pass  # not in our catalog: the swarm may still know it by this id
        entries = await self.dht.get(model_key(model))
        return {"model": model, "peers": [entry_json(e) for e in entries]}

    async def peers(self) -> Any:
        entries = await self.dht.get(SWARM_KEY)
        return {"peers": [entry_json(e) for e in entries], "routing_table": len(self.dht.routing)}


def dht_blueprint(dht: Dht, catalog: Catalog) -> Blueprint:
    endpoints = DhtEndpoints(dht, catalog)
    bp = Blueprint("dht", __name__)
    bp.add_url_rule("/announce", view_func=endpoints.announce, methods=["POST"])
    bp.add_url_rule("/lookup", view_func=endpoints.lookup, methods=["GET"])
    bp.add_url_rule("/peers", view_func=endpoints.peers, methods=["GET"])
    return bp
