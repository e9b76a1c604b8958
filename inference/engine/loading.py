"""Loading causal language models once per process: device, dtype, tokenizer, chat template.

Any Hugging Face causal LM loads by hub id or local path. With HF_HUB_OFFLINE=1 (or no network)
transformers reads only what is already on disk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM
from transformers.pytorch_utils import Conv1D

from inference.engine.config import context_window
from inference.engine.tokenization import load_tokenizer

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelSpec:
    name: str  # what users and plans call it
    source: str  # hub id or local path
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16 | int8 (dynamic quantization, CPU)
    device: str = "auto"  # auto | cpu | cuda | cuda:N


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype_name: str
    max_context: int

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def eos_token_ids(self) -> set[int]:
        ids = set()
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        if isinstance(configured, int):
            ids.add(configured)
        elif configured:
            ids.update(configured)
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids


def pick_device(requested: str) -> torch.device:
    if requested != "auto":
        return torch.device(requested)
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def pick_dtype(requested: str, device: torch.device) -> str:
    """CUDA: bf16 where supported, else fp16. CPU: fp32 unless asked for bf16 or int8."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def _to_linear(model: torch.nn.Module) -> None:
    """GPT-2-style Conv1D layers are linear layers with a transposed weight; make them nn.Linear
    so dynamic quantization (which knows nn.Linear) applies to them too."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                in_features, out_features = child.weight.shape
                linear = torch.nn.Linear(in_features, out_features, bias=True)
                linear.weight.data = child.weight.data.t().contiguous()
                linear.bias.data = child.bias.data
                setattr(parent, child_name, linear)


def load_model(spec: ModelSpec) -> LoadedModel:
    device = pick_device(spec.device)
    dtype_name = pick_dtype(spec.dtype, device)
    if dtype_name == "int8" and device.type != "cpu":
        raise ValueError(f"model {spec.name}: int8 dynamic quantization runs on the CPU only")
    tokenizer = load_tokenizer(spec.source)
    load_dtype = torch.float32 if dtype_name == "int8" else DTYPES[dtype_name]
    model = AutoModelForCausalLM.from_pretrained(spec.source, dtype=load_dtype)
    model.eval()
    if dtype_name == "int8":
        _to_linear(model)
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    model.to(device)
    max_context = context_window(model.config, tokenizer)  # the rule the web side admits prompts by
    logger.info("loaded model %s from %s on %s (%s)", spec.name, spec.source, device, dtype_name)
    return LoadedModel(spec, model, tokenizer, device, dtype_name, max_context)
