"""Which Unicode version does the reference (Hugging Face tokenizers) use for
\\p{L}? Prints, for letters new in Unicode 17 and in 18, whether the reference's
Llama 3 pre-tokenizer keeps them inside a letter run, and whether ours agrees.
Run where `tokenizers` is installed: python tools/check_unicode_reference.py TOKENIZER_JSON"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tokenizers  # noqa: E402

from llama_kernel import _C  # noqa: E402
from llama_kernel.tokenizer import Tokenizer  # noqa: E402

path = sys.argv[1]
hf = tokenizers.Tokenizer.from_file(path)
ours = Tokenizer.from_file(path)
data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "unicode_new_letters.txt")
print("tokenizers", tokenizers.__version__, "| our table: Unicode", _C.build_info().get("unicode_version", "?"))
for line in open(data):
    if line.startswith("#"):
        continue
    ver, *cps = line.split()
    as_letter = agree = 0
    for cp in cps:
        text = "x" + chr(int(cp, 16)) + "y"
        pieces = [p for p, _ in hf.pre_tokenizer.pre_tokenize_str(text)]
        as_letter += len(pieces) == 1
        agree += len(pieces) == len(_C.pretokenize(text))
    print(f"Unicode {ver} new letters: reference treats {as_letter}/{len(cps)} as letters; pre-tokenization agrees with ours {agree}/{len(cps)}")
