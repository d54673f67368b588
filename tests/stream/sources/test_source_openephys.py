"""ZMQ Interface messages -> blocks: the wire format, and every anomaly counted without stalling."""

import json
import threading
import time

import numpy as np
import pytest
import zmq

from livedenoise.stream.sources.openephys import Block, BlockAssembler, Gap, Heartbeat, Restart
from livedenoise.stream.protocols.zmq_interface import (
    DATA,
    DataEncoder,
    DataMessage,
    EventMessage,
    ProtocolError,
    decode,
    encode_data,
    encode_ttl,
)

C, N = 4, 8


def msgs(sample_num, first_msg=0, channels=range(C), stream="ProbeA-AP", value=None):
    enc = DataEncoder(stream, [f"CH{k + 1}" for k in range(C)], 30000.0)
    enc.message_num = first_msg
    data = np.stack([np.arange(N, dtype=np.float32) + 100 * k + (sample_num if value is None else value) for k in range(C)])
    parts = enc.encode_block(sample_num, data)
    return [decode(parts[k]) for k in channels]


def blocks(items):
    return [i for i in items if isinstance(i, Block)]


def feed(asm, messages):
    out = []
    for m in messages:
        out += asm.add(m)
    return out


def test_encode_decode_roundtrip_matches_the_plugin_format():
    parts = encode_data(7, "ProbeA-AP", 3, "CH4", 123456789012, 30000.0, np.arange(5, dtype=np.float32), timestamp=1700000000000)
    assert parts[0] == b"DATA\0" and len(parts) == 3
    head = json.loads(parts[1])
    assert head == {"message_num": 7, "type": "data", "data_size": 20, "timestamp": 1700000000000,
                    "content": {"stream": "ProbeA-AP", "channel_num": 3, "channel_name": "CH4", "num_samples": 5,
                                "sample_num": 123456789012, "sample_rate": 30000.0}}
    m = decode(parts)
    assert isinstance(m, DataMessage) and m.sample_num == 123456789012 and m.channel_num == 3
    assert np.array_equal(m.samples, np.arange(5, dtype=np.float32))
    # the fast encoder writes the same JSON
    fast = DataEncoder("ProbeA-AP", ["CH1", "CH2", "CH3", "CH4"], 30000.0)
    fast.message_num = 7
    p2 = fast.encode_block(123456789012, np.tile(np.arange(5, dtype=np.float32), (4, 1)), timestamp=1700000000000)[3]
    assert json.loads(p2[1]) == {**head, "message_num": 10}
    ttl = decode(encode_ttl(1, "ProbeA-AP", 10, 2, True))
    assert isinstance(ttl, EventMessage) and ttl.kind == "ttl" and len(ttl.payload) == 10


@pytest.mark.parametrize("parts,why", [
    ([DATA, b"{not json", b""], "JSON"),
    ([DATA, b"[1, 2]", b""], "object"),
    ([DATA, json.dumps({"message_num": 0, "content": {"num_samples": 4, "sample_num": 0, "channel_num": 0,
                                                      "sample_rate": 30000}, "data_size": 12}).encode(), b"\0" * 12], "data_size"),
    ([DATA, json.dumps({"message_num": 0, "content": {"num_samples": 4, "sample_num": 0, "channel_num": 0,
                                                      "sample_rate": 30000}, "data_size": 16}).encode(), b"\0" * 12], "payload"),
    ([DATA, json.dumps({"message_num": 0, "content": {"num_samples": 1, "sample_num": "x", "channel_num": 0,
                                                      "sample_rate": 30000}, "data_size": 4}).encode(), b"\0" * 4], "integer"),
    ([b"BOGUS", b"{\"message_num\": 1}", b""], "envelope"),
    ([DATA], "parts"),
])
def test_malformed_messages_raise_protocol_error(parts, why):
    with pytest.raises(ProtocolError, match=why):
        decode(parts)


def test_blocks_are_assembled_in_order_and_channel_count_is_learned():
    asm = BlockAssembler()
    out = feed(asm, msgs(0, 0))
    assert not blocks(out)  # a learned count: a block leaves once the next one has started
    out = feed(asm, msgs(N, C)[:1])
    assert [x.sample_num for x in blocks(out)] == [0]
    out += feed(asm, msgs(N, C)[1:] + msgs(2 * N, 2 * C))
    b = blocks(out)
    assert [x.sample_num for x in b] == [0, N]
    assert b[0].data.shape == (C, N) and b[0].data[2, 0] == 200
    assert [x.sample_num for x in blocks(asm.flush())] == [2 * N]  # the end of the stream
    assert asm.n_channels == C and asm.gaps == 0 and asm.missing_channels == 0


