"""tools/patching.py: both patch formats, the tolerances, and the refusals (pure functions)."""

import pytest

from helpers_tools import SAMPLE_TRAIN
from tools.patching import MAX_PATCH_BYTES, PatchError, apply_patch

SR = "<<<<<<< SEARCH\n{old}=======\n{new}>>>>>>> REPLACE\n"


def sr(old, new, filename=None):
    return (filename + "\n" if filename else "") + SR.format(old=old, new=new)


# --- SEARCH/REPLACE -----------------------------------------------------------------------------

def test_search_replace_one_block():
    r = apply_patch(SAMPLE_TRAIN, sr("LR = 0.02\n", "LR = 0.04\n"))
    assert "LR = 0.04\n" in r.text and "LR = 0.02" not in r.text
    assert "Applied 1 edit" in r.summary and "line 5" in r.summary
    assert "-LR = 0.02" in r.summary and "+LR = 0.04" in r.summary


def test_search_replace_several_blocks_with_filename_and_fence():
    patch = ("Here is my change:\n\ntrain.py\n```python\n" + sr("DEPTH = 4\n", "DEPTH = 6\n") + "```\n\n"
             "workspace/train.py\n" + sr("    warmup = 10\n", "    warmup = 20\n"))
    r = apply_patch(SAMPLE_TRAIN, patch)
    assert "DEPTH = 6" in r.text and "warmup = 20" in r.text
    assert "Applied 2 edits" in r.summary


def test_search_replace_trailing_whitespace_drift():
    r = apply_patch(SAMPLE_TRAIN, sr("def main():   \n    total = 100 \n", "def main():\n    total = 200\n"))
    assert "    total = 200\n" in r.text
    assert "ignoring trailing whitespace" in r.summary


def test_search_replace_indentation_drift_is_reindented():
    # the model lost the function body's indentation in both parts
    r = apply_patch(SAMPLE_TRAIN, sr("warmup = 10\nif step < warmup:\n", "warmup = 5\nif step < warmup:\n"))
    assert "    warmup = 5\n    if step < warmup:\n" in r.text


def test_search_replace_with_line_numbers_copied_from_read_file():
    r = apply_patch(SAMPLE_TRAIN, sr("     4\tDEPTH = 4\n     5\tLR = 0.02\n", "     4\tDEPTH = 8\n     5\tLR = 0.02\n"))
    assert "DEPTH = 8\nLR = 0.02\n" in r.text


# --- unified diff -------------------------------------------------------------------------------

def test_unified_diff_with_prefixes():
    patch = """--- a/train.py
+++ b/train.py
@@ -4,2 +4,2 @@
-DEPTH = 4
+DEPTH = 12
 LR = 0.02
"""
    r = apply_patch(SAMPLE_TRAIN, patch)
    assert "DEPTH = 12\nLR = 0.02\n" in r.text


def test_unified_diff_drifted_line_numbers_no_prefixes_multiple_hunks():
    patch = """--- train.py
+++ train.py
@@ -40,3 +40,3 @@ def schedule(step, total):
 def schedule(step, total):
-    warmup = 10
+    warmup = 50
     if step < warmup:
@@ -1,3 +1,4 @@
 def main():
     total = 100
+    total = total * 2
     for step in range(total):
"""
    r = apply_patch(SAMPLE_TRAIN, patch)
    assert "    warmup = 50\n" in r.text and "    total = total * 2\n" in r.text
    assert "Applied 2 edits" in r.summary and "the hunk said line 40" in r.summary


def test_unified_diff_bare_hunk_headers_and_blank_context_without_space():
    patch = """@@ @@
 def block(x):
-    x = x + 1
+    x = x + 2
     return x

"""
    r = apply_patch(SAMPLE_TRAIN, patch)
    assert "def block(x):\n    x = x + 2\n" in r.text
    assert "def other_block(x):\n    x = x + 1\n" in r.text


def test_unified_diff_trailing_whitespace_drift():
    patch = "@@ -4,1 +4,1 @@\n-DEPTH = 4   \n+DEPTH = 5\n"
    assert "DEPTH = 5\n" in apply_patch(SAMPLE_TRAIN, patch).text


# --- refusals -----------------------------------------------------------------------------------

