"""Write the natural-text prompt corpus (pytest_mxfp4/measure/corpus.txt), offline.

Prompts of random words make speculative-decoding acceptance meaningless
(nothing in them is predictable), so a case may name `prompt: text`: words
taken in order from this corpus instead. Its text is this project's own prose
(README.md and benchmarks/README.md, Apache-2.0 like the package): code
blocks, tables, headings, HTML and link targets removed, nothing downloaded.
Rerun after the READMEs change a lot; the file is committed, so a run never
depends on the README of the checkout it runs in.

    python scripts/make_corpus.py [--out pytest_mxfp4/measure/corpus.txt]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("README.md", "benchmarks/README.md")
HEADER = ("# pytest-mxfp4 natural-text prompt corpus: prose of this project's README.md and benchmarks/README.md\n"
          "# (Apache-2.0), made by scripts/make_corpus.py. Lines starting with '#' are not prompt text.\n")


def prose(markdown: str) -> list[str]:
    """The paragraphs of plain prose in a Markdown text."""
    out, para, fenced = [], [], False
    for line in markdown.splitlines():
        s = line.strip()
        if s.startswith("```"):
            fenced = not fenced
            continue
        if fenced or s.startswith(("|", "#", "<", ">", "    ")) or not s:
            if para:
                out.append(" ".join(para))
                para = []
            continue
        s = re.sub(r"^[-*] |^\d+\. ", "", s)
        s = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", s)  # [text](link) -> text
        s = re.sub(r"[*`]", "", s)
        para.append(s)
    if para:
        out.append(" ".join(para))
    return [p for p in out if len(p.split()) >= 8]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "pytest_mxfp4" / "measure" / "corpus.txt")
    a = ap.parse_args()
    paras = [p for src in SOURCES for p in prose((ROOT / src).read_text())]
    a.out.write_text(HEADER + "\n".join(paras) + "\n")
    words = sum(len(p.split()) for p in paras)
    print(f"{a.out}: {len(paras)} paragraphs, {words} words, {a.out.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
