"""Incremental detokenisation: the streamed pieces, joined, equal the full decode of the same ids,
for several tokenizer kinds, over many random (seeded) id sequences, with and without stop
sequences; and each token costs a decode of a few tokens, however long the output."""

from __future__ import annotations

import json
import random

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from inference.engine import DEMO_CORPUS, load_tokenizer
from inference.engine.demo import train_tokenizer
from inference.engine.text import (
    CLEANUP_REPLACEMENTS,
    WINDOW_LIMIT,
    SpaceCleaner,
    StreamingReplace,
    TextAssembler,
    tokenizer_traits,
)

SEQUENCES = 1_000  # random id sequences per tokenizer and case
# Characters that split across tokens (accents, CJK, emoji with a skin tone and a joiner), and the
# spacing that clean-up rewrites.
MULTILINGUAL = (
    "Naïve café, déjà vu! 日本語のテキスト。 Ünïcödé — “quotes” 🙂👍🏽👩‍💻 ok . I can 't , you 're "
    "we 've , it 's ' quoted ' , don n't ? Ελληνικά и русский. 中文字符 😀😃😄 end !"
)


def corpus_text() -> str:
    return DEMO_CORPUS.read_text()[:20_000] + "\n" + MULTILINGUAL


def llama_style(*, metaspace_decoder: bool = False) -> PreTrainedTokenizerFast:
    """A SentencePiece-style BPE like Llama's: ``▁`` marks a leading space, characters outside the
    vocabulary fall back to ``<0xNN>`` byte tokens, and the decoder strips the first space."""
    base = Tokenizer(models.BPE(unk_token="<unk>"))
    # Trained on words that carry their leading space marker, as SentencePiece's pieces do.
    base.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=500, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=60, show_progress=False
    )
    base.train_from_iterator([corpus_text()], trainer=trainer)
    model = json.loads(base.to_str())["model"]
    vocab = dict(model["vocab"])
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    if metaspace_decoder:
        # The newer conversion: a Metaspace pre-tokenizer and decoder.
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
        tokenizer.decoder = decoders.Sequence(
            [decoders.ByteFallback(), decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)]
        )
    else:
        # Llama 2's own: spaces become ▁ in the normalizer; the decoder strips the first space.
        tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tokenizer.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
    tokenizer.add_special_tokens(["<unk>", "<s>", "</s>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )  # fmt: skip


def wordpiece_style() -> PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer: ``##`` continues a word, and decode cleans up spaces."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=600, special_tokens=["[UNK]", "[CLS]", "[SEP]", "[PAD]"], show_progress=False
    )
    tokenizer.train_from_iterator([corpus_text()], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
        clean_up_tokenization_spaces=True,
    )  # fmt: skip


def byte_level_cleaning() -> PreTrainedTokenizerFast:
    """The demo's byte-level BPE told to clean up spaces anyway (GPT-2's old default)."""
    tokenizer = train_tokenizer(corpus_text())
    tokenizer.clean_up_tokenization_spaces = True
    tokenizer.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output = True
    return tokenizer


@pytest.fixture(scope="module", params=["byte-level", "byte-level-cleanup", "llama", "metaspace", "wordpiece"])
def tokenizer(request, tiny_model_path):
    if request.param == "byte-level":
        return load_tokenizer(str(tiny_model_path))  # the demo and test models' own tokenizer
    if request.param == "byte-level-cleanup":
        return byte_level_cleaning()
    if request.param == "llama":
        return llama_style()
    if request.param == "metaspace":
        return llama_style(metaspace_decoder=True)
    return wordpiece_style()


def random_ids(tokenizer, rng: random.Random) -> list[int]:
    """Uniform random ids (specials included), or real text's ids, or both interleaved."""
    vocab = len(tokenizer)
    text = corpus_text()
    kind = rng.randrange(3)
    length = rng.randint(1, 60)
    if kind == 0:
        return [rng.randrange(vocab) for _ in range(length)]
    start = rng.randrange(len(text) - 200) if rng.random() < 0.5 else len(text) - len(MULTILINGUAL)
    ids = tokenizer.encode(text[start : start + rng.randint(1, 200)], add_special_tokens=False)
    if kind == 2:
        for _ in range(rng.randint(1, 6)):
            ids.insert(rng.randint(0, len(ids)), rng.randrange(vocab))
    return ids


def stream(tokenizer, ids: list[int], stop: tuple[str, ...] = ()) -> tuple[str, str, bool]:
    """Feed ids one by one as the scheduler does (no more after a stop); (pieces, text, stopped)."""
    assembler = TextAssembler(tokenizer, stop)
    pieces = []
    for token_id in ids:
        pieces.append(assembler.add(token_id))
        if assembler.stopped:
            break
    pieces.append(assembler.finish())
    return "".join(pieces), assembler.text, assembler.stopped


def truncated_at_first_stop(text: str, stop: tuple[str, ...]) -> str:
    """The text before the stop sequence that completes first (earliest end, then earliest start)."""
    ends = [(text.find(s) + len(s), text.find(s)) for s in stop if s in text]
    return text[: min(ends)[1]] if ends else text


def test_streamed_pieces_join_to_the_full_decode(tokenizer):
    rng = random.Random(15)
    for _ in range(SEQUENCES):
        ids = random_ids(tokenizer, rng)
        want = tokenizer.decode(ids, skip_special_tokens=True)
        streamed, text, stopped = stream(tokenizer, ids)
        assert streamed == want, ids
        assert text == want
        assert not stopped


def test_streamed_text_with_stop_sequences_is_the_full_decode_cut_at_the_first_one(tokenizer):
    rng = random.Random(16)
    for _ in range(SEQUENCES):
        ids = random_ids(tokenizer, rng)
        full = tokenizer.decode(ids, skip_special_tokens=True)
        stop = tuple(stop_sequences(full, rng))
        want = truncated_at_first_stop(full, stop)
        streamed, text, stopped = stream(tokenizer, ids, stop)
        assert streamed == want, (ids, stop)
        assert text == want
        assert stopped == any(s in full for s in stop)


def stop_sequences(full: str, rng: random.Random) -> list[str]:
    """Substrings of the text (so they occur, spanning token boundaries) and short strings that may."""
    stops = []
    for _ in range(rng.randint(1, 3)):
        if full and rng.random() < 0.7:
            start = rng.randrange(len(full))
            stops.append(full[start : start + rng.randint(1, 6)])
        else:
            stops.append(rng.choice([" ", ".", "e", "é", "🙂", "\ufffd", " the", "'s", "語の", "zzz"]))
    return stops


def test_a_character_split_across_tokens_is_released_whole(tokenizer):
    ids = tokenizer.encode("ok 👩‍💻 日本語", add_special_tokens=False)
    assembler = TextAssembler(tokenizer)
    pieces = [assembler.add(token_id) for token_id in ids] + [assembler.finish()]
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True)
    assert not any("\ufffd" in piece for piece in pieces)


