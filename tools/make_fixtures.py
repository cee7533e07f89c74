#!/usr/bin/env python3
"""Build the conformance fixtures under tests/data/models/.

Each fixture is a small Hugging Face model directory made with transformers'
own classes (random weights, saved in bf16 safetensors), a small byte-level
BPE tokenizer trained with the `tokenizers` library, and the reference
outputs of transformers itself:

  config.json, generation_config.json, model*.safetensors[.index.json],
  tokenizer.json, tokenizer_config.json,
  expected.json   prompts, greedy tokens, top1-top2 margins, logits layout
  logits.bin      float32 little-endian logits, see expected.json

Reference: the saved bf16 checkpoint is reloaded with dtype=float32 and
eager attention (so the compute is fp32 over bf16-exact weights) and run
greedily, ignoring EOS, with a KV cache, one token at a time. The script
checks that transformers' generate(do_sample=False) gives the same tokens,
that a no-cache forward over the whole sequence gives the same logits, and,
for the fixtures whose config.json is rewritten in the older form
(top-level rope_theta / rope_scaling / torch_dtype), that transformers
loads the rewritten file to bit-identical logits.

Usage (CPU is fine, about a minute; needs torch, transformers>=5, tokenizers,
safetensors, numpy):

  python3 tools/make_fixtures.py [--out tests/data/models] [--default DIR]

Deterministic: fixed seeds everywhere, and the tokenizer is trained on a
fixed built-in text, so a rerun reproduces the committed files (up to the
transformers/torch versions, which expected.json records).
"""

import argparse
import json
import math
import os
import shutil
import sys

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

import transformers
from transformers import (GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

VOCAB = 512
N_STEPS = 24

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK = ["<think>", "</think>"]  # added tokens, special=False (as in Qwen3)

# A simple ChatML template that renders single- and multi-turn chats like
# Qwen3's does (an opened assistant turn; an empty think block when
# enable_thinking is false). Written for these fixtures.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

# Training text for the tokenizer: written here so that the tokenizer does
# not depend on anything outside the repository.
TRAIN_TEXT = """\
Every morning the walker goes for a nine kilometer walk and stops at a coffee shop afterwards.
When she walks at a constant speed of s kilometers per hour, the walk takes her four hours.
Find the number of minutes the walk takes her, including the minutes spent in the coffee shop.
Let x, y and z be positive real numbers that satisfy the following system of equations.
Find the remainder when the product is divided by 1000. Compute the sum of all positive integers n.
A list of positive integers has the following properties: the sum of the items in the list is 30.
The unique mode of the list is 9. The median of the list is a positive integer that does not appear.
Find the sum of the squares of all the items in the list. Let ABC be a triangle inscribed in circle.
There exist real numbers x and y, both greater than 1, such that log_x(y^x) = log_y(x^{4y}) = 10.
Alice and Bob play the following game. A stack of n tokens lies before them. The players take turns.
Jen enters a lottery by picking 4 distinct numbers from S = {1, 2, 3, ..., 9, 10}. 4 numbers are
randomly chosen from S. She wins a prize if at least two of her numbers were 2 of the randomly chosen.
Rectangles ABCD and EFGH are drawn such that D, E, C, F are collinear. Also, A, D, H, G all lie on a
circle. If BC = 16, AB = 107, FG = 17, and EF = 184, what is the length of CE?
Consider the paths of length 16 that follow the lines from the lower left corner to the upper right
corner on an 8 x 8 grid. Find the number of such paths that change direction exactly four times.
Find the largest possible real part of (75 + 117i)z + (96 + 144i)/z where z is a complex number.
Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.
How many clips did Natalia sell altogether in April and May? Weng earns $12 an hour for babysitting.
Yesterday, she just did 50 minutes of babysitting. How much did she earn? Betty is saving money.
<think>
Okay, let me think about this step by step. First, we need the speed. Then we solve for t.
So the answer is 204. Wait, let me double-check: 9 / 3 = 3 hours, plus 24 minutes.
</think>
The answer is \\boxed{204}.
def solve(n):
    total = 0
    for i in range(1, n + 1):
        if n % i == 0:
            total += i
    return total
"""


def train_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - len(THINK), special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([TRAIN_TEXT] * 4, trainer=trainer)
    from tokenizers import AddedToken
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK])
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    return tok


