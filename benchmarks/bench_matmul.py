"""int4 matmul: every variant on the Llama 3.2 shapes, against cuBLAS bf16 and
PyTorch's tinygemm int4 kernel (torch._weight_int4pack_mm) when torch is
installed. Median us per call inside a CUDA graph; weights rotated through
enough copies that the 50 MB L2 cannot hold them. Bytes = packed int4 + scales/mins.
Each shape writes its output as the decode step does (o and down add into the
fp32 residual, gate_up applies SwiGLU), so split-K and epilogue costs count.

The "tiled" column is the tensor-core layout that engines of 2+ sequences use
(small-batch kernel up to 16 rows, tile kernel above); "batched" is the tile
kernel on the row-interleaved layout. On Hopper both take the wgmma kernel where
the dispatcher picks it (17+ rows; LLAMA_KERNEL_WGMMA=0 for the mma.sync kernels).

    python benchmarks/bench_matmul.py [--quick] [--tune] [--tune-tiled]

LLAMA_KERNEL_BENCH_COPIES=1 times one weight copy instead (L2-resident when it fits: the "hot" time).
"""
import argparse
import os

# (_common.MATMUL_SHAPES: each shape's output mode as the decode step uses it; split-K applies only to the add into
# the residual, o and down)
from _common import MATMUL_SHAPES, _C, device_line, matmul_shapes, save_json, time_torch_graph, torch_or_none


def tune(iters):
    """One-row GEMV configurations (weight rows per warp, chunks in flight per lane, K splits) per shape."""
    print("| shape | mode | rows/warp | chunks in flight | K splits | us | TB/s |\n|---|---|---|---|---|---|---|")
    out = []
    for name, N, K, mode in MATMUL_SHAPES:
        nbytes = N * K / 2 + N * K / 128 * 4
        res = [(0, 0, 0)]
        for rr in (1, 2, 4):
            if rr == 1 and mode == 2:
                continue
            for u in (2, 4, 8):
                for s in ((1, 2, 4) if mode == 1 else (1,)):
                    res.append((rr, u, s))
        for rr, u, s in res:
            try:
                t = _C.cuda_bench_matmul(1, N, K, mode, 2, False, iters, (rr, u, s))
            except Exception as e:  # a configuration that does not exist for this shape
                print(f"| {name} | {mode} | {rr} | {u} | {s} | error: {str(e)[:60]} | |")
                continue
            out.append({"shape": name, "rr": rr, "u": u, "s": s, "us": t})
            print(f"| {name} | {mode} | {rr or 'auto'} | {u or 'auto'} | {s or 'auto'} | {t:.2f} | {nbytes / t / 1e6:.2f} |",
                  flush=True)
    save_json({"device": device_line(), "rows": out}, "bench_matmul_tune.json")
VARIANTS = [("lut", 1), ("optimized", 2), ("batched", 3), ("tiled", 0)]


def bench(M, N, K, mode, variant, iters, tune=(0, 0, 0), tiled=False):
    """median us of one call; tiled: the tensor-core layout (LLAMA_KERNEL_TILED=1 for this call)"""
    old = os.environ.get("LLAMA_KERNEL_TILED")
    os.environ["LLAMA_KERNEL_TILED"] = "1" if tiled else "0"
    try:
        return _C.cuda_bench_matmul(M, N, K, mode, variant, False, iters, tune)
    finally:
        if old is None:
            del os.environ["LLAMA_KERNEL_TILED"]
        else:
            os.environ["LLAMA_KERNEL_TILED"] = old


def tune_tiled(iters, Ms=(1, 4, 16)):
    """Tiled small-batch kernel configurations (warps along K per block, groups per load step of
    one-block units, K splits) per shape and M."""
    print("| shape | M | warps along K | groups per step | K splits | us | TB/s |\n|---|---|---|---|---|---|---|")
    out = []
    for name, N, K, mode in MATMUL_SHAPES:
        nbytes = N * K / 2 + N * K / 128 * 4
        for M in Ms:
            confs = [(0, 0, 0)] + [(wk, g, 1) for wk in (1, 2, 4, 8) for g in (1, 2)] + [(16, 0, 1), (8, 0, 2)]
            for wk, g, s in confs:
                if wk * s > K // 128 or (mode == 2 and g == 2):  # SwiGLU pairs load one group per step
                    continue
                try:
                    t = bench(M, N, K, mode, 0, iters, (wk, g, s), tiled=True)
                except Exception as e:
                    print(f"| {name} | {M} | {wk} | {g} | {s} | error: {str(e)[:60]} | |")
                    continue
                out.append({"shape": name, "M": M, "wk": wk, "g": g, "s": s, "us": t})
                print(f"| {name} | {M} | {wk or 'auto'} | {g or 'auto'} | {s or 'auto'} | {t:.2f} | "
                      f"{nbytes / t / 1e6:.2f} |", flush=True)
    save_json({"device": device_line(), "rows": out}, "bench_matmul_tune_tiled.json")


