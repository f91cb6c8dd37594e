#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_gguf (tests/fuzz/seeds/fuzz_gguf/): small GGUF files made with
the gguf package's writer, with byte-level BPE tokenizer metadata and tensors of every type the
reader dequantizes. Run from the repository root with the project venv:
    .venv/bin/python tests/model/make_fuzz_seeds.py"""
import os

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter
from gguf.quants import quantize

out = "tests/fuzz/seeds/fuzz_gguf"
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(5)
chars = [chr(c) for c in range(ord("!"), ord("~") + 1)]


def write(name, with_tok, types):
    w = GGUFWriter(os.path.join(out, name), "llama")
    w.add_block_count(1)
    w.add_embedding_length(32)
    if with_tok:
        w.add_tokenizer_model("gpt2")
        toks = ["<|im_start|>", "Ġ"] + chars + ["ab", "Ġa", "abc"]
        w.add_token_list(toks)
        w.add_token_types([3] + [1] * (len(toks) - 1))
        w.add_token_merges(["a b", "Ġ a", "ab c"])
        w.add_bos_token_id(0)
    for i, t in enumerate(types):
        a = rng.standard_normal((2, 32)).astype(np.float32)
        if t == Q.F32:
            w.add_tensor(f"t{i}", a)
        elif t == Q.F16:
            w.add_tensor(f"t{i}", a.astype(np.float16))
        else:
            w.add_tensor(f"t{i}", quantize(a, t), raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


write("tiny_tok.gguf", True, [Q.F32, Q.Q8_0])
write("tensors.gguf", False, [Q.F16, Q.Q4_0, Q.Q4_1, Q.Q8_0])
