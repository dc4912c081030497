#!/usr/bin/env bash
# Build the extension on the device from CUDA objects compiled on the workstation, to save the device's
# ~2 minutes of nvcc a run (benchmarks/NOTES.md, thirty-second session). The objects include no Python header,
# so the workstation's Python version does not matter; nvcc must be the same version (13.0) on both.
#
#   here:    LLAMA_KERNEL_CUDA_ARCHS=90 python3 setup.py build_ext --build-temp build/temp.linux-x86_64-cpython-312
#            rm -rf build/lib* build/temp.linux-x86_64-cpython-312/csrc      # (the C objects are per Python)
#            then carry "build/temp.linux-x86_64-cpython-312" in the device call
#   device:  bash tools/build_prebuilt.sh [TREE]     (TREE: a checkout, default .)
#
# setup.py rebuilds everything when its configuration stamp differs (it names nvcc's real path) and any
# object older than its source: the stamp is rewritten with this machine's nvcc, the objects are touched.
# Only use objects compiled from exactly this tree's sources.
set -uo pipefail
cd "${1:-.}" || exit 1
NV=$(python3 -c '
import os, shutil
c = [os.path.join(os.environ[v], "bin", "nvcc") for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
c += ["/usr/local/cuda/bin/nvcc"] + ([shutil.which("nvcc")] if shutil.which("nvcc") else [])
print(next(os.path.realpath(x) for x in c if os.path.isfile(x) and os.access(x, os.X_OK)))') || exit 1
T=build/temp.linux-x86_64-cpython-$(python3 -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
if [ -d "$T" ]; then
    printf "nvcc=%s archs=90 debug=False sanitize=False" "$NV" > "$T/llama_kernel_config.txt"
    touch "$T"/*.cu.o
fi
s=$(date +%s)
LLAMA_KERNEL_CUDA_ARCHS=90 python3 setup.py build_ext --inplace > build.log 2>&1
rc=$?
echo "$(basename "$PWD"): build rc=$rc $(( $(date +%s) - s )) s, nvcc runs: $(grep -c 'nvcc -c' build.log)"
[ $rc = 0 ] || tail -30 build.log
exit $rc