def peers(torch, M, N, K):
    out = {}
    copies = max(1, min(32, int(256e6 // (N * K * 2)) + 1))
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    ws = [torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(copies)]
    out["cublas_bf16"] = time_torch_graph(torch, lambda i: torch.nn.functional.linear(x, ws[i % copies]))
    try:
        wq = []
        for w in ws[: max(1, min(copies * 4, 32))]:
            q = torch.randint(0, 16, (N, K), device="cuda", dtype=torch.int32)
            packed = (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8)
            wq.append(torch._convert_weight_to_int4pack(packed, 8))
        sz = torch.randn(K // 128, N, 2, device="cuda", dtype=torch.bfloat16) * 0.01
        n = len(wq)
        out["tinygemm_int4"] = time_torch_graph(torch, lambda i: torch._weight_int4pack_mm(x, wq[i % n], 128, sz))
    except Exception as e:  # API differs between versions
        out["tinygemm_int4"] = None
        out["tinygemm_error"] = str(e)[:200]
    del ws
    torch.cuda.empty_cache()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--no-peers", action="store_true", help="skip the torch peers")
    ap.add_argument("--shapes", default=None,
                    help="comma-separated shape names to run (qkv, o, gate_up, down, lm_head, 'qkv 3B' or qkv3B, ...)")
    ap.add_argument("--ms", default=None, help="comma-separated M values")
    ap.add_argument("--tune", action="store_true", help="sweep the one-row GEMV configurations and exit")
    ap.add_argument("--tune-tiled", action="store_true", help="sweep the tiled small-batch kernel configurations and exit")
    a = ap.parse_args()
    if a.tune:
        print(f"# one-row GEMV configurations, {device_line()}")
        return tune(a.iters)
    if a.tune_tiled:
        print(f"# tiled small-batch kernel configurations, {device_line()}")
        return tune_tiled(a.iters, [int(m) for m in a.ms.split(",")] if a.ms else (1, 4, 16))
    torch = None if a.no_peers else torch_or_none()
    Ms = [1, 2, 4, 16, 64, 256, 2048] if not a.quick else [1, 4, 16, 256]
    if a.ms:
        Ms = [int(m) for m in a.ms.split(",")]
    rows = []
    print(f"# int4 matmul, {device_line()}")
    print("| shape | M | lut us | optimized us | batched us | tiled us | chosen | chosen TB/s | chosen TFLOP/s | "
          "cuBLAS bf16 us | tinygemm us | vs cuBLAS | vs tinygemm |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, N, K, mode in matmul_shapes(a.shapes):
        for M in Ms:
            if M >= 256 and name in ("qkv 3B", "o 3B", "gate_up 3B", "down 3B", "o", "qkv") and a.quick:
                continue
            r = {"shape": name, "N": N, "K": K, "M": M}
            for vn, v in VARIANTS:
                if vn in ("lut", "optimized") and M > 16:
                    r[vn] = None
                    continue
                r[vn] = bench(M, N, K, mode, v, a.iters, tiled=vn == "tiled")
            # what an engine uses: one sequence the row-interleaved GEMV, 2+ sequences the tiled layout
            r["chosen"] = "optimized" if M == 1 else "tiled"
            best = r[r["chosen"]]
            nbytes = N * K / 2 + N * K / 128 * 4
            r["best_tbps"] = nbytes / best / 1e6
            r["best_tflops"] = 2 * M * N * K / best / 1e6
            if torch is not None and (M <= 16 or M in (256, 2048)):
                r.update(peers(torch, M, N, K))
            cb, tg = r.get("cublas_bf16"), r.get("tinygemm_int4")
            f = lambda t: f"{t:.1f}" if t else "-"  # noqa: E731
            print(f"| {name} | {M} | {f(r['lut'])} | {f(r['optimized'])} | {f(r['batched'])} | {f(r['tiled'])} | {r['chosen']} | "
                  f"{r['best_tbps']:.2f} | {r['best_tflops']:.1f} | {f(cb)} | {f(tg)} | "
                  f"{(cb / best if cb else 0):.2f}x | {(tg / best if tg else 0):.2f}x |", flush=True)
            rows.append(r)
    save_json({"device": device_line(), "rows": rows}, "bench_matmul.json")


if __name__ == "__main__":
    main()
