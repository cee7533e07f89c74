#!/usr/bin/env python3
"""Reference ids for every tokenizer.json component longflow reads: the
`tokenizers` library's encode/decode of small tokenizer.json files, each a
committed base tokenizer with one normalizer / pre-tokenizer / post-processor /
decoder configuration swapped in, over a corpus of dataset questions and edge
cases (digits, punctuation runs, accents, CJK, emoji, whitespace runs, mixed
scripts).

  tests/data/tokenizers/components/cases.json      [{"name", "base", and the
                                                     "normalizer",
                                                     "pre_tokenizer",
                                                     "post_processor", "decoder"
                                                     that replace the base's}]
  tests/data/tokenizers/components/texts.json      the corpus
  tests/data/tokenizers/components/expected.jsonl.xz
        one line per (case, text): {"case", "t" (index into texts), "ids", ...}
        with the fields of gen_tokenizer_fixtures.expected_lines

Each configuration is round-tripped through `tokenizers` (from_str/to_str), so
the committed parts are written as the library writes them.

Bases (paths under tests/data/tokenizers): "bl" = bl_gpt2 (byte-level BPE;
pre-tokenizers under test are followed by ByteLevel without its regex so that
every piece maps to bytes), "spm" = spm_bf (SentencePiece-style BPE with byte
fallback), "qwen3" = the real Qwen3 tokenizer, "eow" = a small BPE trained here
with an end-of-word suffix (components/eow_tokenizer.json).

usage: python3 tools/gen_tokenizer_component_fixtures.py [--shared ../shared]
"""
import argparse
import copy
import json
import lzma
import os
import sys
import tempfile

from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "tokenizers")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_tokenizer_fixtures as gtf  # noqa: E402

BASES = {"bl": "bl_gpt2/tokenizer.json", "spm": "spm_bf/tokenizer.json", "qwen3": "qwen3/tokenizer.json.xz",
         "eow": "components/eow_tokenizer.json"}

