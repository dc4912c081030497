"""Checks the SASS of the head_dim-64 flash prefill kernel with Q in registers (k_attn_prefill_wgt<64, H, 64,
2, true>, v80): no instruction may write the registers that hold Q's A fragments once the loop's first wgmma
has read them. ptxas (CUDA 13.0) broke that rule for a form of this kernel without the ones-tile row sums (it
gave Q's registers to P; wrong results), so run this after a toolchain change (test_prefill_attention_forms
checks the results on a GPU; this needs none).

    python tools/check_qreg_sass.py build/temp.linux-x86_64-cpython-312/lk_attention.cu.o [CUOBJDUMP]

cuobjdump: the argument, else on PATH, else $CUDA_HOME/bin. Exit status 0: clean; 1: a write found; 2: no
such kernel or tool.
"""
import os
import re
import shutil
import subprocess
import sys

INS = re.compile(r"\s+/\*[0-9a-f]{4}\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_.]+)\s+(R\d+)")


def check(sass):
    """(Q's registers, the instructions that write one after the first wgmma) of one function's SASS."""
    lines = [ln for ln in sass.splitlines() if re.match(r"\s+/\*[0-9a-f]{4}\*/", ln)]
    q = set()
    for ln in lines:  # S = Q K^T: register A, descriptor B not transposed (P V's B is .tnspB)
        m = re.search(r"HGMMA\.64x64x16\.F32 R\d+, (R\d+), gdesc\[[^\]]*\]", ln)
        if m and "tnspB" not in ln:
            r = int(m.group(1)[1:])
            q |= {r, r + 1, r + 2, r + 3}
    first = next((i for i, ln in enumerate(lines) if "HGMMA" in ln), len(lines))
    bad = []
    for ln in lines[first:]:
        m = INS.match(ln)
        if m and not m.group(2).startswith(("HGMMA", "ST", "RED", "ATOM")) and int(m.group(3)[1:]) in q:
            bad.append(ln.strip())
    return q, bad


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    tool = sys.argv[2] if len(sys.argv) > 2 else shutil.which("cuobjdump") or os.path.join(
        os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "cuobjdump")
    if not os.path.isfile(tool):
        print(f"no cuobjdump at {tool}: pass its path as the second argument")
        return 2
    rc = 0
    for h in (1, 2):
        fn = f"_Z18k_attn_prefill_wgtILi64ELi{h}ELi64ELi2ELb1EEv12lk_attn_args14CUtensorMap_stS1_S1_"
        r = subprocess.run([tool, "-sass", "-fun", fn, sys.argv[1]], capture_output=True, text=True)
        q, bad = check(r.stdout)
        if r.returncode or not q:
            print(f"heads a block {h}: kernel not found in {sys.argv[1]} ({r.stderr.strip()[:200]})")
            return 2
        print(f"heads a block {h}: Q in R{min(q)}-R{max(q)}, {len(bad)} writes after the first wgmma")
        for ln in bad[:8]:
            print("   ", ln[:100])
        rc |= bool(bad)
    return rc


if __name__ == "__main__":
    sys.exit(main())
