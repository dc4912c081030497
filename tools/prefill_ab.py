"""A/B of the prefill matmul kernel inside the engine: time to first token for long prompts with
LLAMA_KERNEL_WGMMA=0 (mma.sync tile kernel) and unset (wgmma on sm_90a), same engine, same run.
--env NAME A/Bs another switch the library reads on every call instead (e.g. LLAMA_KERNEL_TOK_KERNEL).
--prompts N sends N prompts of each length at once (N <= --batch): one prefill chunk packing them, as a batch
of requests does (e.g. --batch 64 --prompts 64 --lengths 32 --env LLAMA_KERNEL_ATTN_ROWS).

    python tools/prefill_ab.py [--model synthetic:llama-3.2-1b] [--batch 1] [--lengths 512,2048] [--env NAME]
                               [--chunk ROWS] [--prompts N]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
from _common import device_line  # noqa: E402

from llama_kernel import LlamaInference, _C  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="synthetic:llama-3.2-1b")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--lengths", default="128,512,2048")
    ap.add_argument("--env", default="LLAMA_KERNEL_WGMMA", help="the switch to A/B (read every call)")
    ap.add_argument("--order", default="0,,0,", help="its values in run order ('' = default)")
    ap.add_argument("--chunk", type=int, default=None, help="prefill_chunk (default: the engine's, 2,048 on CUDA)")
    ap.add_argument("--prompts", type=int, default=1, help="prompts of each length sent together (<= --batch)")
    a = ap.parse_args()
    if not 1 <= a.prompts <= a.batch:
        ap.error(f"--prompts {a.prompts} must be between 1 and --batch ({a.batch})")
    print(f"# prefill A/B of {a.env}, {a.model}, batch_size {a.batch}, {device_line()}, wgmma={_C.build_info().get('wgmma')}")
    m = LlamaInference(a.model, device="cuda", batch_size=a.batch, max_seq_len=max(4096, 2 * (a.chunk or 0)),
                      prefill_chunk=a.chunk, verbose=False)
    for L in [int(v) for v in a.lengths.split(",")]:
        rng = np.random.default_rng(L)
        ids = [rng.integers(0, m.config.vocab_size, L).tolist() for _ in range(a.prompts)]
        if a.prompts == 1:
            ids = ids[0]
        line = []
        for v in a.order.split(","):
            os.environ[a.env] = v
            out = m.generate_ids(ids, max_new_tokens=1, temperature=0, ignore_eos=True)
            ts = []
            for _ in range(5):
                _, st = m.generate_ids(ids, max_new_tokens=1, temperature=0, ignore_eos=True, return_stats=True)
                ts.append(st["first_token_seconds"] * 1e3)
            line.append(f"{v or 'auto'}: {np.median(ts):.2f} ms (token {out[0] if isinstance(out[0], int) else out[0][0]})")
        print(f"prefill {a.prompts} x {L:5d} tokens | " + " | ".join(line), flush=True)
    os.environ.pop(a.env, None)


if __name__ == "__main__":
    main()
