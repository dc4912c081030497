"""Build of llama_kernel's one extension, llama_kernel._C, with plain setuptools.

The C core and the CPU backend (csrc/*.c, csrc/cpu/*.c) are always built.
When nvcc is found (CUDA_HOME or CUDA_PATH, /usr/local/cuda, PATH) the CUDA
backend (csrc/cuda/*.cu) is compiled too, once per target arch, and the CUDA
runtime is linked statically, so that `import llama_kernel` works on machines
without a GPU or driver.

Environment:
  LLAMA_KERNEL_CUDA=0|1        0: CPU-only build; 1: fail if nvcc is missing (default: auto)
  LLAMA_KERNEL_CUDA_ARCHS      target archs, e.g. "80;86;89;90+PTX" (the default);
                               "+PTX" on an entry also embeds PTX for newer GPUs;
                               90 is built as sm_90a (Hopper wgmma kernels)
  LLAMA_KERNEL_DEBUG=1         -O0 -g, no NDEBUG
  LLAMA_KERNEL_SANITIZE=1      AddressSanitizer + UBSan on the C code (CPU path)
  LLAMA_KERNEL_NVCC_THREADS    parallel nvcc jobs (default: CPU count)
"""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "80;86;89;90+PTX"


def find_nvcc():
    mode = os.environ.get("LLAMA_KERNEL_CUDA", "auto").strip().lower()
    if mode in ("0", "off", "no", "false"):
        return None
    candidates = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "bin", "nvcc"))
    candidates.append("/usr/local/cuda/bin/nvcc")
    on_path = shutil.which("nvcc")
    if on_path:
        candidates.append(on_path)
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.realpath(c)
    if mode in ("1", "on", "yes", "true"):
        sys.exit("LLAMA_KERNEL_CUDA=1 but nvcc was not found (looked in CUDA_HOME, CUDA_PATH, "
                 "/usr/local/cuda/bin and PATH); install the CUDA toolkit or set CUDA_HOME")
    return None


def parse_archs(spec):
    """'80;86;90a+PTX' -> ([('80', False), ('86', False), ('90a', True)]) with validation."""
    archs = []
    for tok in re.split(r"[;,\s]+", spec.strip()):
        if not tok:
            continue
        m = re.fullmatch(r"(?:sm_|compute_)?(\d{2,3}[af]?)(\+ptx)?", tok, re.IGNORECASE)
        if not m:
            sys.exit(f"LLAMA_KERNEL_CUDA_ARCHS: cannot read {tok!r}; use e.g. \"80;86;89;90+PTX\"")
        archs.append((m.group(1).lower(), bool(m.group(2))))
    if not archs:
        sys.exit("LLAMA_KERNEL_CUDA_ARCHS is empty; use e.g. \"80;86;89;90+PTX\"")
    return archs


def gencode_flags(archs):
    """SASS per arch; sm_90 is built as sm_90a (the same GPUs: every compute capability 9.0 part), whose
    wgmma kernels the prefill matmul uses. PTX ("+PTX") is always the portable compute_XX form."""
    flags = []
    for a, ptx in archs:
        sass = "90a" if a == "90" else a
        flags.append(f"-gencode=arch=compute_{sass},code=sm_{sass}")
        if ptx:
            base = a[:-1] if a[-1] in "af" else a
            flags.append(f"-gencode=arch=compute_{base},code=compute_{base}")
    return flags


def sources(sub, ext):
    d = os.path.join("csrc", sub) if sub else "csrc"
    return sorted(os.path.join(d, f) for f in os.listdir(os.path.join(HERE, d)) if f.endswith(ext))


NVCC = find_nvcc()
DEBUG = os.environ.get("LLAMA_KERNEL_DEBUG") == "1"
SANITIZE = os.environ.get("LLAMA_KERNEL_SANITIZE") == "1"
ARCHS = parse_archs(os.environ.get("LLAMA_KERNEL_CUDA_ARCHS", DEFAULT_ARCHS)) if NVCC else []
ARCH_STRING = ";".join(a + ("+PTX" if p else "") for a, p in ARCHS)


