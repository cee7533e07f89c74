#!/usr/bin/env python3
"""`longflow tokenize --chat` renders the model's own chat template: a Qwen3
tokenizer directory shipping SmolLM2's template as chat_template.jinja gets
SmolLM2's default system message, text and ids as transformers and
`tokenizers` give them (tests/data/chat/jinja_goldens.json, made by
tools/gen_chat_jinja_goldens.py); `--chat-template chatml` still selects the
built-in ChatML; an unsupported template is a one-line error naming the
feature and its line.

Environment: LF_BIN (the longflow binary), LF_TEST_DATA (tests/data)."""
import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_util import DATA, QWEN3_TOKENIZER, require_bin, run, unpack_qwen3_tokenizer  # noqa: E402


class JinjaCli(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_bin()
        cls.tmp = tempfile.mkdtemp(prefix="lf_jinjacli_")
        unpack_qwen3_tokenizer(cls.tmp)
        with open(os.path.join(QWEN3_TOKENIZER, "tokenizer_config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        del cfg["chat_template"]
        with open(os.path.join(cls.tmp, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(cfg, f)
        with open(os.path.join(DATA, "chat", "jinja_goldens.json"), encoding="utf-8") as f:
            cls.golden = next(c for c in json.load(f)["api"]
                              if c["template"] == "SmolLM2-Instruct.jinja" and c["ship"] == "file")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def template(self, text):
        with open(os.path.join(self.tmp, "chat_template.jinja"), "w", encoding="utf-8") as f:
            f.write(text)

    def test_model_template(self):
        shutil.copy(os.path.join(DATA, "chat", "templates", "SmolLM2-Instruct.jinja"),
                    os.path.join(self.tmp, "chat_template.jinja"))
        prompt = self.golden["messages"][0]["content"]
        rc, out, err = run("tokenize", "--model", self.tmp, "--chat", "--prompt", prompt, "--json")
        self.assertEqual(rc, 0, err)
        got = json.loads(out)
        self.assertEqual(got["text"], self.golden["text"])
        self.assertIn("named SmolLM", got["text"])
        self.assertEqual(got["ids"], self.golden["ids"])
        # the built-in ChatML has no default system message
        rc, out, err = run("tokenize", "--model", self.tmp, "--chat", "--prompt", prompt, "--json",
                           "--chat-template", "chatml")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["text"],
                         "<|im_start|>user\n" + prompt + "<|im_end|>\n<|im_start|>assistant\n")

    def test_unsupported_template(self):
        self.template("{% for m in messages %}\n{{ m.content|wordwrap(10) }}{% endfor %}")
        rc, out, err = run("tokenize", "--model", self.tmp, "--chat", "--prompt", "hi")
        self.assertEqual(rc, 1)
        self.assertEqual(out, "")
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("line 2: unsupported feature: filter 'wordwrap'", err)
        self.assertIn("--chat-template", err)
        self.template("{{ messages[0].content.zfill(3) }}")
        rc, out, err = run("tokenize", "--model", self.tmp, "--chat", "--prompt", "hi")
        self.assertEqual(rc, 1)
        self.assertEqual(out, "")
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("line 1: 'zfill' is undefined", err)
        self.template("{{ raise_exception('Conversation roles must alternate') }}")
        rc, out, err = run("tokenize", "--model", self.tmp, "--chat", "--prompt", "hi")
        self.assertEqual(rc, 1)
        self.assertIn("Conversation roles must alternate", err)


class ThinkOpenCli(unittest.TestCase):
    """`generate --chat --split-think` learns from the rendered markup whether
    the model's template opened <think>: the bundled tiny reasoner's own
    template does not, the same template with a QwQ-style generation prompt
    does, and then text without </think> is reasoning, not an answer."""

    def run_with(self, template):
        src = os.path.join(os.environ.get("LF_SOURCE_DIR", "."), "models", "tiny-reasoner")
        with tempfile.TemporaryDirectory(prefix="lf_jinjathink_") as d:
            for name in os.listdir(src):
                if name == "tokenizer_config.json":
                    continue
                os.symlink(os.path.join(os.path.abspath(src), name), os.path.join(d, name))
            with open(os.path.join(src, "tokenizer_config.json"), encoding="utf-8") as f:
                cfg = json.load(f)
            cfg["chat_template"] = template(cfg["chat_template"])
            with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
                json.dump(cfg, f)
            rc, out, err = run("generate", "--model", d, "--chat", "--prompt", "What is 12+30?", "--max-tokens", "3",
                               "--json", "--split-think")
            self.assertEqual(rc, 0, err)
            return json.loads(out)

    def test_think_open(self):
        plain = self.run_with(lambda t: t)
        self.assertTrue(plain["prompt_text"].endswith("<|im_start|>assistant\n"))
        opened = self.run_with(lambda t: t.replace("'<|im_start|>assistant\\n' }}{%- if enable",
                                                   "'<|im_start|>assistant\\n<think>\\n' }}{%- if enable"))
        self.assertTrue(opened["prompt_text"].endswith("<|im_start|>assistant\n<think>\n"), opened["prompt_text"])
        for r in (plain, opened):
            self.assertNotIn("</think>", r["text"])  # 3 tokens: no closing tag, so the prompt decides
        self.assertEqual(opened["answer"], "")
        self.assertEqual(opened["reasoning"], opened["text"].strip("\n"))
        if not plain["text"].lstrip().startswith("<think>"):
            self.assertEqual(plain["answer"], plain["text"].strip("\n"))


if __name__ == "__main__":
    unittest.main()
