"""Text from a runs folder (run, folder and class names, error messages, metadata) or from a URL, made to
show as itself: never as Markdown, a Streamlit directive (``:red[…]``), KaTeX, a link, an image or HTML.

Streamlit renders the body of ``st.markdown``, ``st.caption``, ``st.info`` / ``warning`` / ``error`` /
``success``, image captions, progress texts and widget, expander and metric labels as Markdown; plotly
renders a small HTML subset (``<b>``, ``<a href>``, ``<br>``…) in titles, legends, tick labels, annotations
and hover labels. Pages put untrusted text into the former through ``plain`` (or ``code`` for a name shown
as code) and figures put it into the latter through ``html_escape``. Pure functions: no Streamlit here.
"""
from __future__ import annotations

import re

# every character Markdown (with GitHub's extensions, KaTeX and Streamlit's directives) gives a meaning:
# emphasis, code, links and images, HTML and entities, headings, lists, tables, strikethrough, math,
# ``:color[…]`` directives and autolinks (``www.``, ``http:``, ``a@b``)
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~:$&@])")
# line breaks and other control characters: a name stays on its line (no block-level Markdown)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_BACKTICKS = re.compile(r"`+")
# GitHub's autolinks are found in the text after Markdown is parsed, escapes or not: an invisible word joiner
# (U+2060) after "www", "http:" / "https:" and an e-mail's "@" keeps them text
_AUTOLINK = re.compile(r"(?i)(www(?=\.)|https?:(?=/)|@(?=[-\w]))")
WORD_JOINER = "\u2060"


def _one_line(text: object) -> str:
    return _CONTROL.sub(" ", str(text))


def plain(text: object) -> str:
    """``text`` for a Markdown body or label, shown exactly as written: every character Markdown gives a
    meaning is backslash-escaped (so ``**b**``, ``:red[x]``, ``$x$``, ``[l](…)``, ``![i](…)``, backticks
    and ``<b>`` stay text), a word joiner keeps ``www.``, ``http://`` and e-mail addresses from becoming
    links; line breaks and other control characters become spaces."""
    text = _AUTOLINK.sub(lambda match: match.group() + WORD_JOINER, _one_line(text))
    return _MARKDOWN_SPECIALS.sub(r"\\\1", text)


def code(text: object) -> str:
    """``text`` as an inline code span that it cannot leave: fenced by more backticks than any run of
    backticks inside it (padded with spaces when it starts or ends with one). Nothing inside a code span
    is Markdown, a directive, math or HTML."""
    text = _one_line(text)
    fence = "`" * (1 + max((len(run) for run in _BACKTICKS.findall(text)), default=0))
    padded = f" {text} " if text.startswith("`") or text.endswith("`") or not text.strip() else text
    return f"{fence}{padded}{fence}"


def html_escape(text: object) -> str:
    """``text`` for plotly's titles, legends, tick labels, annotations and hover labels: ``&``, ``<`` and
    ``>`` as entities, so no ``<b>``, ``<a href>`` or ``<br>`` comes of it (plotly shows the entities as
    the characters)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
