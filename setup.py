from setuptools import find_packages, setup

setup(
    name="r1jax",
    version="0.1.0",
    description="DeepSeek-R1 in JAX: DeepSeek-V3 model, GRPO, rule rewards, the R1 pipeline",
    packages=find_packages(include=["r1jax", "r1jax.*", "pallas_kernels", "pallas_kernels.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.6",
        "flax>=0.10",
        "optax",
        "orbax-checkpoint",
        "grain",
        "numpy",
        "ml-collections",
        "tensorboardX",
        "safetensors",
        "tokenizers",
        "jinja2>=3.1.6",  # chat templates (sandboxed, as transformers renders them)
        "math-verify",
        "matplotlib",
        "tqdm",
        "pyarrow",  # Parquet and datasets' save_to_disk folders (r1jax.data.records)
    ],
    extras_require={
        "test": ["pytest", "pytest-xdist", "torch==2.13.0", "transformers", "trl"],  # trl: tools/bench_trl_grpo.py
        "tpu": ["jax[tpu]"],
    },
    entry_points={"console_scripts": ["r1jax=r1jax.cli:main"]},
)
