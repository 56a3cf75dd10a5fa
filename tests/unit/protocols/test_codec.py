"""protocols/: strict msgpack codec and framing; hostile bytes only ever raise ProtocolError."""

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import inference, kad
from protocols.codec import Error, encode
from protocols.errors import ErrorCode, ProtocolError
from protocols.framing import decode_header, encode_frame
from protocols.inference import MAX_PREFIX_BLOCKS, PREFIX_BLOCK, PREFIX_HASH_BYTES
from tests.factories import keypair, signed

VALID = [
    kad.Ping(sender_addrs=("/ip4/127.0.0.1/tcp/1",)),
    kad.FindNode(key="model/x"),
    kad.FindValue(key="swarm", sender_addrs=()),
    kad.Store(key="swarm", records=(signed(keypair()),)),
]


@pytest.mark.parametrize("message", VALID, ids=lambda m: m.TYPE)
def test_requests_round_trip(message):
    assert kad.REQUESTS.decode(encode(message)) == message


def test_reply_with_nested_messages_round_trips():
    reply = kad.Nodes(
        contacts=(kad.Contact(peer_id="p", addrs=("/ip4/1.2.3.4/tcp/5",)),),
        records=(signed(keypair()),),
    )
    assert kad.REPLIES.decode(encode(reply)) == reply


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\xc1", ErrorCode.BAD_MSGPACK),
        (encode(kad.FindNode(key="k"))[:-1], ErrorCode.BAD_MSGPACK),
        (msgpack.packb([1, 2]), ErrorCode.BAD_MESSAGE),
        (msgpack.packb({"key": "k"}), ErrorCode.BAD_MESSAGE),
        (msgpack.packb({"t": "launch_missiles"}), ErrorCode.UNKNOWN_TYPE),
        (msgpack.packb({"t": "find_node"}), ErrorCode.BAD_FIELD),
        (msgpack.packb({"t": "find_node", "key": 7}), ErrorCode.BAD_FIELD),
        (msgpack.packb({"t": "find_node", "key": "k", "evil": 1}), ErrorCode.BAD_FIELD),
        (msgpack.packb({"t": "find_node", "key": ""}), ErrorCode.BAD_FIELD),
        (msgpack.packb({"t": "find_node", "key": "k" * 300}), ErrorCode.BAD_FIELD),
        (msgpack.packb({"t": "ping", "sender_addrs": ["a"] * 17}), ErrorCode.BAD_FIELD),
        (msgpack.packb({"t": "store", "key": "k", "records": []}), ErrorCode.BAD_FIELD),
        (msgpack.packb({"t": "store", "key": "k", "records": [{"body": b"x"}]}), ErrorCode.BAD_FIELD),
        (msgpack.packb({"t": "ping", "sender_addrs": [True]}), ErrorCode.BAD_FIELD),
        (msgpack.packb({"t": "error", "code": "x", "message": "y"}), ErrorCode.UNKNOWN_TYPE),
    ],
)
def test_malformed_requests_get_precise_codes(payload, code):
    with pytest.raises(ProtocolError) as info:
        kad.REQUESTS.decode(payload)
    assert info.value.code == code


def test_bool_is_not_an_int():
    with pytest.raises(ProtocolError, match="bool"):
        kad.REPLIES.decode(msgpack.packb({"t": "stored", "accepted": True, "rejected": 0}))


def test_error_reply_decodes():
    assert kad.REPLIES.decode(encode(Error(code="x", message="y"))) == Error("x", "y")


def test_frame_limits():
    assert decode_header(encode_frame(b"abc")[:4]) == 3
    with pytest.raises(ProtocolError) as info:
        decode_header((2**31).to_bytes(4, "big"), max_frame=1024)
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE
    with pytest.raises(ProtocolError) as info:
        encode_frame(b"x" * 2048, max_frame=1024)
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE
    with pytest.raises(ProtocolError) as info:
        decode_header(b"\x00\x01")
    assert info.value.code == ErrorCode.BAD_FRAME


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_escape_as_anything_but_protocol_error(payload):
    for schema in (kad.REQUESTS, kad.REPLIES):
        try:
            schema.decode(payload)
        except ProtocolError:
            pass


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from(
    ["t", "key", "sender_addrs", "records", "body", "signature", "contacts", "peer_id", "addrs"]
)
message_types = st.sampled_from(["ping", "find_node", "find_value", "store", "nodes", "x"])


@settings(max_examples=1000, deadline=None)
@given(message_types, st.dictionaries(field_names, msgpack_values, max_size=5))
def test_structured_garbage_is_rejected_with_a_typed_error(tag, fields):
    payload = msgpack.packb({**fields, "t": tag}, use_bin_type=True)
    for schema in (kad.REQUESTS, kad.REPLIES):
        try:
            schema.decode(payload)
        except ProtocolError as exc:
            assert exc.code in ErrorCode.__members__.values()


