"""Attention kernels against PyTorch SDPA (bf16) when torch is installed.
32 query heads, 8 KV heads, head_dim 64 (and 128 for prefill). Then the kernel for rows of many
slots (packed prefill chunks) against the plain one, and the RMSNorm and rotary + KV-append kernels at prefill sizes against the card's copy rate.

    python benchmarks/bench_attention.py
"""
import os

from _common import _C, device_line, save_json, time_torch_graph, torch_or_none

CASES = [("prefill causal S=512", "prefill", 1, 512, 64), ("prefill causal S=2048", "prefill", 1, 2048, 64),
         ("prefill causal S=8192", "prefill", 1, 8192, 64), ("prefill causal S=2048 hd128", "prefill", 1, 2048, 128),
         ("prefill causal S=8192 hd128", "prefill", 1, 8192, 128),
         ("decode B=1, L=1024", "decode", 1, 1024, 64), ("decode B=1, L=8192", "decode", 1, 8192, 64),
         ("decode B=1, L=32768", "decode", 1, 32768, 64), ("decode B=16, L=8192", "decode", 16, 8192, 64),
         ("decode B=16, L=32768", "decode", 16, 32768, 64)]


def sdpa(torch, kind, B, L, hd, H=32, KV=8):
    import torch.nn.functional as F

    if kind == "prefill":
        q = torch.randn(B, H, L, hd, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(B, KV, L, hd, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        return time_torch_graph(torch, lambda i: F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                              enable_gqa=True), reps=4)
    q = torch.randn(B, H, 1, hd, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(B, KV, L, hd, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    return time_torch_graph(torch, lambda i: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), reps=4)


def main():
    torch = torch_or_none()
    print(f"# attention, {device_line()}")
    print("| case | flash us | plain us | rate | SDPA us | vs SDPA |")
    print("|---|---|---|---|---|---|")
    rows = []
    for name, kind, B, L, hd in CASES:
        k = 2 if kind == "prefill" else 1
        us = _C.cuda_bench_attention(B, 32, 8, hd, L, k, 10)
        plain = _C.cuda_bench_attention(B, 32, 8, hd, L, 0, 3) if L <= 8192 and not (kind == "prefill" and L > 2048) else None
        if kind == "prefill":
            flops = 4 * B * 32 * hd * L * L / 2
            rate = f"{flops / us / 1e6:.0f} TFLOP/s"
        else:
            kv = B * 8 * L * hd * 2 * 2
            rate = f"{kv / us / 1e6:.2f} TB/s"
        ref = sdpa(torch, kind, B, L, hd) if torch is not None else None
        f = lambda t: f"{t:.1f}" if t else "-"  # noqa: E731
        print(f"| {name} | {us:.1f} | {f(plain)} | {rate} | {f(ref)} | {(ref / us if ref else 0):.2f}x |", flush=True)
        rows.append(dict(case=name, flash_us=us, plain_us=plain, rate=rate, sdpa_us=ref))
    # the Hopper prefill kernel's TMA form at head_dim 128 in blocks of 2 warpgroups (the default: 3) and with
    # 64-key tiles (the default: 128), its cp.async form (v65), the mma.sync kernel (the one on cards without
    # wgmma) and its opt-in form with two m16 tiles of query rows a warp (head_dim 64), same run
    for env in ({"LLAMA_KERNEL_FA_NWG": "2"}, {"LLAMA_KERNEL_FA_BK": "64"}, {"LLAMA_KERNEL_FA_WG": "1"},
                {"LLAMA_KERNEL_FA_WG": "0"}, {"LLAMA_KERNEL_FA_WG": "0", "LLAMA_KERNEL_FA_MT": "2"}):
        os.environ.update(env)
        label = " ".join(f"{k}={v}" for k, v in env.items())
        for name, kind, B, L, hd in CASES:
            wanted = (hd == 64 or "LLAMA_KERNEL_FA_MT" not in env) and (
                hd == 128 or ("LLAMA_KERNEL_FA_BK" not in env and "LLAMA_KERNEL_FA_NWG" not in env))
            if kind == "prefill" and wanted:
                us2 = _C.cuda_bench_attention(B, 32, 8, hd, L, 2, 10)
                print(f"| {name}, {label} | {us2:.1f} | - | {4 * B * 32 * hd * L * L / 2 / us2 / 1e6:.0f} "
                      f"TFLOP/s | - | - |", flush=True)
                rows.append(dict(case=f"{name}, {label}", flash_us=us2))
        for k in env:
            del os.environ[k]
    packed = packed_rows()
    fused = fused_kernels()
    save_json({"device": device_line(), "rows": rows, "packed": packed, "fused": fused}, "bench_attention.json")


def packed_rows(B=256):
    """Rows of many slots (a prefill chunk packing several prompts, where the flash kernel, one slot a
    call, does not apply): the warp-per-(row, head) kernel against the plain kernel, B rows of B slots, each
    at position L - 1 (a packed chunk's rows average half their prompt's length). Since v79 the engine gives a
    packed chunk's short runs to the flash kernel's query blocks instead; the warp kernel serves them with
    LLAMA_KERNEL_ATTN_BLOCKS=0 (LLAMA_KERNEL_ATTN_ROWS=0: the plain kernel; lk_cuda_backend.cu)."""
    print("\n| packed rows: B rows x L positions, head_dim | warp per row us | plain us | plain / warp |")
    print("|---|---|---|---|")
    out = []
    for hd in (64, 128):
        for L in (32, 128, 512, 1024, 2048):
            rows_us = _C.cuda_bench_attention(B, 32, 8, hd, L, 3, 10)
            plain_us = _C.cuda_bench_attention(B, 32, 8, hd, L, 0, 10)
            print(f"| {B} x {L}, {hd} | {rows_us:.1f} | {plain_us:.1f} | {plain_us / rows_us:.2f}x |", flush=True)
            out.append(dict(B=B, L=L, hd=hd, rows_us=rows_us, plain_us=plain_us))
    return out


# (name, dim, query heads, KV heads, head_dim)
FUSED_SHAPES = [("1B", 2048, 32, 8, 64), ("3B", 3072, 24, 8, 128)]


def fused_kernels():
    """The RMSNorm and rotary + KV-append kernels at prefill sizes against the card's copy rate (a device
    copy moving the RMSNorm's bytes, measured in the same run). Bytes: RMSNorm reads fp32 x and writes fp16
    (6 M dim); rotary reads the qkv rows and writes q back and k, v into the cache (4 (H + 2 KV) hd a row)
    plus its cos/sin rows (4 hd)."""
    print("\n| kernel, prefill rows | us | TB/s | copy TB/s | of copy |")
    print("|---|---|---|---|---|")
    out = []
    for name, dim, H, KV, hd in FUSED_SHAPES:
        for M in (512, 2048):
            norm_us, rope8_us, copy_us = _C.cuda_bench_norm_rope(M, dim, H, KV, hd, 20)
            os.environ["LLAMA_KERNEL_ROPE_VEC"] = "0"  # the 2-byte form, same run
            rope_us = _C.cuda_bench_norm_rope(M, dim, H, KV, hd, 20)[1]
            del os.environ["LLAMA_KERNEL_ROPE_VEC"]
            copy = 6 * M * dim / copy_us / 1e6
            rope_bytes = M * (4 * (H + 2 * KV) * hd + 4 * hd)
            for kern, us, nbytes in (("rmsnorm", norm_us, 6 * M * dim), ("rope_kv (16-byte)", rope8_us, rope_bytes),
                                     ("rope_kv (2-byte, LLAMA_KERNEL_ROPE_VEC=0)", rope_us, rope_bytes)):
                tbs = nbytes / us / 1e6
                print(f"| {kern} {name} M={M} | {us:.1f} | {tbs:.2f} | {copy:.2f} | {tbs / copy:.0%} |", flush=True)
                out.append(dict(kernel=kern, shape=name, M=M, us=us, bytes=nbytes, tb_s=tbs, copy_tb_s=copy))
    return out


if __name__ == "__main__":
    main()