def tokenizer_config(tok):
    decoder = {}
    for t in SPECIALS + THINK:
        decoder[str(tok.token_to_id(t))] = {
            "content": t, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": t in SPECIALS,
        }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "model_max_length": 4096,
        "pad_token": "<|endoftext|>",
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }


# ---------------------------------------------------------------------------
# Fixture specifications
# ---------------------------------------------------------------------------
# form: "new" = config.json as transformers 5 writes it (rope_parameters,
# dtype); "old" = rewritten to the hub form (rope_theta, rope_scaling,
# torch_dtype at the top level).

def fixture_specs(ids):
    eot, ims, ime = ids["<|endoftext|>"], ids["<|im_start|>"], ids["<|im_end|>"]
    return [
        dict(name="qwen3_tied_hd", cls=Qwen3ForCausalLM, form="new", shard=None, seed=1,
             note="Qwen3, explicit head_dim 32 != hidden/heads 16, GQA 2, tied embeddings, "
                  "eos list in config.json",
             config=Qwen3Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                head_dim=32, max_position_embeddings=4096, rms_norm_eps=1e-6,
                                rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                                tie_word_embeddings=True, bos_token_id=None,
                                eos_token_id=[ime, eot], pad_token_id=eot)),
        dict(name="qwen3_gqa4_sharded", cls=Qwen3ForCausalLM, form="old", shard="300KB", seed=2,
             note="Qwen3, head_dim 32 != hidden/heads 16, GQA 4, untied, old config.json form, "
                  "sharded safetensors with index.json",
             config=Qwen3Config(vocab_size=VOCAB, hidden_size=128, intermediate_size=192,
                                num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                                head_dim=32, max_position_embeddings=4096, rms_norm_eps=1e-6,
                                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                                tie_word_embeddings=False, bos_token_id=None,
                                eos_token_id=ime, pad_token_id=eot)),
        dict(name="qwen2_bias", cls=Qwen2ForCausalLM, form="old", shard=None, seed=3,
             note="Qwen2, q/k/v biases, GQA 1 (MHA), tied embeddings, old config.json form, "
                  "eos int in config.json, list in generation_config.json",
             gen_eos=[ime, eot],
             config=Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=160,
                                num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
                                max_position_embeddings=4096, rms_norm_eps=1e-6,
                                rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                                tie_word_embeddings=True, bos_token_id=eot,
                                eos_token_id=eot, pad_token_id=eot)),
        dict(name="llama_llama3_old", cls=LlamaForCausalLM, form="old", shard=None, seed=4,
             note="Llama, llama3 rope scaling (original_max_position_embeddings 32, so the "
                  "scaled and smoothed bands matter at short range), GQA 4, untied, old "
                  "config.json form",
             config=LlamaConfig(vocab_size=VOCAB, hidden_size=128, intermediate_size=192,
                                num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                                max_position_embeddings=4096, rms_norm_eps=1e-5,
                                rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0,
                                                 "factor": 8.0, "low_freq_factor": 1.0,
                                                 "high_freq_factor": 4.0,
                                                 "original_max_position_embeddings": 32},
                                tie_word_embeddings=False, bos_token_id=eot,
                                eos_token_id=[ime, eot], pad_token_id=eot)),
        dict(name="llama_llama3_new", cls=LlamaForCausalLM, form="new", shard=None, seed=5,
             note="Llama, llama3 rope scaling in the new config.json form (rope_parameters), "
                  "GQA 2, tied embeddings, eos int",
             config=LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                max_position_embeddings=4096, rms_norm_eps=1e-5,
                                rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0,
                                                 "factor": 8.0, "low_freq_factor": 1.0,
                                                 "high_freq_factor": 4.0,
                                                 "original_max_position_embeddings": 64},
                                tie_word_embeddings=True, bos_token_id=eot,
                                eos_token_id=ime, pad_token_id=eot)),
        dict(name="llama_yarn", cls=LlamaForCausalLM, form="new", shard=None, seed=6,
             note="Llama, yarn rope scaling (factor 4, original 1024, attention_factor derived), "
                  "GQA 2, untied, new form",
             config=LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                max_position_embeddings=4096, rms_norm_eps=1e-5,
                                rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0,
                                                 "factor": 4.0, "beta_fast": 32.0,
                                                 "beta_slow": 1.0,
                                                 "original_max_position_embeddings": 1024},
                                tie_word_embeddings=False, bos_token_id=eot,
                                eos_token_id=ime, pad_token_id=eot)),
        dict(name="qwen3_hd64", cls=Qwen3ForCausalLM, form="new", shard=None, seed=8,
             note="Qwen3 with head_dim 64 (the smallest the CUDA attention kernel takes), GQA 2, "
                  "tied embeddings: the fixture the GPU tests compare with transformers",
             config=Qwen3Config(vocab_size=VOCAB, hidden_size=128, intermediate_size=256,
                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                head_dim=64, max_position_embeddings=4096, rms_norm_eps=1e-6,
                                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                                tie_word_embeddings=True, bos_token_id=None,
                                eos_token_id=[ime, eot], pad_token_id=eot)),
        dict(name="llama_hd64_gqa4", cls=LlamaForCausalLM, form="new", shard=None, seed=9,
             note="Llama with head_dim 64, GQA 4, llama3 rope scaling, untied: GPU-compatible",
             config=LlamaConfig(vocab_size=VOCAB, hidden_size=256, intermediate_size=256,
                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                                max_position_embeddings=4096, rms_norm_eps=1e-5,
                                rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0,
                                                 "factor": 8.0, "low_freq_factor": 1.0,
                                                 "high_freq_factor": 4.0,
                                                 "original_max_position_embeddings": 64},
                                tie_word_embeddings=False, bos_token_id=eot,
                                eos_token_id=ime, pad_token_id=eot)),
        dict(name="llama_linear", cls=LlamaForCausalLM, form="old", shard=None, seed=7,
             note="Llama, linear rope scaling (factor 2), GQA 1, untied, old form",
             config=LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                max_position_embeddings=4096, rms_norm_eps=1e-5,
                                rope_parameters={"rope_type": "linear", "rope_theta": 10000.0,
                                                 "factor": 2.0},
                                tie_word_embeddings=False, bos_token_id=eot,
                                eos_token_id=ime, pad_token_id=eot)),
    ]