class BuildExt(build_ext):
    """Compiles the .cu sources with nvcc (in parallel) and links them in."""

    def build_extension(self, ext):
        # a different configuration (CUDA or not, archs, sanitizers) rebuilds everything
        stamp = os.path.join(self.build_temp, "llama_kernel_config.txt")
        config = f"nvcc={NVCC} archs={ARCH_STRING} debug={DEBUG} sanitize={SANITIZE}"
        old = open(stamp).read() if os.path.exists(stamp) else None
        if old != config:
            self.force = True
        os.makedirs(self.build_temp, exist_ok=True)
        with open(stamp, "w") as f:
            f.write(config)
        cu = [s for s in ext.sources if s.endswith(".cu")]
        ext.sources = [s for s in ext.sources if not s.endswith(".cu")]
        if cu:
            objects = self.compile_cuda(cu)
            ext.extra_objects = list(ext.extra_objects or []) + objects
            # setuptools relinks only when a *source* or a dependency is newer than the
            # extension: name the CUDA objects as dependencies, or a changed .cu file would
            # leave the old kernels linked in
            ext.depends = list(ext.depends or []) + objects
        super().build_extension(ext)

    def compile_cuda(self, cu_sources):
        os.makedirs(self.build_temp, exist_ok=True)
        headers = [os.path.join(HERE, h) for h in sources("", ".h") + sources("cuda", ".cuh") + sources("cuda", ".h")]
        newest_header = max((os.path.getmtime(h) for h in headers if os.path.exists(h)), default=0)
        py_inc = sysconfig.get_paths()["include"]
        base = [NVCC, "-c", "-std=c++17", "-Xcompiler", "-fPIC,-fvisibility=hidden,-Wall,-Wextra",
                "--expt-relaxed-constexpr", "-lineinfo", f"-I{os.path.join(HERE, 'csrc')}", f"-I{py_inc}",
                "-DLK_WITH_CUDA=1", f'-DLK_CUDA_ARCHS="{ARCH_STRING}"', "-Wno-deprecated-gpu-targets"]
        base += ["-O0", "-g", "-G"] if DEBUG else ["-O3", "-DNDEBUG"]
        base += gencode_flags(ARCHS)
        jobs = int(os.environ.get("LLAMA_KERNEL_NVCC_THREADS", os.cpu_count() or 1))
        todo, objects = [], []
        for src in cu_sources:
            obj = os.path.join(self.build_temp, os.path.basename(src) + ".o")
            objects.append(obj)
            s = os.path.join(HERE, src)
            if self.force or not os.path.exists(obj) or os.path.getmtime(obj) < max(os.path.getmtime(s), newest_header):
                todo.append((s, obj))

        def run(job):
            s, obj = job
            cmd = base + [s, "-o", obj]
            print(" ".join(cmd), flush=True)
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.stdout or r.stderr:
                print(r.stdout + r.stderr, flush=True)
            if r.returncode:
                raise RuntimeError(f"nvcc failed on {s} (exit {r.returncode})")

        with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(todo) or 1))) as pool:
            list(pool.map(run, todo))
        return objects


def make_extension():
    import numpy

    srcs = sources("", ".c") + sources("cpu", ".c")
    cflags = ["-std=c11", "-Wall", "-Wextra", "-fvisibility=hidden", "-ffp-contract=off", "-fopenmp",
              "-D_GNU_SOURCE"]
    cflags += ["-O0", "-g"] if DEBUG else ["-O3"]
    # the extension exports PyInit__C and nothing else
    ldflags = ["-fopenmp", "-Wl,--version-script=" + os.path.join(HERE, "csrc", "exports.map")]
    libs, libdirs, macros = [], [], []
    if SANITIZE:
        cflags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
        ldflags += ["-fsanitize=address,undefined"]
    if NVCC:
        cuda_root = os.path.dirname(os.path.dirname(NVCC))
        srcs += sources("cuda", ".cu")
        libdirs += [os.path.join(cuda_root, "lib64"), os.path.join(cuda_root, "lib")]
        libs += ["cudart_static", "dl", "rt", "pthread", "stdc++"]
        macros += [("LK_WITH_CUDA", "1")]
    else:
        srcs += ["csrc/cuda/lk_cuda_stub.c"]
    return Extension(
        "llama_kernel._C",
        sources=srcs,
        include_dirs=[numpy.get_include(), "csrc"],
        define_macros=macros,
        extra_compile_args=cflags,
        extra_link_args=ldflags,
        libraries=libs,
        library_dirs=[d for d in libdirs if os.path.isdir(d)],
    )


if NVCC:
    print(f"llama_kernel: building with CUDA ({NVCC}), archs {ARCH_STRING}", flush=True)
else:
    print("llama_kernel: building CPU-only (no nvcc found or LLAMA_KERNEL_CUDA=0)", flush=True)

setup(ext_modules=[make_extension()], cmdclass={"build_ext": BuildExt})