def test_a_given_channel_count_lets_a_block_leave_at_once():
    asm = BlockAssembler(n_channels=C)
    out = feed(asm, msgs(0, 0))
    assert [x.sample_num for x in blocks(out)] == [0]


def test_missing_channel_is_zero_filled_and_counted_without_stalling():
    asm = BlockAssembler(n_channels=C, max_pending=2)
    out = feed(asm, msgs(0, 0, channels=[0, 1, 3]))
    assert not blocks(out)
    out += feed(asm, msgs(N, 3) + msgs(2 * N, 3 + C) + msgs(3 * N, 3 + 2 * C))
    b = blocks(out)
    assert [x.sample_num for x in b][:1] == [0]
    assert b[0].missing == 1 and np.all(b[0].data[2] == 0)
    assert asm.missing_channels == 1 and asm.incomplete_blocks == 1
    assert asm.gaps == 1  # the plugin numbered the lost message


def test_duplicates_late_and_out_of_order_messages():
    asm = BlockAssembler(n_channels=C)
    m0 = msgs(0, 0)
    m1 = msgs(N, C)
    out = feed(asm, [m0[0], m0[2], m0[1], m0[1], m0[3]])  # out of order inside a block + one duplicate
    assert len(blocks(out)) == 1 and asm.duplicates == 1
    assert np.array_equal(blocks(out)[0].data[1], m0[1].samples)
    out = feed(asm, m1 + [m0[2]])  # a message for a block already sent
    assert asm.late == 1 and len(blocks(out)) == 1


def test_sample_gap_emits_a_gap_item_never_filler_and_restart_resets():
    asm = BlockAssembler(n_channels=C)
    out = feed(asm, msgs(0, 0) + msgs(3 * N, C))  # two blocks never sent
    assert [type(x).__name__ for x in out] == ["Block", "Gap", "Block"]
    assert [(x.sample_num, x.data.shape[1]) for x in blocks(out)] == [(0, N), (3 * N, N)]  # nothing invented
    assert isinstance(out[1], Gap) and (out[1].expected, out[1].got, out[1].samples) == (N, 3 * N, 2 * N)
    assert asm.dropped_samples == 2 * N and asm.sample_gaps == 1 and asm.samples_in == 2 * N
    out = feed(asm, msgs(0, 0))  # acquisition restarted: message_num and sample_num back to 0
    assert any(isinstance(i, Restart) for i in out) and asm.restarts == 1
    assert [x.sample_num for x in blocks(out)] == [0]


def test_sample_num_falling_back_in_a_new_message_is_a_restart_not_late():
    asm = BlockAssembler(n_channels=C)
    out = feed(asm, msgs(1000, 0) + msgs(1000 + N, C))
    # the counter falls back by less than a second, message_num keeps counting: a restart
    out = feed(asm, msgs(0, 2 * C, channels=[0, 1]))
    assert [type(x).__name__ for x in out] == ["Restart"] and asm.restarts == 1 and asm.late == 0
    out = feed(asm, msgs(0, 2 * C + 2, channels=[2, 3]) + msgs(N, 3 * C))
    assert [x.sample_num for x in blocks(out)] == [0, N]
    # an old message arriving again (numbered before the newest one) is late, not a restart
    feed(asm, msgs(0, 2 * C, channels=[1]))
    assert asm.late == 1 and asm.restarts == 1


@pytest.mark.parametrize("n_channels", [None, C], ids=["learned", "given"])
def test_a_counter_falling_back_before_anything_left_keeps_every_sample(n_channels):
    """A stale counter at the start (Open Ephys plugin-GUI #623): one block at 69299863, then the
    counter starts again at 0. Both blocks go out, in arrival order, with a restart between them,
    and the channel count is learned from the block that arrived first."""
    asm = BlockAssembler(n_channels=n_channels)
    out = feed(asm, msgs(69299863, 0) + msgs(0, C) + msgs(N, 2 * C) + msgs(2 * N, 3 * C))
    out += asm.flush()
    assert [type(x).__name__ for x in out] == ["Block", "Restart", "Block", "Block", "Block"]
    assert [x.sample_num for x in blocks(out)] == [69299863, 0, N, 2 * N]
    assert asm.n_channels == C and asm.restarts == 1 and asm.missing_channels == 0
    assert sum(b.data.shape[1] for b in blocks(out)) == 4 * N  # every received sample


def test_a_restart_first_sends_what_was_pending():
    asm = BlockAssembler(n_channels=C, max_pending=5)
    out = feed(asm, msgs(0, 0, channels=[0, 1, 2]))  # channel 3 missing: the block waits
    assert not blocks(out)
    out = feed(asm, msgs(0, 0))  # message_num back to 0: restart
    kinds = [type(x).__name__ for x in out]
    assert kinds[:2] == ["Block", "Restart"] and blocks(out)[0].missing == 1


