"""Text a user or a file supplied, shown as text: never as markdown.

Streamlit renders ``st.markdown``, ``st.warning``, captions and the like as markdown, so a value
taken from a link, a file name, a model's class names or a slide's properties could make a link
(phishing inside the app's own warning box), an image that the visitor's browser fetches
(tracking), emphasis or a colour directive. :func:`plain` escapes every character markdown (and
Streamlit's ``:directive[...]`` and ``:emoji:`` syntax) gives a meaning, so the value reads as
typed.
"""

from __future__ import annotations

import re

# Every ASCII punctuation character may be backslash-escaped in CommonMark; these are the ones
# markdown, GitHub-flavoured tables/strikethrough, LaTeX ($) and Streamlit's directives (:) use.
_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:=&])")


def plain(value: object) -> str:
    """``value`` as literal text inside markdown: specials escaped, line breaks as spaces."""
    text = " ".join(str(value).splitlines())
    return _SPECIAL.sub(r"\\\1", text)


def code(value: object) -> str:
    """``value`` as an inline code span that it cannot close: the delimiter is one backtick longer
    than the longest run of backticks inside (backslashes do not escape inside code spans)."""
    text = " ".join(str(value).splitlines())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"
