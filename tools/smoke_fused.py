"""Device smoke test: batch-1 greedy decode with and without the fused o/FFN kernel (same tokens?)."""
import os
import sys
import time

sys.path.insert(0, ".")
from llama_kernel import LlamaInference  # noqa: E402

res = {}
for fused in ("1", "0"):
    os.environ["LLAMA_KERNEL_FFN_FUSED"] = fused
    m = LlamaInference("synthetic:llama-3.2-1b", device="cuda", max_seq_len=1024, verbose=False)
    t0 = time.perf_counter()
    toks = list(m.generate_ids([5, 6, 7, 8] * 4, max_new_tokens=64, temperature=0, ignore_eos=True)[0])
    print(f"fused={fused}: {time.perf_counter() - t0:.3f} s, first tokens {toks[:8]}", flush=True)
    res[fused] = toks
    del m
print("same tokens" if res["1"] == res["0"] else "TOKENS DIFFER")
sys.exit(0 if res["1"] == res["0"] else 1)
