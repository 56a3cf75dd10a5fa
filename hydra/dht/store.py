"""Records this node holds for the DHT: per key, the newest valid record of each peer.

Bounded so a hostile peer cannot grow it without limit: at most ``max_keys`` keys and
``max_per_key`` records per key; when full, the record expiring soonest gives way."""

import time
from collections.abc import Iterable
from dataclasses import dataclass

from hydra.dht.records import validate
from protocols.errors import ProtocolError
from protocols.records import PeerRecord, SignedRecord


@dataclass(frozen=True)
class Entry:
    record: PeerRecord
    signed: SignedRecord


class RecordStore:
    def __init__(self, max_keys: int = 4096, max_per_key: int = 1024, work_bits: int = 0) -> None:
        self.max_keys = max_keys
        self.max_per_key = max_per_key
        self.work_bits = work_bits
        self._entries: dict[str, dict[str, Entry]] = {}

    def put(self, key: str, signed: SignedRecord, now: float | None = None) -> PeerRecord:
        """Validate and keep ``signed`` unless an equal or newer record of its peer is held.

        Raises ``ProtocolError(INVALID_RECORD)`` for a record that fails validation."""
        now = time.time() if now is None else now
        record = self.validate(signed, now)
        records = self._entries.get(key)
        if records is None:
            if len(self._entries) >= self.max_keys:
                self.expire(now)
                if len(self._entries) >= self.max_keys:
                    return record  # full of live keys: drop silently, others hold copies
            records = self._entries[key] = {}
        held = records.get(record.peer_id)
        if held is not None and held.record.seq >= record.seq:
            return record
        if held is None and len(records) >= self.max_per_key:
            victim = min(records.values(), key=lambda e: e.record.expires_at)
            if victim.record.expires_at >= record.expires_at:
                return record
            del records[victim.record.peer_id]
        records[record.peer_id] = Entry(record, signed)
        return record

    def validate(self, signed: SignedRecord, now: float | None = None) -> PeerRecord:
        """``hydra.dht.records.validate`` with this network's proof-of-work requirement."""
        return validate(signed, now, self.work_bits)

    def put_many(self, key: str, signed: Iterable[SignedRecord]) -> list[ProtocolError]:
        """Store what validates; return why each of the others was rejected."""
        rejected = []
        for item in signed:
            try:
                self.put(key, item)
            except ProtocolError as exc:
                rejected.append(exc)
        return rejected

    def get(self, key: str, now: float | None = None) -> list[Entry]:
        now = time.time() if now is None else now
        return [e for e in self._entries.get(key, {}).values() if e.record.expires_at > now]

    def expire(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for key in list(self._entries):
            live = {p: e for p, e in self._entries[key].items() if e.record.expires_at > now}
            if live:
                self._entries[key] = live
            else:
                del self._entries[key]

    def __len__(self) -> int:
        return sum(len(v) for v in self._entries.values())
