#!/usr/bin/env python3
"""Plots the perplexity table of docs/QUALITY.md (section "Perplexity (SmolLM2-135M)") into
docs/quality.png: perplexity change against F16 per format and text, and the same change against
the KV bits per element. The table is the only input, so the plot cannot drift from it.
    .venv/bin/python tools/kvrun/plot_quality.py [docs/QUALITY.md] [docs/quality.png]"""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

src = sys.argv[1] if len(sys.argv) > 1 else "docs/QUALITY.md"
dst = sys.argv[2] if len(sys.argv) > 2 else "docs/quality.png"
rows, inside = [], False
for line in open(src, encoding="utf-8"):
    if line.startswith("## "):
        inside = line.strip() == "## Perplexity (SmolLM2-135M)"
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if inside and line.startswith("|") and len(cells) >= 6 and cells[2][:1].isdigit():
        rows.append((cells[0], cells[1], float(cells[2]), float(cells[3].rstrip("%")),
                     float(cells[4])))
if not rows:
    sys.exit("plot_quality.py: no table rows found in " + src)
texts = list(dict.fromkeys(r[0] for r in rows))
fmts = list(dict.fromkeys(r[1] for r in rows))
fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
width = 0.8 / len(texts)
for i, t in enumerate(texts):
    d = {r[1]: r for r in rows if r[0] == t}
    xs = [k + i * width for k, f in enumerate(fmts) if f in d]
    a.bar(xs, [d[f][3] for f in fmts if f in d], width, label=t)
    b.scatter([d[f][4] for f in fmts if f in d], [d[f][3] for f in fmts if f in d], label=t)
    if i == len(texts) - 1:  # label each format once, staggered: several share a bit width
        seen = {}
        for f in fmts:
            if f in d:
                k = seen.setdefault(d[f][4], 0)
                seen[d[f][4]] += 1
                b.annotate(f, (d[f][4], d[f][3]), textcoords="offset points",
                           xytext=(6, 10 - 11 * k), fontsize=8)
a.set_xticks([k + width * (len(texts) - 1) / 2 for k in range(len(fmts))], fmts, rotation=30)
a.set_ylabel("perplexity change vs F16 (%), symlog")
a.set_yscale("symlog", linthresh=1)
a.set_title("SmolLM2-135M, KV cache storage format")
a.axhline(0, color="black", linewidth=0.5)
a.legend()
b.set_xlabel("KV bits per element (scales included)")
b.set_ylabel("perplexity change vs F16 (%), symlog")
b.set_yscale("symlog", linthresh=1)
b.set_title("cost against size")
b.axhline(0, color="black", linewidth=0.5)
b.legend()
fig.tight_layout()
fig.savefig(dst, dpi=110)
print("wrote", dst)
