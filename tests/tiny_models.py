"""Tiny random language models built in code, for fast tests of the real loading,
generation and logging paths (no mocks: these are real transformers models)."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|user|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CORPUS = [
    "What medicine should I take when I get a cold? Rest, fluids and paracetamol help.",
    "# Query:\n```\nHow are you?\n```\n\n# Answer:\n```\nI am fine, thank you.\n```\n",
    "Renewable energy: solar, wind, hydropower, geothermal, biomass and tides.",
    "The detective respects the suspect's rights and records the interview.",
] * 20


def build_tiny_lm(folder: Path, seed: int, chat: bool) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="<|end|>" if chat else "</s>", pad_token="<pad>"
    )
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def tiny_trio(root: Path):
    from engine.models import MINILM, ModelSpec, Trio

    base = build_tiny_lm(root / "tiny-base", seed=1, chat=False)
    aligned = build_tiny_lm(root / "tiny-chat", seed=2, chat=True)
    return Trio(
        "tiny",
        ModelSpec("tiny-base", "hf", str(base), family="tiny-a"),
        ModelSpec("tiny-chat", "hf", str(aligned), family="tiny-b"),
        MINILM,
        note="Tiny random models for tests.",
    )
