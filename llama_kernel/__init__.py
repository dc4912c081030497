"""llama_kernel: fast Llama inference from Python with int4 weights and
hand-written C/CUDA kernels; no PyTorch at run time.

    from llama_kernel import LlamaInference
    model = LlamaInference("meta-llama/Llama-3.2-1B-Instruct", device="cuda")
    print(model.generate("What is the capital of France?", max_length=512, temperature=0.7))
"""
from . import _C
from .config import ConfigError, ModelConfig
from .hub import ModelNotFoundError
from .inference import LlamaInference, cuda_available
from .memory import UnknownModelError, estimate_memory

__version__ = "0.1.0"


def build_info() -> dict:
    """How the extension was built (cuda, cuda_archs, cuda_version) and the GPU it sees
    (device_name, compute_capability), if any."""
    return _C.build_info()


__all__ = ["LlamaInference", "ModelConfig", "ConfigError", "ModelNotFoundError", "UnknownModelError",
           "estimate_memory", "build_info", "cuda_available", "__version__"]
