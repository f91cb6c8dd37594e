#!/usr/bin/env python3
"""Write the fuzz_spill_slot seeds: slot images built from the format documented in kvd/spill.h,
independently of kvd's C code (hashlib BLAKE2b for the header, libxxhash through ctypes for the
payload). test_spill_basic checks that the C decoder accepts them.
Run from the repository root: tests/spill/make_fuzz_seeds.py"""
import ctypes
import hashlib
import random
import struct

KEY = bytes([0x42] * 32)


class XXH128(ctypes.Structure):
    _fields_ = [("low64", ctypes.c_uint64), ("high64", ctypes.c_uint64)]


xxh = ctypes.CDLL("libxxhash.so.0")
xxh.XXH3_128bits_withSeed.restype = XXH128
xxh.XXH3_128bits_withSeed.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]


def pay_sum(payload):
    seed = struct.unpack("<Q", KEY[:8])[0]
    h = xxh.XXH3_128bits_withSeed(payload, len(payload), seed)
    return struct.pack(">QQ", h.high64, h.low64)  # XXH128 canonical form


def seg_bytes(fmt, t=16, d=32):
    n = {1: t * d * 2, 2: t * d * 2, 3: t * d + t * 4, 4: t * d + t * 4, 5: t * d + t * 4}[fmt]
    return (n + 63) // 64 * 64


def image(slot, kf, vf, orig_k, orig_v, flags, ntok=16):
    pay = seg_bytes(kf) + seg_bytes(vf)  # 1 layer, 1 head
    rnd = random.Random(slot)
    payload = bytes(rnd.randrange(256) for _ in range(pay))
    ns = b"fuzz-ns".ljust(64, b"\0")
    layout = struct.pack("<HHHHBBH", 1, 1, 32, 16, kf, vf, 8)

    def hdr(hsum):
        return (struct.pack("<IHHIIQ", 0x5053564B, 1, 176, slot, pay, 7) + ns + layout +
                bytes([orig_k, orig_v]) + struct.pack("<HHH", ntok, flags, 0) + bytes(range(16)) +
                bytes(range(16, 32)) + pay_sum(payload) + hsum + struct.pack("<I", 0))

    h = hdr(b"\0" * 16)
    assert len(h) == 176
    h = hdr(hashlib.blake2b(h, key=KEY, digest_size=16).digest())
    return h.ljust(4096, b"\0") + payload


SEEDS = {  # name: (slot, stored k, stored v, orig k, orig v, flags, control byte)
    "fp8_full": (3, 3, 3, 3, 3, 0, 1),
    "demoted_header": (9, 3, 3, 1, 1, 1, 0),
    "mixed_resign": (0, 3, 5, 3, 5, 0, 3),
}
for name, (slot, kf, vf, ok, ov, fl, ctl) in SEEDS.items():
    with open(f"tests/fuzz/seeds/fuzz_spill_slot/{name}", "wb") as f:
        f.write(struct.pack("<IB", slot, ctl) + image(slot, kf, vf, ok, ov, fl))
