"""Repository tools that need no GPU."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))

import check_qreg_sass  # noqa: E402
import pytest  # noqa: E402


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


def test_matmul_shapes_names_and_aliases():
    """benchmarks/_common.matmul_shapes, the one list of matmul shapes the benchmark and A/B tools share: every
    shape by default; a selection in the order named, spaces optional, lm / gu short for lm_head / gate_up"""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    import _common

    assert [s[0] for s in _common.matmul_shapes()] == [s[0] for s in _common.MATMUL_SHAPES]
    assert len(_common.MATMUL_SHAPES) == 9
    got = _common.matmul_shapes("down3B,lm,qkv 3B,gu3B,gu")
    assert [s[0] for s in got] == ["down 3B", "lm_head", "qkv 3B", "gate_up 3B", "gate_up"]
    assert _common.matmul_shapes(["o"]) == [("o", 2048, 2048, 1)]
    assert _common.shape_key("gate_up 3B") == "gate_up3B"
    with pytest.raises(SystemExit, match="unknown matmul shape 'qkv4'"):
        _common.matmul_shapes("qkv,qkv4")
