"""Loading causal language models once per process: device, dtype, tokenizer, chat template.

Any Hugging Face causal LM loads by hub id or local path. With HF_HUB_OFFLINE=1 (or no network)
transformers reads only what is already on disk.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchao.core.config import AOBaseConfig
from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig
from torchao.quantization import (
    Int4WeightOnlyConfig,
    Int8DynamicActivationInt8WeightConfig,
    Int8WeightOnlyConfig,
    quantize_,
)
from transformers import AutoModelForCausalLM
from transformers.pytorch_utils import Conv1D

from inference.engine.config import context_window
from inference.engine.tokenization import load_tokenizer

logger = logging.getLogger(__name__)

FLOAT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Integer options, through torchao: dynamic int8 activations with int8 weights; int8 weights only;
# int4 weights only (groups of INT4_GROUP_SIZE input columns share a scale).
QUANTIZED = ("int8", "int8-weight", "int4-weight")
PRECISIONS = (*FLOAT_DTYPES, *QUANTIZED)  # what ModelSpec.dtype takes besides "auto"
# Small groups keep a small model's error low; 32 divides the width of every model we ship.
INT4_GROUP_SIZE = 32
INT4_OUTPUT_MULTIPLE = 16  # int4 kernels pack output rows in tiles of 16 (CPU) or 8 (CUDA)


@dataclass(frozen=True)
class ModelSpec:
    name: str  # what users and plans call it
    source: str  # hub id or local path
    dtype: str = "auto"  # auto or one of PRECISIONS
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


def tensor_bytes(tensor: torch.Tensor) -> int:
    """The bytes a tensor holds. A torchao tensor reports the float shape and dtype it stands for;
    its real size is that of the tensors it packs (integer data, scales, zero points)."""
    if hasattr(tensor, "__tensor_flatten__"):
        inner_names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, inner)) for inner in inner_names)
    return tensor.numel() * tensor.element_size()


def model_bytes(model: torch.nn.Module) -> int:
    """Parameter and buffer bytes (a tied weight once): the model's own memory, before any cache."""
    return sum(tensor_bytes(t) for t in (*model.parameters(), *model.buffers()))


def pick_device(requested: str) -> torch.device:
    if requested != "auto":
        return torch.device(requested)
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def cpu_has_amx_bf16() -> bool:
    """AMX tiles multiply bf16 several times faster than fp32; without them bf16 is no faster on a CPU."""
    return bool(torch.cpu.get_capabilities().get("amx_bf16", False))


def pick_dtype(requested: str, device: torch.device) -> str:
    """``auto``: CUDA bf16 where supported, else fp16; a CPU with AMX bf16, else fp32."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_has_amx_bf16() else "float32"


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype activations (and unquantized layers) use: a float option's own; for an integer
    option fp32 on a CPU (bf16 activations would add their error to the integers') and the float ``auto``
    picks on CUDA (int4's CUDA kernel takes bf16 only)."""
    if precision in FLOAT_DTYPES:
        return FLOAT_DTYPES[precision]
    return torch.float32 if device.type == "cpu" else FLOAT_DTYPES[pick_dtype("auto", device)]


def runs_on(precision: str, device: torch.device) -> bool:
    """Whether option ``precision`` runs on ``device`` with this torch and torchao build."""
    if precision == "int4-weight":
        return int4_runs_on(device)
    if precision == "bfloat16" and device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return True


def precisions_on(device: torch.device) -> tuple[str, ...]:
    return tuple(precision for precision in PRECISIONS if runs_on(precision, device))


