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
# GFM's autolink literals (a bare http://…, www.… or name@host.tld) are found in the text after
# escapes are resolved, so no backslash stops them: an invisible WORD JOINER (U+2060) after the
# scheme's colon, in "www." and after "@" breaks the pattern and the text still reads the same.
_AUTOLINK = re.compile(r"(?<=[A-Za-z])(:)(?=//)|\b(www)(?=\.)|(@)", re.IGNORECASE)
JOINER = "\u2060"
BREAK = "\u200b"  # ZERO WIDTH SPACE: a line may break here, nothing is drawn
_HUMPS = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _unlinked(text: str) -> str:
    return _AUTOLINK.sub(lambda m: m.group(0) + JOINER, text)


def plain(value: object) -> str:
    """``value`` as literal text inside markdown: specials escaped, no autolink, line breaks as spaces."""
    text = " ".join(str(value).splitlines())
    return _SPECIAL.sub(r"\\\1", _unlinked(text))


def code(value: object) -> str:
    """``value`` as an inline code span that it cannot close: the delimiter is one backtick longer
    than the longest run of backticks inside (backslashes do not escape inside code spans, and
    nothing inside one is autolinked)."""
    text = " ".join(str(value).splitlines())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def breakable(name: str) -> str:
    """A CamelCase name that may wrap between its words (``Grad|CAM|Element|Wise``) in a narrow
    column, instead of the browser cutting it anywhere (``GradCA|M``); it reads the same."""
    return _HUMPS.sub(BREAK, name)


# What makes a link, an image or HTML when markdown is parsed: brackets (inline, reference and
# image links) and angle brackets (autolinks, HTML); autolink literals come after (_unlinked).
_LINKING = re.compile(r"([\[\]<>])")


def card(markdown: str) -> str:
    """A model folder's MODEL_CARD.md as markdown that keeps its formatting (headings, tables,
    lists, emphasis) but can make no link, image, autolink or HTML: the card of a folder someone
    dropped on a shared server is shown to every visitor of its Model page."""
    return _LINKING.sub(r"\\\1", _unlinked(markdown))