class CountingTokenizer:
    """Passes decode through, noting how many ids each call decodes."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self.decoded_lengths: list[int] = []

    def decode(self, ids, **kwargs):
        self.decoded_lengths.append(len(ids))
        return self._tokenizer.decode(ids, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def test_each_token_decodes_a_few_tokens_however_long_the_output(tokenizer):
    ids = tokenizer.encode(corpus_text() * 5, add_special_tokens=False)[:4_000]
    assert len(ids) == 4_000
    counting = CountingTokenizer(tokenizer)
    assembler = TextAssembler(counting, stop=("never in the text",))
    counting.decoded_lengths.clear()  # the tokenizer's traits are found once, before any token
    pieces = [assembler.add(token_id) for token_id in ids] + [assembler.finish()]
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True)
    # A run of byte-fallback tokens is decoded whole when it closes: allow the longest in the text.
    longest_run = run = 0
    for token_id in ids:
        run = run + 1 if token_id in tokenizer_traits(tokenizer).byte_ids else 0
        longest_run = max(longest_run, run)
    assert max(counting.decoded_lengths) <= WINDOW_LIMIT + 1 + longest_run
    # The old assembler decoded the whole output at each token: about 8 million ids here.
    assert sum(counting.decoded_lengths) <= (WINDOW_LIMIT + 2) * len(ids)


@pytest.mark.parametrize(("old", "new"), [*CLEANUP_REPLACEMENTS, ("aa", "b"), ("aba", "")])
def test_streaming_replace_equals_str_replace_however_the_text_is_split(old, new):
    rng = random.Random(old)
    for _ in range(500):
        text = "".join(rng.choice(" .?!,'ntmsvreab") for _ in range(rng.randint(0, 30)))
        replace = StreamingReplace(old, new)
        out, at = [], 0
        while at < len(text):
            step = rng.randint(0, 4)
            out.append(replace.feed(text[at : at + step]))
            at += step
        out.append(replace.flush())
        assert "".join(out) == text.replace(old, new), text


def test_space_cleaner_equals_transformers_clean_up_however_the_text_is_split():
    reference = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0}, unk_token="a")))
    rng = random.Random(3)
    for _ in range(2_000):
        text = "".join(rng.choice(" .?!,'ntmsverx") for _ in range(rng.randint(0, 40)))
        cleaner = SpaceCleaner()
        out, at = [], 0
        while at < len(text):
            step = rng.randint(0, 5)
            out.append(cleaner.feed(text[at : at + step]))
            at += step
        out.append(cleaner.flush())
        assert "".join(out) == reference.clean_up_tokenization(text), text
