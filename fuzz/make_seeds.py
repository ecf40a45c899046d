#!/usr/bin/env python3
"""Writes valid seed inputs (correct checksums) into fuzz/corpus/, so the byte-level decoder
targets start from real frames, headers and tables instead of stopping at the first checksum.
Layouts: engine/FORMAT.md. The structure-aware targets (recovery, log_model) need no seeds: any
bytes decode to a valid input."""
import os, struct, zlib

MASK = 0xA282EAD8
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

def crc(b):
    return (zlib.crc32(b) & 0xFFFFFFFF) ^ MASK

def frame(offset, ts, kind, flags, header, payload):
    fixed = struct.pack("<IQQHBB", len(payload), offset, ts, len(header), kind, flags)
    fixed += struct.pack("<I", crc(fixed))
    body = fixed + header + payload
    return struct.pack("<I", crc(body)) + body

def file_header(magic, base, ts):
    b = magic + struct.pack("<H", 1) + bytes(6) + struct.pack("<QQ", base, ts) + bytes(28)
    return b + struct.pack("<I", crc(b))

def head(base, committed, synced, nxt, ts, start):
    b = b"SHOALHED" + struct.pack("<H", 1) + bytes(6) + struct.pack("<6Q", base, committed, synced, nxt, ts, start)
    return b + struct.pack("<I", crc(b))

def meta(magic, payload):
    fixed = magic + struct.pack("<HHI", 1, 0, len(payload))
    return fixed + struct.pack("<I", crc(fixed + payload)) + payload

def write(target, name, data):
    os.makedirs(os.path.join(root, target), exist_ok=True)
    with open(os.path.join(root, target, name), "wb") as f:
        f.write(data)

write("record_frame", "seed-empty", frame(0, 0, 0, 1, b"", b""))
write("record_frame", "seed-small", frame(7, 1700000000000, 1, 1, b"key", b"hello"))
write("record_frame", "seed-mid-batch", frame(2**40, 5, 3, 0, b"k" * 20, bytes(range(256))))
write("record_frame", "seed-two", frame(1, 1, 1, 0, b"a", b"b") + frame(2, 1, 1, 1, b"a", b"c"))
write("file_header", "seed-segment", file_header(b"SHOALSEG", 4711, 1700000000000))
write("file_header", "seed-index", file_header(b"SHOALIDX", 0, 0))
write("head", "seed-head", head(100, 5000, 4000, 150, 1700000000000, 10))
entries = b"".join(struct.pack("<IIQ", i * 10, 64 + i * 4096, 1000 + i) for i in range(8))
write("index_entries", "seed-table", struct.pack("<IQ", 64, 2**20) + entries)
write("index_entries", "seed-disorder", struct.pack("<IQ", 64, 2**40) + entries[:32] + entries[:16])
# bincode standard config: varint lengths; a String "demo" is [4] + b"demo".
write("metadata", "seed-string", meta(b"SHOALSTM", bytes([4]) + b"demo"))
write("metadata", "seed-tuple", meta(b"SHOALSTM", bytes([1]) + b"x" + bytes([2, 1, 5]) + bytes([7, 1])))