def check_precision(precision: str, device: torch.device) -> None:
    """A clear error, before anything loads, for an option that is unknown or cannot run here."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown dtype {precision!r}: use auto or one of {', '.join(PRECISIONS)}")
    if not runs_on(precision, device):
        raise ValueError(
            f"dtype {precision} does not run on {device} with this torch and torchao; "
            f"what does: {', '.join(precisions_on(device))}"
        )


def _torchao_config(precision: str, device: torch.device) -> AOBaseConfig:
    # No inductor settings: the engine runs eagerly.
    if precision == "int8":
        return Int8DynamicActivationInt8WeightConfig(set_inductor_config=False)
    if precision == "int8-weight":
        return Int8WeightOnlyConfig(set_inductor_config=False)
    if device.type == "cpu":  # torch's own CPU int4 kernel, reached through torchao's opaque layout
        return PrototypeInt4WeightOnlyConfig(group_size=INT4_GROUP_SIZE, set_inductor_config=False)
    # CUDA: the tinygemm kernel's tiled layout.
    return Int4WeightOnlyConfig(
        group_size=INT4_GROUP_SIZE, int4_packing_format="tile_packed_to_4d", set_inductor_config=False
    )


def _quantizable(precision: str) -> Callable[[torch.nn.Module, str], bool]:
    """Which layers torchao converts: every linear layer; for int4 those whose shape its kernels
    take (torchao would leave an input width that splits into no whole groups as it is, silently,
    and fail on an output width that is no multiple of INT4_OUTPUT_MULTIPLE)."""

    def accept(module: torch.nn.Module, name: str) -> bool:
        if not isinstance(module, torch.nn.Linear):
            return False
        if precision != "int4-weight":
            return True
        return module.in_features % INT4_GROUP_SIZE == 0 and module.out_features % INT4_OUTPUT_MULTIPLE == 0

    return accept


@functools.cache
def int4_runs_on(device: torch.device) -> bool:
    """Whether int4 weight-only runs here: tried once per device on a small layer, since which
    kernels work depends on the build of torch, torchao and the device together."""
    dtype = compute_dtype("int4-weight", device)
    try:
        layer = torch.nn.Linear(64, 64, device=device, dtype=dtype)
        _quantize_module(layer, "int4-weight", device)
        with torch.inference_mode():
            layer(torch.ones(2, 64, device=device, dtype=dtype))
    except Exception as error:  # any failure means the same: not here
        logger.info("int4-weight does not run on %s: %s", device, error)
        return False
    return True


def _quantize_module(module: torch.nn.Module, precision: str, device: torch.device) -> None:
    quantize_(module, _torchao_config(precision, device), filter_fn=_quantizable(precision))


def quantize(model: torch.nn.Module, precision: str, device: torch.device, name: str) -> None:
    """Convert the model's linear layers (already on ``device``) to ``precision`` in place."""
    _to_linear(model)
    accept = _quantizable(precision)
    linears = [(path, m) for path, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    taken = [path for path, m in linears if accept(m, path)]
    if not taken:
        raise ValueError(
            f"model {name}: no linear layer has a shape {precision} takes (input width a multiple of "
            f"{INT4_GROUP_SIZE}, output width of {INT4_OUTPUT_MULTIPLE}), so it would change nothing; "
            "use int8 or int8-weight"
        )
    if len(taken) < len(linears):
        logger.warning("model %s: %d of %d linear layers stay in float", name, len(linears) - len(taken), len(linears))
    _quantize_module(model, precision, device)


def _to_linear(model: torch.nn.Module) -> None:
    """GPT-2-style Conv1D layers are linear layers with a transposed weight; make them nn.Linear
    so quantization (which knows nn.Linear) applies to them too."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                in_features, out_features = child.weight.shape
                linear = torch.nn.Linear(
                    in_features, out_features, bias=True, device=child.weight.device, dtype=child.weight.dtype
                )
                linear.weight.data = child.weight.data.t().contiguous()
                linear.bias.data = child.bias.data
                setattr(parent, child_name, linear)


def load_model(spec: ModelSpec) -> LoadedModel:
    device = pick_device(spec.device)
    precision = pick_dtype(spec.dtype, device)
    check_precision(precision, device)
    tokenizer = load_tokenizer(spec.source)
    model = AutoModelForCausalLM.from_pretrained(spec.source, dtype=compute_dtype(precision, device))
    model.eval()
    model.to(device)
    if precision in QUANTIZED:
        quantize(model, precision, device, spec.name)
    max_context = context_window(model.config, tokenizer)  # the rule the web side admits prompts by
    logger.info(
        "loaded model %s from %s on %s (%s, %.1f MiB)",
        spec.name,
        spec.source,
        device,
        precision,
        model_bytes(model) / 2**20,
    )
    return LoadedModel(spec, model, tokenizer, device, precision, max_context)