# ---------------------------------------------------------------------------
# Weights: scaled so that attention is far from uniform, every layer matters
# and the top1-top2 logit margins are not razor thin.
# ---------------------------------------------------------------------------
def init_weights(model, cfg, seed):
    g = torch.Generator().manual_seed(seed)
    tied = cfg.tie_word_embeddings

    def randn(shape, std):
        return torch.randn(*shape, generator=g) * std

    with torch.no_grad():
        for name, p in model.named_parameters():
            shape = tuple(p.shape)
            if name.endswith("embed_tokens.weight"):
                # Tied: small, so that a token's own embedding does not dominate
                # the residual stream (x . E[x] = |E[x]|^2 makes greedy paths
                # repeat the input token); the final norm restores the scale.
                val = randn(shape, 0.05 if tied else 1.0)
            elif name == "lm_head.weight":
                val = randn(shape, 0.5)
            elif name == "model.norm.weight":
                val = (10.0 if tied else 1.0) * (1.0 + randn(shape, 0.25))
            elif name.endswith("norm.weight"):  # every other RMSNorm incl. q_norm/k_norm
                val = 1.0 + randn(shape, 0.25)
            elif name.endswith(".bias"):
                val = randn(shape, 0.5)
            elif name.endswith(("q_proj.weight", "k_proj.weight")):
                val = randn(shape, 1.5 / math.sqrt(shape[1]))
            elif name.endswith(".weight") and len(shape) == 2:
                val = randn(shape, 1.0 / math.sqrt(shape[1]))
            else:
                raise SystemExit(f"unexpected parameter {name} {shape}")
            p.copy_(val)
    model.tie_weights()


def rewrite_old_form(path):
    """config.json as transformers 5 writes it -> the hub's older form."""
    with open(path) as f:
        c = json.load(f)
    rp = c.pop("rope_parameters")
    c["rope_theta"] = rp.pop("rope_theta")
    rtype = rp.pop("rope_type")
    c["rope_scaling"] = None if rtype == "default" else dict(rope_type=rtype, **rp)
    c["torch_dtype"] = c.pop("dtype")
    c["transformers_version"] = "4.51.0"
    with open(path, "w") as f:
        json.dump(c, f, indent=2, sort_keys=True)
        f.write("\n")


def load_fp32(cls, d):
    m = cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    m.eval()
    return m


