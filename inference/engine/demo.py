"""The demo model, built here with no download: a byte-level BPE tokenizer trained on the text this
project ships (``data/corpus.txt``) and a GPT-2-architecture model, saved with ``save_pretrained``
so it loads through exactly the same code as any Hugging Face hub model.

Sizes:
- ``demo``  (4 layers, 256 wide): briefly trained on the corpus so it writes English-like text;
  what ``make run`` serves.
- ``tiny``  (2 layers, 64 wide), untrained: for tests; builds in a second or two, and rarely
  emits end-of-sequence, so jobs run as long as a test asks.
- ``gpt2``  (12 layers, 768 wide, 50,257-token vocabulary: the size of GPT-2 124M), untrained;
  for benchmarks, where only the arithmetic matters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

CORPUS = Path(__file__).resolve().parent / "data" / "corpus.txt"
# With ``held_out=True`` every HELD_OUT_EVERY-th paragraph of the corpus is kept out of training
# (tokenizer and model), so quality can be measured on text the model has not seen.
HELD_OUT_EVERY = 6
END_OF_TEXT = "<|endoftext|>"
# A plain-text chat format, so the demo exercises the chat-template path like a real chat model.
CHAT_TEMPLATE = (
    "{% for message in messages %}### {{ message['role'] }}\n{{ message['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}### assistant\n{% endif %}"
)


@dataclass(frozen=True)
class DemoSize:
    layers: int
    width: int
    heads: int
    train_steps: int
    vocab_size: int | None = None  # pad the vocabulary to this many tokens


SIZES = {
    "tiny": DemoSize(layers=2, width=64, heads=2, train_steps=0),
    "demo": DemoSize(layers=4, width=256, heads=4, train_steps=300),
    "gpt2": DemoSize(layers=12, width=768, heads=12, train_steps=0, vocab_size=50257),
}


def train_tokenizer(text: str, vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([text], trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def _train(model: GPT2LMHeadModel, ids: list[int], steps: int, seed: int) -> None:
    if steps == 0:
        return
    generator = torch.Generator().manual_seed(seed)
    data = torch.tensor(ids, dtype=torch.long)
    window, batch = 64, 16
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(data) - window - 1, (batch,), generator=generator)
        inputs = torch.stack([data[s : s + window] for s in starts.tolist()])
        loss = model(input_ids=inputs, labels=inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()


def corpus_split() -> tuple[list[str], list[str]]:
    """The corpus's paragraphs: (those a ``held_out=True`` model trains on, those it never sees)."""
    paragraphs = [p.strip() for p in CORPUS.read_text().split("\n\n") if p.strip()]
    held = [p for i, p in enumerate(paragraphs) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    return [p for p in paragraphs if p not in held], held


def build_demo_model(path: str | Path, *, size: str = "demo", seed: int = 0, held_out: bool = False) -> Path:
    """Build the model and tokenizer into ``path`` (created); returns the path. ``held_out``: train
    on the first part of ``corpus_split()`` only (the default trains on the whole corpus)."""
    spec = SIZES[size]
    path = Path(path)
    torch.manual_seed(seed)
    text = "\n\n".join(corpus_split()[0]) if held_out else CORPUS.read_text()
    tokenizer = train_tokenizer(text)
    if spec.vocab_size and len(tokenizer) < spec.vocab_size:
        tokenizer.add_tokens([f"<|unused{i}|>" for i in range(spec.vocab_size - len(tokenizer))], special_tokens=True)
    eos = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=1024,
        n_embd=spec.width,
        n_layer=spec.layers,
        n_head=spec.heads,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    model = GPT2LMHeadModel(config)
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    ids: list[int] = []
    for paragraph in paragraphs:
        ids.extend(tokenizer.encode(paragraph))
        ids.append(eos)
    _train(model, ids, spec.train_steps, seed)
    model.generation_config.pad_token_id = eos
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
