"""GPU benchmark of issue 2: Unsloth 4-bit LoRA SFT of SmolLM2-135M on RTE's 2,490 training rows.

Usage on the GPU machine (see ../shared/gpu/README.md for staging the GGUF):
    python benchmarks/gpu_rte.py <SmolLM2 GGUF file> <RTE data folder> <output folder>
Converts the GGUF to a Hugging Face folder, then runs `python -m fasttune.bench` on RTE; the summary.json it writes
holds base/tuned accuracy, training time, tokens/s, peak memory and the count of 4-bit linear layers.
"""

import sys
from pathlib import Path

from fasttune import cli, embedded

gguf, data, out = map(Path, sys.argv[1:4])
folder = embedded.convert_gguf(gguf, Path("/tmp/fasttune-smollm2"))
cli.run(["bench", "--task", "rte", "--data", str(data), "--model", str(folder), "--limit", "277",
            "--train-limit", "2490", "--epochs", "2", "--lr", "2e-4", "--batch-size", "16", "--out", str(out)])
