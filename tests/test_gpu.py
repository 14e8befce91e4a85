"""The Unsloth 4-bit path: runs only on a CUDA machine with fasttune[gpu]."""

import importlib.util

import pytest
import torch

import fasttune

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("unsloth") is None,
                                reason="needs a CUDA GPU and fasttune[gpu]")


def test_unsloth_loads_the_linear_layers_in_4bit_and_trains(tmp_path):
    from fasttune.backend import count_4bit_linear_layers

    model = fasttune.load(load_in_4bit=True)
    four_bit, linear = count_4bit_linear_layers(model)
    assert model.backend == "unsloth" and four_bit >= linear - 1  # all but lm_head
    run = fasttune.train(model, fasttune.tasks.get("larger_number"), max_steps=5, output_dir=str(tmp_path))
    assert run.losses and run.adapter_dir.exists()
