"""Tokenizer speed: tokenizer.json load time and encode throughput (MB/s, one
thread) on long English prose (Python's pydoc topics) and on code (stdlib
sources), side by side with Hugging Face `tokenizers` when it is installed,
which also checks that both give the same ids on the whole corpus.

    python benchmarks/bench_tokenizer.py [path/to/tokenizer.json]
"""
import os
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")

from _common import save_json  # noqa: E402
from llama_kernel.tokenizer import Tokenizer  # noqa: E402


def corpora():
    from pydoc_data.topics import topics

    prose = "\n\n".join(topics[k] for k in sorted(topics))
    libdir = os.path.dirname(os.__file__)
    code = ""
    for name in ("argparse.py", "inspect.py", "typing.py", "dataclasses.py", "subprocess.py", "tarfile.py"):
        p = os.path.join(libdir, name)
        if os.path.exists(p):
            code += open(p, encoding="utf-8").read()
    return {"prose": prose, "code": code}


def best_of(fn, n=3):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = fn()
        ts.append(time.perf_counter() - t0)
    return min(ts), r


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    cands = sys.argv[1:] + [os.environ.get("LLAMA_KERNEL_TOKENIZER_FIXTURES", "") + "/tokenizer.json",
                            os.path.join(here, "..", "..", "shared", "fixtures", "llama3-tokenizer", "tokenizer.json"),
                            os.path.join(here, "..", ".fixtures", "llama3-tokenizer", "tokenizer.json")]
    path = next((c for c in cands if c and os.path.isfile(c)), None)
    if not path:
        sys.exit("no tokenizer.json found; pass its path")
    res = {"tokenizer": path, "rows": []}
    t_load, ours = best_of(lambda: Tokenizer.from_file(path))
    res["load_seconds"] = t_load
    hf = None
    try:
        import tokenizers

        t_hf_load, hf = best_of(lambda: tokenizers.Tokenizer.from_file(path))
        res["hf_load_seconds"] = t_hf_load
        res["hf_version"] = tokenizers.__version__
    except ImportError:
        pass
    print(f"load tokenizer.json: llama_kernel {t_load * 1e3:.0f} ms" +
          (f", HF tokenizers {res['hf_load_seconds'] * 1e3:.0f} ms" if hf else ""))
    print("| corpus | MB | llama_kernel MB/s | HF tokenizers MB/s | ratio | same ids |")
    print("|---|---|---|---|---|---|")
    for name, text in corpora().items():
        mb = len(text.encode("utf-8")) / 1e6
        t, ids = best_of(lambda: ours.encode(text))
        row = {"corpus": name, "mb": mb, "ours_mb_s": mb / t, "tokens": len(ids)}
        if hf:
            th, enc = best_of(lambda: hf.encode(text, add_special_tokens=False))
            row["hf_mb_s"] = mb / th
            row["same_ids"] = enc.ids == ids
        res["rows"].append(row)
        print(f"| {name} | {mb:.2f} | {row['ours_mb_s']:.1f} | {row.get('hf_mb_s', 0):.1f} | "
              f"{row['ours_mb_s'] / row['hf_mb_s'] if hf else 0:.2f}x | {row.get('same_ids', '-')} |", flush=True)
    save_json(res, "bench_tokenizer.json")


if __name__ == "__main__":
    main()