BL_NOREGEX = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
BL_REGEX = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
BL_DECODER = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
SPM_DECODER = {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
    {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
QWEN2_REGEX = gtf.QWEN2_REGEX
BEHAVIORS = ["Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"]

EDGE = [
    "Number 1234567 and ١٢٣ and ²³ and ½ and Ⅻ and 12.5% of 3,000",
    "Hello,,, world!!! ... ?!? ¿Qué? «quoted» — dash – en‐dash ‘single’ “double” (a) [b] {c}",
    "tab\tseparated\tvalues\nnew  line\r\nwindows\x0bvt\x0cff",
    "İstanbul ΑΒΓ ǅ ß Straße ＡＢＣ ΣΊΣΥΦΟΣ",
    "Café naïve résumé coöperate Ångström ﬁancé e\u0301 o\u0308\u0301",
    "日本語のテキスト、カタカナー、ひらがな。中文文本",
    "mixed日本English한국어العربيةабв123 and ○●◎",
    "𠀀𪜀𫝀𫠠𫤟𬺰 rare CJK and 龥 and 豈",
    "a\u200bb\ufffdc\u00add\u0007e\u200df",
    "   leading and trailing   ",
    "0000000000 007 3.14 -2 1e10",
    "snake_case camelCase kebab-case dot.case UPPER_CASE",
    "a" + " " * 7 + "b\n\n\n\nc\t \td",
]


def split_bytelevel(pre):
    return {"type": "Sequence", "pretokenizers": [pre, BL_NOREGEX]}


def cases():
    """(name, base, overrides)."""
    c = []
    bl = {"normalizer": None, "post_processor": None, "decoder": BL_DECODER}
    spm = {"normalizer": None, "post_processor": None, "decoder": SPM_DECODER}

    def pre_bl(name, pre):
        c.append((name, "bl", dict(bl, pre_tokenizer=split_bytelevel(pre))))

    pre_bl("digits_individual", {"type": "Digits", "individual_digits": True})
    pre_bl("digits_runs", {"type": "Digits", "individual_digits": False})
    pre_bl("whitespace", {"type": "Whitespace"})
    pre_bl("whitespace_split", {"type": "WhitespaceSplit"})
    for b in BEHAVIORS:
        pre_bl(f"punctuation_{b.lower()}", {"type": "Punctuation", "behavior": b})
        pre_bl(f"split_regex_{b.lower()}",
               {"type": "Split", "pattern": {"Regex": r"\s+|\p{N}+|[,.!?]"}, "behavior": b, "invert": False})
        pre_bl(f"split_string_{b.lower()}",
               {"type": "Split", "pattern": {"String": " "}, "behavior": b, "invert": False})
    pre_bl("split_regex_invert", {"type": "Split", "pattern": {"Regex": r"\p{L}+"}, "behavior": "Isolated",
                                  "invert": True})
    pre_bl("split_string_invert", {"type": "Split", "pattern": {"String": "a"}, "behavior": "MergedWithNext",
                                   "invert": True})
    pre_bl("char_delimiter", {"type": "CharDelimiterSplit", "delimiter": "e"})
    pre_bl("char_delimiter_space", {"type": "CharDelimiterSplit", "delimiter": " "})
    pre_bl("unicode_scripts", {"type": "UnicodeScripts"})
    pre_bl("bert_pre", {"type": "BertPreTokenizer"})
    pre_bl("fixed_length", {"type": "FixedLength", "length": 3})
    pre_bl("sequence", {"type": "Sequence", "pretokenizers": [
        {"type": "Punctuation", "behavior": "Contiguous"}, {"type": "Digits", "individual_digits": True},
        {"type": "WhitespaceSplit"}]})
    c.append(("bytelevel_prefix", "bl", dict(bl, pre_tokenizer={
        "type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True})))
    c.append(("bytelevel_prefix_noregex", "bl", dict(bl, pre_tokenizer={
        "type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": False})))

    for scheme in ("always", "first", "never"):
        for split in (True, False):
            c.append((f"metaspace_{scheme}_{'split' if split else 'nosplit'}", "spm", dict(
                spm, pre_tokenizer={"type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme,
                                    "split": split},
                decoder={"type": "Sequence", "decoders": [
                    {"type": "ByteFallback"},
                    {"type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme, "split": split}]})))
    c.append(("metaspace_whitespace", "spm", dict(spm, pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "Whitespace"}, {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always",
                                 "split": True}]})))

    def norm_bl(name, norm):
        c.append((name, "bl", dict(bl, normalizer=norm, pre_tokenizer=BL_REGEX)))

    for form in ("NFC", "NFD", "NFKC", "NFKD"):
        norm_bl(form.lower(), {"type": form})
    norm_bl("lowercase", {"type": "Lowercase"})
    for left, right in ((True, True), (True, False), (False, True)):
        norm_bl(f"strip_{'l' if left else ''}{'r' if right else ''}",
                {"type": "Strip", "strip_left": left, "strip_right": right})
    norm_bl("strip_accents", {"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "StripAccents"}]})
    norm_bl("strip_accents_alone", {"type": "StripAccents"})
    norm_bl("replace_regex", {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "})
    norm_bl("replace_string", {"type": "Replace", "pattern": {"String": "a"}, "content": "ä"})
    norm_bl("prepend", {"type": "Prepend", "prepend": "¶"})
    norm_bl("bert_normalizer", {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                                "strip_accents": None, "lowercase": True})
    norm_bl("bert_normalizer_cased", {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                                      "strip_accents": None, "lowercase": False})
    norm_bl("bert_normalizer_accents", {"type": "BertNormalizer", "clean_text": False,
                                        "handle_chinese_chars": False, "strip_accents": True, "lowercase": False})
    norm_bl("nmt", {"type": "Nmt"})
    c.append(("bytelevel_normalizer", "bl", dict(bl, normalizer={"type": "ByteLevel"},
                                                  pre_tokenizer={"type": "Whitespace"})))
    norm_bl("normalizer_sequence", {"type": "Sequence", "normalizers": [
        {"type": "NFKD"}, {"type": "StripAccents"}, {"type": "Lowercase"},
        {"type": "Strip", "strip_left": True, "strip_right": True}]})

    def pp_bl(name, pp):
        c.append((name, "bl", dict(bl, pre_tokenizer=BL_REGEX, post_processor=pp)))

    eot = "<|endoftext|>"
    pp_bl("template", {"type": "TemplateProcessing",
                       "single": [{"SpecialToken": {"id": eot, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                  {"SpecialToken": {"id": "[END]", "type_id": 0}}],
                       "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                       "special_tokens": {eot: {"id": eot, "ids": [0], "tokens": [eot]},
                                          "[END]": {"id": "[END]", "ids": [0, 0], "tokens": [eot, eot]}}})
    pp_bl("roberta", {"type": "RobertaProcessing", "sep": [eot, 0], "cls": [eot, 0], "trim_offsets": True,
                      "add_prefix_space": False})
    pp_bl("bert_processing", {"type": "BertProcessing", "sep": [eot, 0], "cls": [eot, 0]})
    pp_bl("bytelevel_pp", {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                           "use_regex": True})
    pp_bl("pp_sequence", {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True},
        {"type": "TemplateProcessing",
         "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": eot, "type_id": 0}}],
         "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {eot: {"id": eot, "ids": [0], "tokens": [eot]}}}]})

    c.append(("decoder_bpe", "eow", {"decoder": {"type": "BPEDecoder", "suffix": "</w>"}}))
    spm_meta = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
    for name, dec in (
            ("decoder_strip_both", {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
                {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 2, "stop": 1}]}),
            ("decoder_replace_regex", {"type": "Sequence", "decoders": [
                {"type": "ByteFallback"}, {"type": "Fuse"},
                {"type": "Replace", "pattern": {"Regex": "▁+"}, "content": "_"}]}),
            ("decoder_metaspace_never", {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never",
                                         "split": True})):
        c.append((name, "spm", dict(spm, pre_tokenizer=spm_meta, decoder=dec)))

    c.append(("qwen3_nfkc_lowercase", "qwen3", {"normalizer": {"type": "Sequence", "normalizers": [
        {"type": "NFKC"}, {"type": "Lowercase"}]}}))
    c.append(("qwen3_digits_first", "qwen3", {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": False},
        {"type": "Split", "pattern": {"Regex": QWEN2_REGEX}, "behavior": "Isolated", "invert": False},
        BL_NOREGEX]}}))
    return c


def train_eow(texts):
    """A small BPE whose words end in "</w>" (end_of_word_suffix), with an
    unknown token, Whitespace pre-tokenizer and BPEDecoder: the base for
    BPEDecoder."""
    from tokenizers import models, pre_tokenizers, trainers, decoders
    tok = Tokenizer(models.BPE(unk_token="[UNK]", end_of_word_suffix="</w>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.BPEDecoder(suffix="</w>")
    trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=["[UNK]"], limit_alphabet=120,
                                  end_of_word_suffix="</w>", show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return json.loads(tok.to_str())


def load_base(name):
    path = os.path.join(OUT, BASES[name])
    if path.endswith(".xz"):
        return json.loads(lzma.open(path, "rt", encoding="utf-8").read())
    return json.load(open(path, encoding="utf-8"))


PARTS = ("normalizer", "pre_tokenizer", "post_processor", "decoder")


def expected_lines_robust(d, texts):
    """expected_lines for every text, or, when the reference panics on some
    (tokenizers' Strip decoder indexes past a string shorter than start + stop,
    e.g. the empty decode of no ids), text by text, leaving those out."""
    try:
        lines, nd = gtf.expected_lines(d, texts)
        return list(enumerate(lines)), nd, 0
    except BaseException as e:  # pyo3's PanicException derives from BaseException
        if type(e).__name__ != "PanicException":
            raise
    out, nd, skipped = [], 0, 0
    for i, t in enumerate(texts):
        try:
            lines, n1 = gtf.expected_lines(d, [t])
        except BaseException as e:
            if type(e).__name__ != "PanicException":
                raise
            skipped += 1
            continue
        out.append((i, lines[0]))
        nd += n1
    return out, nd, skipped


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    args = ap.parse_args()
    questions = gtf.read_questions(os.path.abspath(args.shared))[::12]
    texts = questions + gtf.EXTRA + EDGE
    cdir = os.path.join(OUT, "components")
    os.makedirs(cdir, exist_ok=True)
    gtf.write_json(os.path.join(OUT, BASES["eow"]), train_eow(gtf.all_questions(os.path.abspath(args.shared))))
    bases = {k: load_base(k) for k in BASES}
    out_cases, records = [], []
    for name, base, over in cases():
        j = copy.deepcopy(bases[base])
        j.update(over)
        canon = json.loads(Tokenizer.from_str(json.dumps(j)).to_str())
        entry = {"name": name, "base": BASES[base]}
        entry.update({k: canon[k] for k in PARTS if k in over})
        out_cases.append(entry)
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
                json.dump(canon, f, ensure_ascii=False)
            gtf.write_json(os.path.join(d, "tokenizer_config.json"), {"tokenizer_class": "PreTrainedTokenizerFast"})
            lines, nd, skipped = expected_lines_robust(d, texts)
        for i, rec in lines:
            del rec["text"]
            records.append(dict({"case": name, "t": i}, **rec))
        if skipped:
            print(f"{name}: {skipped} texts left out (the reference panics on them)")
        print(f"{name}: {len(lines)} lines ({nd} where transformers differs)")
    gtf.write_json(os.path.join(cdir, "cases.json"), out_cases, indent=1)
    gtf.write_json(os.path.join(cdir, "texts.json"), texts, indent=0)
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    with lzma.open(os.path.join(cdir, "expected.jsonl.xz"), "wb", preset=9 | lzma.PRESET_EXTREME) as f:
        f.write(data)
    print(f"{len(out_cases)} cases, {len(texts)} texts, {len(records)} records, {len(data)} bytes before xz")


if __name__ == "__main__":
    main()