def test_a_session_header_names_its_prefix_within_bounds():
    """A header's prefix hash chain and the tokens to reuse from it are checked on decode."""
    base = dict(layer_start=0, layer_end=2, max_length=512, dtype="float32", step_timeout=5.0,
                expires_at=1e10, key_report=bytes(32))
    chain = tuple(bytes([i]) * PREFIX_HASH_BYTES for i in range(3))
    good = inference.HopHeader(**base, prefix=chain, reuse=2 * PREFIX_BLOCK)
    assert inference.HopHeader.from_wire(good.to_wire()) == good
    for bad in (
        {"prefix": chain, "reuse": PREFIX_BLOCK + 1},  # not whole blocks
        {"prefix": chain, "reuse": 4 * PREFIX_BLOCK},  # more blocks than it names
        {"prefix": (b"short",), "reuse": 0},
        {"prefix": (bytes(PREFIX_HASH_BYTES),) * (MAX_PREFIX_BLOCKS + 1), "reuse": 0},
        {"prefix": chain, "reuse": -PREFIX_BLOCK},
        {"prefix": chain, "reuse": 3 * PREFIX_BLOCK, "max_length": 3 * PREFIX_BLOCK},  # no room left
    ):
        wire = {**good.to_wire(), **bad}
        with pytest.raises(ProtocolError) as caught:
            inference.HopHeader.from_wire(wire)
        assert caught.value.code == ErrorCode.BAD_FIELD, bad


def test_direct_return_messages_are_checked_on_decode():
    """A direct route's last header carries a collect token (and only it does); collects,
    probes, progress and the commitments steps carry forward are bounded."""
    base = dict(layer_start=0, layer_end=2, max_length=512, dtype="float32", step_timeout=5.0,
                expires_at=1e10, key_report=bytes(32))
    token = bytes(inference.COLLECT_TOKEN_BYTES)
    last = inference.HopHeader(**base, direct=True, collect=token)
    assert inference.HopHeader.from_wire(last.to_wire()) == last
    hop = {"t": "hop", "peer_id": "p", "addrs": ["/ip4/127.0.0.1/tcp/1"], "layer_start": 2, "layer_end": 4}
    for bad in (
        {"collect": b""},  # the last stage of a direct route must be collectable
        {"collect": token[:-1]},
        {"direct": False},  # a relayed route has no collect token
        {"next_hop": hop, "next_session_id": bytes(16), "next_header": b"h"},  # nor a middle stage
    ):
        with pytest.raises(ProtocolError) as caught:
            inference.HopHeader.from_wire({**last.to_wire(), **bad})
        assert caught.value.code == ErrorCode.BAD_FIELD, bad
    good = [
        inference.Collect(bytes(16), token),
        inference.Probe(5.0),
        inference.CloseSession(done=7),
        Error(ErrorCode.NEXT_HOP_FAILED, "gone", peer="p"),
    ]
    for message in good:
        assert inference.REQUESTS.decode(encode(message)) == message
    for reply in (inference.Progress((3, 3, 2)), inference.Collecting()):
        assert inference.REPLIES.decode(encode(reply)) == reply
    for schema, wire in (
        (inference.REQUESTS, {"t": "collect", "session_id": bytes(16), "token": b"short"}),
        (inference.REQUESTS, {"t": "probe", "timeout": float("nan")}),
        (inference.REQUESTS, {"t": "probe", "timeout": 0.0}),
        (inference.REQUESTS, {"t": "close", "done": -1}),
        (inference.REQUESTS, {"t": "step", "position": 0, "sealed": b"x",
                              "commitments": [b"c" * (inference.MAX_COMMITMENT + 1)]}),
        (inference.REPLIES, {"t": "progress", "positions": []}),
        (inference.REPLIES, {"t": "progress", "positions": [-1]}),
    ):
        with pytest.raises(ProtocolError) as caught:
            schema.decode(msgpack.packb(wire, use_bin_type=True))
        assert caught.value.code == ErrorCode.BAD_FIELD, wire


def test_compaction_terms_and_orders_are_checked_on_decode():
    base = dict(layer_start=0, layer_end=2, max_length=512, dtype="float32", step_timeout=5.0,
                expires_at=1e10, key_report=bytes(32))
    terms = inference.Compaction(refit=True, selection="omp", shares=((1.0,), (0.5, 0.25)))
    header = inference.HopHeader(**base, compaction=terms)
    assert inference.HopHeader.from_wire(header.to_wire()) == header
    for bad in ({"selection": "random"}, {"shares": [[1.5]]}, {"shares": [[]]}, {"shares": [[float("nan")]]},
                {"shares": [[0.0]]}, {"shares": [[1.0]] * (inference.MAX_SPAN_BLOCKS + 1)}):
        with pytest.raises(ProtocolError) as caught:
            inference.HopHeader.from_wire({**header.to_wire(), "compaction": {**terms.to_wire(), **bad}})
        assert caught.value.code == ErrorCode.BAD_FIELD, bad
    with pytest.raises(ProtocolError):  # a compacted cache keeps no prefix blocks
        inference.HopHeader.from_wire({**header.to_wire(), "prefix": [bytes(PREFIX_HASH_BYTES)]})
    for compact in (-1, inference.MAX_LENGTH + 1):
        with pytest.raises(ProtocolError):
            inference.Step.from_wire({**inference.Step(0, sealed=b"x").to_wire(), "compact": compact})