def test_events_and_other_streams_are_counted_and_ignored():
    asm = BlockAssembler(stream="ProbeA-AP", n_channels=C)
    ev = decode(encode_ttl(0, "ProbeA-AP", 0, 1, True))
    other = msgs(0, 1, stream="ProbeA-LFP")
    out = feed(asm, [ev] + other + msgs(0, 1 + C))
    assert asm.events == 1 and asm.other_stream == C
    assert len(blocks(out)) == 1


def test_heartbeat_without_a_plugin_never_blocks():
    ctx = zmq.Context.instance()
    stop = threading.Event()
    hb = Heartbeat(ctx, "tcp://127.0.0.1:1", "uuid-x", stop, interval=0.05, timeout=0.05)
    hb.start()
    end = time.monotonic() + 120
    while hb.timeouts < 2 and time.monotonic() < end:
        time.sleep(0.02)
    stop.set()
    hb.join(60)
    assert not hb.is_alive()
    assert hb.sent >= 2 and hb.timeouts >= 2 and hb.replies == 0


def test_joining_in_the_middle_of_a_block_drops_only_that_partial_block():
    asm = BlockAssembler()
    out = feed(asm, msgs(0, 0, channels=[2, 3]) + msgs(N, C) + msgs(2 * N, 2 * C)) + asm.flush()
    assert [x.sample_num for x in blocks(out)] == [N, 2 * N]
    assert asm.partial_first == 1 and asm.missing_channels == 0 and asm.n_channels == C


# --------------------------------------------------------------------------- channel count, jumps, restarts


def chan_msgs(sample_num, first_msg, channels, n_total=None):
    """Messages of one block for `channels` (any numbers), as the plugin numbers them."""
    names = [f"CH{k + 1}" for k in range(max(channels) + 1)]
    enc = DataEncoder("ProbeA-AP", names, 30000.0)
    enc.message_num = first_msg
    data = np.stack([np.full(N, 1000 * k + sample_num, np.float32) for k in range(max(channels) + 1)])
    parts = enc.encode_block(sample_num, data)
    return [decode(parts[k]) for k in channels]


def stream_of(n_blocks, channels, first_sample=0, first_msg=0):
    out, m = [], first_msg
    for b in range(n_blocks):
        out += chan_msgs(first_sample + b * N, m, list(channels))
        m += len(channels)
    return out, m


def partition_holds(asm):
    return asm.messages == asm.malformed + asm.data_messages + asm.events + asm.other_stream + asm.internal_errors


@pytest.mark.parametrize("stray", [C, C + 1, 1000, 4095])
def test_a_stray_channel_never_changes_a_learned_channel_count(stray):
    ms, m = stream_of(6, range(C))
    extra = chan_msgs(2 * N, m, [stray])  # one message of block 2 with a channel beyond the count
    out = feed(asm := BlockAssembler(), ms[:3 * C] + extra + ms[3 * C:]) + asm.flush()
    assert [type(x).__name__ for x in out] == ["Block"] * 6
    assert all(b.data.shape == (C, N) for b in blocks(out)) and asm.n_channels == C
    assert asm.stray_channels == 1 and asm.malformed == 1 and asm.restarts == asm.channel_changes == 0
    assert asm.data_messages == 6 * C and partition_holds(asm)


def test_a_channel_count_that_grows_is_confirmed_and_every_message_kept():
    ms, m = stream_of(4, range(C))
    grown, m = stream_of(5, range(2 * C), first_sample=4 * N, first_msg=m)
    out = feed(asm := BlockAssembler(), ms + grown) + asm.flush()
    kinds = [type(x).__name__ for x in out]
    assert kinds == ["Block"] * 4 + ["Restart"] + ["Block"] * 5
    b = blocks(out)
    assert [x.data.shape[0] for x in b] == [C] * 4 + [2 * C] * 5
    assert [x.sample_num for x in b] == [k * N for k in range(9)]
    assert b[4].data[2 * C - 1, 0] == 1000 * (2 * C - 1) + 4 * N  # the first grown block keeps its new channels
    assert asm.channel_changes == 1 and asm.malformed == asm.missing_channels == 0 and partition_holds(asm)


def test_a_channel_count_that_shrinks_is_confirmed_without_filling():
    ms, m = stream_of(4, range(2 * C))
    less, m = stream_of(5, range(C), first_sample=4 * N, first_msg=m)
    out = feed(asm := BlockAssembler(), ms + less) + asm.flush()
    assert [type(x).__name__ for x in out] == ["Block"] * 4 + ["Restart"] + ["Block"] * 5
    assert [x.data.shape[0] for x in blocks(out)] == [2 * C] * 4 + [C] * 5
    assert asm.channel_changes == 1 and asm.missing_channels == 0


