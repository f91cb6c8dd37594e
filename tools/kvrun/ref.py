#!/usr/bin/env python3
"""Independent reference for kvrun: the same GGUF model run with the `gguf` and `numpy` packages,
and its tokenizer rebuilt with Hugging Face's `tokenizers` from the GGUF vocabulary and merges.

Written from the Llama definition, not from kvrun's C code: weights dequantized by gguf's own
dequantizer, the whole prompt evaluated at once with matrix products and a causal mask, in
float64, rotary embedding as a complex rotation of adjacent channel pairs, grouped-query
attention by repeating KV heads, and greedy decoding by recomputing the full sequence each step
(no KV cache at all).

  ref.py tokenize --text T | --file F           HF token ids, one line
  ref.py logits --ids "1 2 3,4 5" --out F.f32   last-position logits of each comma-separated
                                                prompt, raw little-endian f32, concatenated
  ref.py generate --ids "1 2 3" -n N            greedy ids, then the smallest top-2 margin
  (logits with --gen N also runs generate on the first prompt, loading the model once)
Option --f16-pages P: keys/values of positions in complete pages of P tokens that precede the
query's own page are rounded to float16 before use (kvrun's F16 storage format).
"""
import argparse
import glob
import os
import sys

# One BLAS thread: the test machines have 2 shared cores, where spinning BLAS threads are 5x slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from gguf import GGUFReader  # noqa: E402
from gguf.quants import dequantize  # noqa: E402


def find_model(path):
    if path:
        return path
    if os.environ.get("KVRUN_MODEL"):
        return os.environ["KVRUN_MODEL"]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    hits = sorted(glob.glob(os.path.join(root, ".venv/lib/python3*/site-packages/*/*.gguf")))
    if not hits:
        sys.exit("ref.py: no model found (run tools/bootstrap.sh)")
    return hits[0]


def field(r, key):
    f = r.fields[key]
    return f.contents() if hasattr(f, "contents") else f.parts[f.data[0]][0]


def hf_tokenizer(r):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    toks = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field(r, "tokenizer.ggml.merges")]
    tk = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(toks)}, merges=merges))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False)
                           for t, ty in zip(toks, types) if ty in (3, 4)])
    return tk


class Llama:
    def __init__(self, r):
        self.n_layers = int(field(r, "llama.block_count"))
        self.dim = int(field(r, "llama.embedding_length"))
        self.n_heads = int(field(r, "llama.attention.head_count"))
        self.n_kv = int(field(r, "llama.attention.head_count_kv"))
        self.eps = float(field(r, "llama.attention.layer_norm_rms_epsilon"))
        self.base = float(field(r, "llama.rope.freq_base"))
        self.hd = self.dim // self.n_heads
        self.w = {}
        for t in r.tensors:
            a = dequantize(t.data, t.tensor_type)  # numpy shape: reversed GGUF ne, rows last
            self.w[t.name] = np.asarray(a, dtype=np.float64).reshape(
                [int(x) for x in reversed(t.shape)] if len(t.shape) > 1 else [-1])
        self.out = self.w.get("output.weight", self.w["token_embd.weight"])

    def rms(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos):  # x: [T, heads, hd]; pairs (2i, 2i+1) as complex numbers
        freq = self.base ** (-np.arange(0, self.hd, 2, dtype=np.float64) / self.hd)
        rot = np.exp(1j * np.outer(pos, freq))[:, None, :]
        z = (x[..., 0::2] + 1j * x[..., 1::2]) * rot
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = z.real, z.imag
        return out

    def forward(self, ids, f16_pages=0):
        T = len(ids)
        pos = np.arange(T)
        x = self.w["token_embd.weight"][ids]
        mask = np.triu(np.full((T, T), -np.inf), 1)
        rep = self.n_heads // self.n_kv
        for l in range(self.n_layers):
            g = lambda n: self.w[f"blk.{l}.{n}.weight"]
            h = self.rms(x, g("attn_norm"))
            q = self.rope((h @ g("attn_q").T).reshape(T, self.n_heads, self.hd), pos)
            k = self.rope((h @ g("attn_k").T).reshape(T, self.n_kv, self.hd), pos)
            v = (h @ g("attn_v").T).reshape(T, self.n_kv, self.hd)
            k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
            s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(self.hd) + mask
            if f16_pages:
                # query t sees key j < (t // P) * P in its stored float16 form
                kq = k.astype(np.float16).astype(np.float64)
                vq = v.astype(np.float16).astype(np.float64)
                sq = np.einsum("qhd,khd->hqk", q, kq) / np.sqrt(self.hd) + mask
                stored = (pos[None, :] < (pos[:, None] // f16_pages) * f16_pages)[None]
                s = np.where(stored, sq, s)
            p = np.exp(s - s.max(axis=-1, keepdims=True))
            p /= p.sum(axis=-1, keepdims=True)
            if f16_pages:
                o = np.einsum("hqk,khd->qhd", np.where(stored, p, 0), vq) + \
                    np.einsum("hqk,khd->qhd", np.where(stored, 0, p), v)
            else:
                o = np.einsum("hqk,khd->qhd", p, v)
            x = x + o.reshape(T, self.dim) @ g("attn_output").T
            h = self.rms(x, g("ffn_norm"))
            a = h @ g("ffn_gate").T
            x = x + ((a / (1 + np.exp(-a))) * (h @ g("ffn_up").T)) @ g("ffn_down").T
        return self.rms(x[-1], self.w["output_norm.weight"]) @ self.out.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["tokenize", "logits", "generate"])
    ap.add_argument("--model")
    ap.add_argument("--text")
    ap.add_argument("--file")
    ap.add_argument("--ids")
    ap.add_argument("--out")
    ap.add_argument("-n", type=int, default=8)
    ap.add_argument("--gen", type=int, default=0)
    ap.add_argument("--f16-pages", type=int, default=0)
    a = ap.parse_args()
    r = GGUFReader(find_model(a.model))
    if a.cmd == "tokenize":
        text = open(a.file, encoding="utf-8", newline="").read() if a.file else a.text
        print(" ".join(map(str, hf_tokenizer(r).encode(text, add_special_tokens=False).ids)))
        return
    prompts = [[int(t) for t in p.split()] for p in a.ids.split(",")]
    ids = prompts[0]
    m = Llama(r)
    if a.cmd == "logits":
        np.concatenate([m.forward(p, a.f16_pages) for p in prompts]).astype("<f4").tofile(a.out)
        if not a.gen:
            return
        a.n = a.gen
    out, margin = [], np.inf
    for _ in range(a.n):
        lg = m.forward(ids + out, a.f16_pages)
        top = np.sort(lg)[-2:]
        margin = min(margin, top[1] - top[0])
        out.append(int(np.argmax(lg)))
    print(" ".join(map(str, out)))
    print(f"{margin:.6f}")


if __name__ == "__main__":
    main()
