"""Repository tools that need no GPU."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))

import check_qreg_sass  # noqa: E402


def sass(*body):
    """cuobjdump -sass lines: an address comment, the instruction, an encoding comment"""
    return "\n".join(f"        /*{16 * i:04x}*/                   {ins} ;   /* 0x000000000000 */"
                     for i, ins in enumerate(body))


S = ["HGMMA.64x64x16.F32 R24, R92, gdesc[UR16], RZ, !UPT", "HGMMA.64x64x16.F32 R24, R96, gdesc[UR16], R24, gsb0",
     "WARPGROUP.DEPBAR.LE gsb0, 0x0"]


def test_check_qreg_sass_passes_a_clean_loop():
    """Q's registers (the S wgmma's A operands) only read after the first wgmma: clean; writes before it (the
    loads of Q) and P V's A operands (.tnspB) do not count"""
    q, bad = check_qreg_sass.check(sass("LDS R92, [R4]", "LDS R97, [R5]", *S, "F2FP.F16.F32.PACK_AB R28, R16, R15",
                                        "HGMMA.64x64x16.F32 R56, R28, gdesc[UR8].tnspB, R56, gsb0",
                                        "FMUL R60, R60, R9"))
    assert q == set(range(92, 100)) and bad == []


def test_check_qreg_sass_flags_a_write_to_q():
    """the broken form of session 33: P packed into one of Q's registers after the S wgmma"""
    q, bad = check_qreg_sass.check(sass(*S, "F2FP.F16.F32.PACK_AB R97, R16, R15", "@!P0 FSEL R93, R8, RZ, P0"))
    assert len(bad) == 2 and "R97" in bad[0] and "R93" in bad[1]
