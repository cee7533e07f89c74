#!/usr/bin/env python3
"""docs/policies.md's policies table is the registry's (tools/policies_table.py
--check against `longflow policies --json`), and every registered policy is
accepted by --policy while an unknown name is refused with the registry's list.

Environment: LF_BIN (the longflow binary), LF_SOURCE_DIR (the source tree)."""
import json
import os
import subprocess
import sys
import unittest

BIN = os.environ.get("LF_BIN", "")
SRC = os.environ.get("LF_SOURCE_DIR", ".")


class PoliciesDoc(unittest.TestCase):
    def test_doc_table_is_the_registry(self):
        res = subprocess.run([sys.executable, os.path.join(SRC, "tools", "policies_table.py"), "--bin", BIN,
                              "--doc", os.path.join(SRC, "docs", "policies.md"), "--check"],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(res.returncode, 0, res.stderr)

    def test_names_everywhere(self):
        res = subprocess.run([BIN, "policies", "--json"], capture_output=True, text=True, timeout=60)
        self.assertEqual(res.returncode, 0, res.stderr)
        names = [p["name"] for p in json.loads(res.stdout)]
        self.assertEqual(len(names), len(set(names)))
        for p in json.loads(res.stdout):
            self.assertTrue(p["paper"] and p["rule"] and p["aux_memory_per_slot"])
            self.assertGreater(p["aux_bytes_per_slot"], 0)
        help_text = subprocess.run([BIN, "generate", "--help"], capture_output=True, text=True).stdout
        self.assertIn(", ".join(names), help_text)
        bad = subprocess.run([BIN, "generate", "--policy", "nosuch", "--prompt-ids", "1"], capture_output=True,
                             text=True)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("unknown policy 'nosuch' (known: " + ", ".join(names), bad.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
