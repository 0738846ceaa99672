"""Packaging for eager_core, and the build of its compiled extension eager_core._C.

The extension (csrc/) holds the fused entropy gate: always the CPU kernel; the CUDA kernel too
when torch was built with CUDA and nvcc is found. A missing or broken compiler never fails the
install: the extension is skipped with a message and eager_core falls back to its PyTorch
reference (eager_core.ops.backend() then says "torch"). Set EAGER_CORE_STRICT_BUILD=1 to make a
failed extension build an error instead (CI does, so a silent fallback cannot hide a breakage).

Install for development:  pip install --no-build-isolation -e .
"""

import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CPU_SOURCES = ["csrc/entropy_gate_binding.cpp", "csrc/entropy_gate_cpu.cpp", "csrc/entropy_gate_cpu_simd.cpp",
               "csrc/small_linear_binding.cpp", "csrc/small_linear_cpu.cpp", "csrc/rms_norm_cpu.cpp",
               "csrc/decode_layers_cpu.cpp",
               "csrc/paged_attention_binding.cpp", "csrc/paged_attention_cpu.cpp",
               "csrc/int8_linear_binding.cpp", "csrc/int8_linear_cpu.cpp", "csrc/int8_linear_cpu_bf16.cpp"]
CUDA_SOURCES = ["csrc/entropy_gate_cuda.cu", "csrc/entropy_gate_cuda_binding.cpp",
                "csrc/int8_linear_cuda.cu", "csrc/int8_linear_cuda_binding.cpp"]
STRICT = os.environ.get("EAGER_CORE_STRICT_BUILD", "") == "1"


def _say(msg: str) -> None:
    print(f"eager_core setup: {msg}", file=sys.stderr)


def _want_cuda(cpp_extension) -> bool:
    """CUDA kernels are built only with a CUDA torch and a findable nvcc."""
    import torch

    if os.environ.get("EAGER_CORE_NO_CUDA", "") == "1" or not torch.version.cuda:
        return False
    home = cpp_extension.CUDA_HOME
    nvcc = os.path.join(home, "bin", "nvcc") if home else shutil.which("nvcc")
    if not nvcc or not os.path.exists(nvcc):
        _say("torch has CUDA but nvcc was not found (set CUDA_HOME): building the CPU kernel only")
        return False
    return True


def _extension_setup() -> dict:
    """ext_modules/cmdclass for setup(), or {} when the extension cannot be built here."""
    try:
        import torch  # noqa: F401
        from torch.utils import cpp_extension
    except ImportError:
        _say("torch is not importable (use --no-build-isolation): skipping the compiled extension")
        return {}

    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx.split()[0]) is None:
        msg = f"no C++ compiler ({cxx!r} not on PATH): skipping the compiled extension"
        if STRICT:
            raise SystemExit(msg)
        _say(msg)
        return {}

    # -fopenmp: at::parallel_for is an inline OpenMP region in torch's headers; without it the
    # kernel silently runs on one thread. No -march: ISA-specific code is selected at load time
    # (see csrc/entropy_gate_cpu_simd.cpp), so the .so runs on any x86-64 (or other) CPU.
    cxx_flags = ["-O3", "-fopenmp", "-std=c++17"]
    link_flags = ["-fopenmp"]
    if _want_cuda(cpp_extension):
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;8.6;8.9;9.0+PTX")
        ext = cpp_extension.CUDAExtension(
            "eager_core._C",
            CPU_SOURCES + CUDA_SOURCES,
            include_dirs=[os.path.join(ROOT, "csrc")],
            define_macros=[("EG_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-lineinfo"]},
            extra_link_args=link_flags,
        )
    else:
        ext = cpp_extension.CppExtension(
            "eager_core._C",
            CPU_SOURCES,
            include_dirs=[os.path.join(ROOT, "csrc")],
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=link_flags,
        )

    class TolerantBuildExt(cpp_extension.BuildExtension):
        """Builds with ninja; a compiler failure skips the extension instead of the install."""

        def build_extensions(self) -> None:
            try:
                super().build_extensions()
            except Exception as exc:  # compiler errors surface as several distutils types
                if STRICT:
                    raise
                _say(f"building eager_core._C failed ({type(exc).__name__}: {exc}); "
                     "continuing without it (eager_core.ops.backend() will be 'torch')")

        def copy_extensions_to_source(self) -> None:  # editable installs; nothing to copy if skipped
            try:
                super().copy_extensions_to_source()
            except OSError as exc:
                if STRICT:
                    raise
                _say(f"no built extension to copy ({exc})")

    return {"ext_modules": [ext], "cmdclass": {"build_ext": TolerantBuildExt.with_options(use_ninja=True)}}


setup(
    name="eager_core",
    version="0.1.0",
    description="A small, readable PyTorch inference engine with entropy-aware branching (EAGer)",
    packages=find_packages(include=["eager_core*"]),
    python_requires=">=3.10",
    install_requires=["torch", "safetensors", "tokenizers", "jinja2", "numpy", "gguf", "ninja"],
    extras_require={
        # tools/eval.py: datasets, answer checking, plots
        "eval": ["reasoning-gym", "math-verify", "matplotlib"],
        # tools/serve.py: the OpenAI-compatible HTTP server (eager_core/serve/, docs/serving.md)
        "serve": ["fastapi", "uvicorn"],
        # mutation testing (docs/testing.md): tools/mutation_test.py needs only "test"; mutmut to compare
        "mutation": ["mutmut"],
        "test": ["pytest", "pytest-timeout", "hypothesis", "transformers", "reasoning-gym", "math-verify", "matplotlib",
                 "fastapi", "uvicorn", "openai", "httpx"],
    },
    zip_safe=False,
    **_extension_setup(),
)
