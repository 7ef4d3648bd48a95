"""Rewrite README.md's config reference block from the config's own field descriptions."""

from pathlib import Path

from tunesmith.config import config_reference

readme = Path(__file__).resolve().parents[1] / "README.md"
text = readme.read_text(encoding="utf-8")
start, end = "<!-- config-reference:start -->\n", "\n<!-- config-reference:end -->"
head, rest = text.split(start, 1)
tail = rest.split(end, 1)[1]
readme.write_text(head + start + config_reference() + end + tail, encoding="utf-8")