@torch.no_grad()
def greedy(model, prompt, steps):
    """Manual greedy loop with transformers' cache: logits of the last prompt
    position and of every decode step (steps rows)."""
    ids = torch.tensor([prompt])
    out = model(input_ids=ids, use_cache=True)
    past = out.cache
    rows = [out.logits[0, -1].float()]
    tokens = []
    for i in range(steps):
        t = int(torch.argmax(rows[-1]))
        tokens.append(t)
        if i == steps - 1:
            break
        out = model(input_ids=torch.tensor([[t]]), cache=past, use_cache=True)
        past = out.cache
        rows.append(out.logits[0, -1].float())
    return tokens, torch.stack(rows)


@torch.no_grad()
def check_reference(model, prompt, tokens, logits):
    # 1. transformers' own generate() agrees.
    gc = GenerationConfig(do_sample=False, max_new_tokens=len(tokens), min_new_tokens=0,
                          eos_token_id=None, pad_token_id=0, bos_token_id=None)
    gen = model.generate(torch.tensor([prompt]), generation_config=gc)
    got = gen[0, len(prompt):].tolist()
    assert got == tokens, f"generate() disagrees: {got} vs {tokens}"
    # 2. a no-cache forward over the whole sequence agrees with the cached loop.
    full = torch.tensor([prompt + tokens[:-1]])
    ref = model(input_ids=full, use_cache=False).logits[0, len(prompt) - 1:].float()
    err = float(torch.linalg.norm(ref - logits) / torch.linalg.norm(ref))
    assert err < 1e-5, f"cached vs uncached logits differ: {err}"
    return err


def make_prompts(tok, seed):
    rng = np.random.default_rng(seed)
    chat = "<|im_start|>user\nWhat is 12 + 30? Think step by step.<|im_end|>\n<|im_start|>assistant\n"
    long_text = ("<|im_start|>user\nRectangles ABCD and EFGH are drawn such that D, E, C, F are "
                 "collinear. Also, A, D, H, G all lie on a circle. If BC = 16, AB = 107, FG = 17, "
                 "and EF = 184, what is the length of CE?<|im_end|>\n<|im_start|>assistant\n<think>\n")
    p_chat = tok.encode(chat).ids
    p_long = tok.encode(long_text).ids
    p_one = [int(rng.integers(5, VOCAB))]
    p_rand = [int(x) for x in rng.integers(0, VOCAB, size=13)]
    assert 90 <= len(p_long) <= 130, len(p_long)
    return [("chat", p_chat), ("one_token", p_one), ("random_ids", p_rand), ("long", p_long)]


def margins_of(logits):
    top2 = torch.topk(logits, 2, dim=-1).values
    return (top2[:, 0] - top2[:, 1]).tolist()


MIN_REL_MARGIN = 0.005  # min top1-top2 margin / logit std along every greedy path


def save_checkpoint(spec, seed, tok, tok_cfg, d):
    if os.path.isdir(d):
        shutil.rmtree(d)
    cfg = spec["config"]
    torch.manual_seed(seed)
    model = spec["cls"](cfg)
    init_weights(model, cfg, seed)
    model = model.to(torch.bfloat16)
    if "gen_eos" in spec:
        model.generation_config.eos_token_id = spec["gen_eos"]
    kw = {"max_shard_size": spec["shard"]} if spec["shard"] else {}
    model.save_pretrained(d, safe_serialization=True, **kw)
    tok.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(tok_cfg, f, indent=2, ensure_ascii=False)
        f.write("\n")