def test_a_given_channel_count_makes_channels_beyond_it_malformed():
    ms, m = stream_of(3, range(C))
    out = feed(asm := BlockAssembler(n_channels=C), ms[:C] + chan_msgs(0, m, [C + 3]) + ms[C:]) + asm.flush()
    assert len(blocks(out)) == 3 and asm.malformed == 1 and asm.restarts == 0
    assert "--channels" in asm.last_reason and partition_holds(asm)


def test_a_block_larger_than_the_bound_is_malformed_before_anything_is_allocated():
    from livedenoise.stream.protocols.zmq_interface import encode_data
    from livedenoise.stream.sources.openephys import MAX_BLOCK_VALUES

    n = 1 << 16
    m = decode(encode_data(0, "ProbeA-AP", 4095, "x", 0, 30000.0, np.zeros(n, np.float32)))
    asm = BlockAssembler()
    assert 4096 * n > MAX_BLOCK_VALUES
    assert feed(asm, [m]) == [] and asm.malformed == 1 and not asm.pending


def test_a_sample_num_jump_beyond_max_gap_is_a_new_acquisition_counted_as_received():
    import tracemalloc

    ms, m = stream_of(3, range(C))
    far, m = stream_of(3, range(C), first_sample=10**12, first_msg=m)
    near, m = stream_of(2, range(C), first_sample=10**12 + 3 * N + 500, first_msg=m)
    tracemalloc.start()
    out = feed(asm := BlockAssembler(n_channels=C, max_gap=10_000), ms + far + near) + asm.flush()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 10 << 20  # nothing in proportion to the jump
    assert [type(x).__name__ for x in out] == ["Block"] * 3 + ["Restart"] + ["Block"] * 3 + ["Gap", "Block", "Block"]
    assert asm.jumps == 1 and asm.sample_gaps == 1 and asm.dropped_samples == 500  # only the real gap
    assert asm.samples_in == 8 * N and asm.restarts == 0


def test_an_implausible_message_num_is_not_counted_as_lost_messages():
    ms, m = stream_of(4, range(C))
    stray = chan_msgs(N, (1 << 62) - 8, [1])
    out = feed(asm := BlockAssembler(n_channels=C), ms[:2 * C] + stray + ms[2 * C:]) + asm.flush()
    assert asm.gaps == 0 and asm.message_num_jumps == 1 and asm.late == 1 and len(blocks(out)) == 4
    # later messages are still the newest: a counter falling back in them is a restart, not "late"
    back = chan_msgs(0, m, list(range(C)))
    out = feed(asm, back) + asm.flush()
    assert asm.restarts == 1 and asm.late == 1 and [x.sample_num for x in blocks(out)] == [0]


@pytest.mark.parametrize("how", ["message_num 0", "sample_num falls back", "sample rate", "jump"])
def test_a_restart_sends_the_blocks_waiting_for_channels_filled_and_flagged(how):
    asm = BlockAssembler(n_channels=C, max_pending=5, max_gap=10_000)
    ms, m = stream_of(4, range(C))
    ms = [x for x in ms if not (x.channel_num == 2 and x.sample_num >= 2 * N)]  # blocks 2 and 3 lack channel 2
    out = feed(asm, ms)
    assert [x.sample_num for x in blocks(out)] == [0, N]  # 2 and 3 wait for channel 2
    if how == "message_num 0":
        nxt, _ = stream_of(1, range(C), first_sample=0, first_msg=0)
    elif how == "sample_num falls back":
        nxt, _ = stream_of(1, range(C), first_sample=0, first_msg=m)
    elif how == "jump":
        nxt, _ = stream_of(1, range(C), first_sample=10**9, first_msg=m)
    else:
        enc = DataEncoder("ProbeA-AP", [f"CH{k + 1}" for k in range(C)], 20000.0)
        enc.message_num = m
        nxt = [decode(p) for p in enc.encode_block(4 * N, np.zeros((C, N), np.float32))]
    out = feed(asm, nxt)
    kinds = [type(x).__name__ for x in out]
    assert kinds == ["Block", "Block", "Restart", "Block"]
    b = blocks(out)
    assert [x.filled for x in b[:2]] == [[2], [2]] and b[0].missing == 1 and np.all(b[0].data[2] == 0)
    assert np.array_equal(b[0].data[3], np.full(N, 3000 + 2 * N, np.float32))  # the channels that came, untouched
    assert asm.missing_channels == 2 and asm.incomplete_blocks == 2
    assert asm.samples_in == 5 * N and partition_holds(asm)