@pytest.mark.parametrize("patch", ["", "   \n\n"])
def test_empty_patch(patch):
    with pytest.raises(PatchError, match="empty"):
        apply_patch(SAMPLE_TRAIN, patch)


def test_huge_patch():
    big = sr("LR = 0.02\n", "# x\n" * (MAX_PATCH_BYTES // 4 + 10))
    with pytest.raises(PatchError, match="over the 200 KB limit"):
        apply_patch(SAMPLE_TRAIN, big)


def test_not_a_patch():
    with pytest.raises(PatchError, match="neither a unified diff"):
        apply_patch(SAMPLE_TRAIN, "please set LR to 0.04")


@pytest.mark.parametrize("patch", [
    sr("x = 1\n", "x = 2\n", filename="prepare.py"),
    sr("x = 1\n", "x = 2\n", filename="nanochat/prepare.py"),
    sr("{}\n", "{}\n", filename="harness.json"),
    "--- a/nanochat/prepare.py\n+++ b/nanochat/prepare.py\n@@ -1 +1 @@\n-x\n+y\n",
    "--- a/train.py\n+++ b/train.py\n@@ -4 +4 @@\n-DEPTH = 4\n+DEPTH = 5\n"
    "--- a/prepare.py\n+++ b/prepare.py\n@@ -1 +1 @@\n-x\n+y\n",
])
def test_patch_aimed_at_the_harness(patch):
    with pytest.raises(PatchError, match="frozen harness and is read-only"):
        apply_patch(SAMPLE_TRAIN, patch)


def test_patch_aimed_at_another_file():
    with pytest.raises(PatchError, match="only edits train.py, not 'model.py'"):
        apply_patch(SAMPLE_TRAIN, sr("x\n", "y\n", filename="model.py"))
    with pytest.raises(PatchError, match="creates a new file"):
        apply_patch(SAMPLE_TRAIN, "--- /dev/null\n+++ b/train2.py\n@@ -0,0 +1 @@\n+x = 1\n")


def test_context_does_not_match():
    with pytest.raises(PatchError, match="block 1 does not match train.py.*does not occur"):
        apply_patch(SAMPLE_TRAIN, sr("LR = 0.03\n", "LR = 0.04\n"))
    with pytest.raises(PatchError, match="hunk 1 does not match.*occurs at line 8, but the lines after it differ"):
        apply_patch(SAMPLE_TRAIN, "@@ -8,2 +8,2 @@\n def schedule(step, total):\n-    warmup = 99\n+    warmup = 1\n")


def test_ambiguous_patch_never_guesses():
    with pytest.raises(PatchError, match=r"matches 2 places in train.py \(lines 16, 21\)"):
        apply_patch(SAMPLE_TRAIN, sr("    x = x + 1\n    return x\n", "    x = x + 2\n    return x\n"))
    # even when a diff's line number points at one of them
    with pytest.raises(PatchError, match="matches 2 places"):
        apply_patch(SAMPLE_TRAIN, "@@ -16,2 +16,2 @@\n-    x = x + 1\n+    x = x + 2\n     return x\n")


def test_all_or_nothing_when_a_later_block_fails():
    patch = sr("DEPTH = 4\n", "DEPTH = 6\n") + sr("nope\n", "x\n")
    with pytest.raises(PatchError, match="block 2 does not match"):
        apply_patch(SAMPLE_TRAIN, patch)


def test_syntax_error_is_refused_with_location():
    with pytest.raises(PatchError, match=r"would not compile: .* at line 9") as e:
        apply_patch(SAMPLE_TRAIN, sr("    warmup = 10\n", "    warmup = (10\n"))
    assert "warmup = (10" in str(e.value)


def test_unclosed_block_and_empty_search():
    with pytest.raises(PatchError, match="not closed"):
        apply_patch(SAMPLE_TRAIN, "<<<<<<< SEARCH\nLR = 0.02\n=======\nLR = 0.1\n")
    with pytest.raises(PatchError, match="SEARCH part of SEARCH/REPLACE block 1 is empty"):
        apply_patch(SAMPLE_TRAIN, sr("", "import os\n"))


def test_no_op_patch():
    with pytest.raises(PatchError, match="changes nothing"):
        apply_patch(SAMPLE_TRAIN, sr("LR = 0.02\n", "LR = 0.02\n"))