def build_fixture(spec, tok, tok_cfg, out_root):
    d = os.path.join(out_root, spec["name"])
    prompts = make_prompts(tok, spec["seed"])
    # Weight seeds are tried in a fixed order until every greedy path keeps
    # a top1-top2 margin of at least MIN_REL_MARGIN logit standard deviations.
    for attempt in range(40):
        seed = spec["seed"] + 1000 * attempt
        save_checkpoint(spec, seed, tok, tok_cfg, d)
        ref = load_fp32(spec["cls"], d)
        if spec["form"] == "old":
            probe = [p for _, p in prompts]
            before = [ref(input_ids=torch.tensor([p])).logits for p in probe]
            rewrite_old_form(os.path.join(d, "config.json"))
            ref = load_fp32(spec["cls"], d)
            for p, b in zip(probe, before):
                a = ref(input_ids=torch.tensor([p])).logits
                assert torch.equal(a, b), f"{spec['name']}: old-form config.json loads differently"
        runs = [(pname, prompt) + greedy(ref, prompt, N_STEPS) for pname, prompt in prompts]
        rel = min(min(margins_of(lg)) / float(lg.std(dim=-1).mean()) for _, _, _, lg in runs)
        if rel >= MIN_REL_MARGIN:
            break
        print(f"  {spec['name']}: seed {seed} has min margin {rel:.4f} logit std, next seed")
    else:
        raise SystemExit(f"{spec['name']}: no seed gives margins above {MIN_REL_MARGIN}")

    blobs, entries, offset = [], [], 0
    for pname, prompt, tokens, logits in runs:
        cache_err = check_reference(ref, prompt, tokens, logits)
        m = margins_of(logits)
        arr = logits.numpy().astype("<f4")
        blobs.append(arr.tobytes())
        entries.append(dict(name=pname, prompt=prompt, tokens=tokens,
                            margins=[round(x, 6) for x in m], min_margin=round(min(m), 6),
                            logits_std=round(float(logits.std(dim=-1).mean()), 4),
                            logits_offset=offset, logits_rows=int(arr.shape[0]),
                            cache_vs_nocache_rel_l2=cache_err))
        offset += arr.size
    with open(os.path.join(d, "logits.bin"), "wb") as f:
        for b in blobs:
            f.write(b)
    with open(os.path.join(d, "config.json")) as f:
        saved_cfg = json.load(f)
    expected = dict(
        fixture=spec["name"], architecture=saved_cfg["architectures"][0], note=spec["note"],
        config_form=spec["form"], sharded=bool(spec["shard"]),
        vocab_size=VOCAB, steps=N_STEPS,
        logits_file="logits.bin", logits_dtype="float32-le",
        logits_layout="for each prompt, logits_rows x vocab_size floats starting at float "
                      "index logits_offset; row 0 = last prompt position, row i = after "
                      "feeding tokens[i-1]",
        min_margin=min(e["min_margin"] for e in entries),
        weight_seed=seed,
        reference=dict(transformers=transformers.__version__, torch=torch.__version__,
                       dtype="float32 compute over bf16 weights", attn="eager"),
        prompts=entries,
    )
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    return expected


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(here, "tests", "data", "models"))
    ap.add_argument("--default", default="",
                    help="also copy the Qwen3 fixture here as a model directory ('' = skip)")
    ap.add_argument("--only", default=None, help="build only this fixture")
    args = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    torch.use_deterministic_algorithms(True)

    tok = train_tokenizer()
    tok_cfg = tokenizer_config(tok)
    ids = {t: tok.token_to_id(t) for t in SPECIALS + THINK}
    # transformers must read these tokenizer files as the `tokenizers` library does.
    os.makedirs(args.out, exist_ok=True)
    for spec in fixture_specs(ids):
        if args.only and spec["name"] != args.only:
            continue
        e = build_fixture(spec, tok, tok_cfg, args.out)
        print(f"{spec['name']:22s} {e['architecture']:18s} form={e['config_form']} "
              f"min_margin={e['min_margin']:.4f} prompts={[len(p['prompt']) for p in e['prompts']]}")
    check_tokenizer_files(os.path.join(args.out, "qwen3_tied_hd"), tok)
    if args.default and not args.only:
        if os.path.isdir(args.default):
            shutil.rmtree(args.default)
        src = os.path.join(args.out, "qwen3_tied_hd")
        os.makedirs(args.default)
        for fn in sorted(os.listdir(src)):
            if fn in ("expected.json", "logits.bin"):
                continue
            shutil.copy(os.path.join(src, fn), os.path.join(args.default, fn))
        print(f"default model: {args.default} (copy of {src})")


def check_tokenizer_files(d, tok):
    from transformers import AutoTokenizer
    at = AutoTokenizer.from_pretrained(d)
    text = "<|im_start|>user\nFind 2+2, then <think> again.<|im_end|>\n"
    assert at.encode(text) == tok.encode(text).ids, "AutoTokenizer disagrees with tokenizers"
    msgs = [{"role": "user", "content": "hi"}]
    s = at.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert s == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", repr(s)
    s = at.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True,
                               enable_thinking=False)
    assert s.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n"), repr(s)
    assert at.eos_token == "<|im_end|>"


if __name__ == "__main__":
    sys.exit(main())
