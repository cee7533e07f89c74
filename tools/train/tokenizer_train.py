#!/usr/bin/env python3
"""Train the tiny model's byte-level BPE tokenizer with the `tokenizers`
library on task text, and write tokenizer.json + tokenizer_config.json.

The layout is the one Qwen2/Qwen3 use (NFC normaliser, the same split regex,
which isolates every digit, then byte-level), so the C tokenizer reads it
through the same code path as a real Qwen3 tokenizer. Special tokens:
<|endoftext|>, <|im_start|>, <|im_end|> (special) and <think>, </think>
(added, not special, as in Qwen3). The chat template is ChatML with Qwen3's
thinking switch.

Usage: tokenizer_train.py OUTDIR [--vocab 512] [--problems 3000] [--seed 1]
"""
import argparse
import json
import os
import random
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasks  # noqa: E402

SPLIT_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK = ["<think>", "</think>"]

# ChatML; an assistant turn given back in a conversation keeps only its
# answer (what follows </think>), as Qwen3's template does; enable_thinking=false
# opens the turn with an empty think block.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}"
    "{%- set content = message.content %}"
    "{%- if '</think>' in content %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}")


def corpus(n, seed):
    rng = random.Random("tokenizer-%d" % seed)
    for i in range(n):
        fam = tasks.FAMILIES[i % len(tasks.FAMILIES)]
        q, r, a = tasks.generate(fam, rng)
        yield q + "\n" + r + "\n\\boxed{" + a + "}"


def build(vocab, problems, seed):
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    from tokenizers import processors
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab - len(THINK), min_frequency=2, show_progress=False,
                                  special_tokens=[AddedToken(s, special=True, normalized=False) for s in SPECIAL],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(problems, seed), trainer=trainer)
    tok.add_tokens([AddedToken(s, special=False, normalized=False) for s in THINK])
    return tok


def tokenizer_config(tok, max_len):
    dec = {}
    for s in SPECIAL + THINK:
        i = tok.token_to_id(s)
        dec[str(i)] = {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                       "single_word": False, "special": s in SPECIAL}
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": dec,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": max_len,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--vocab", type=int, default=512, help="upper bound; BPE stops when no pair repeats")
    ap.add_argument("--problems", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-len", type=int, default=4096)
    args = ap.parse_args()
    tok = build(args.vocab, args.problems, args.seed)
    os.makedirs(args.outdir, exist_ok=True)
    tok.save(os.path.join(args.outdir, "tokenizer.json"))
    with open(os.path.join(args.outdir, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(tok, args.max_len), f, indent=2, ensure_ascii=False)
        f.write("\n")
    print("vocab size", tok.get_vocab_size(), "->", args.outdir)


if __name__ == "__main__":
    main()
