"""Display data from a sandbox, made safe to show in a notebook page (API.md, "Sessions").

A notebook page holds the Jupyter server's credentials, and Jupyter renders the live output of a
running cell without its own sanitiser. So whatever code in a sandbox emits as display data passes
here twice, on the agent before it is logged and in the kernel before `publish_display_data`:
- only `text/plain`, `text/html`, `image/png`, `image/jpeg` and `image/gif` pass;
- HTML goes through `nh3` (a maintained allowlist sanitiser) set for tables and text formatting:
  no scripts, event handlers, forms, buttons, SVG, iframes, objects, no `id`/`name` (DOM
  clobbering), no `data-*` (JupyterLab's command linker), no URL but http(s)/mailto links and
  images inlined as data: URLs, no style that loads anything;
- an image must be base64 of a file of its own type (a forged type is dropped);
- markdown and LaTeX travel as text/plain (some frontends render raw HTML inside them);
- everything else is dropped with a text/plain note that says what was dropped.
Filtering a filtered bundle changes nothing, so the second pass adds no notes of its own.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import nh3

TEXT, HTML = "text/plain", "text/html"
IMAGES = {"image/png": (b"\x89PNG\r\n\x1a\n",), "image/jpeg": (b"\xff\xd8\xff",),
          "image/gif": (b"GIF87a", b"GIF89a")}
ALLOWED = (TEXT, HTML, *IMAGES)
AS_TEXT = ("text/markdown", "text/latex")     # shown as their source, never rendered
MAX_VALUE_CHARS = 32 << 20                    # one mime value; a larger one is dropped
NOTE = "[joblet] not shown from the sandbox: "

TAGS = {
    "table", "thead", "tbody", "tfoot", "tr", "th", "td", "caption", "colgroup", "col",
    "p", "div", "span", "br", "hr", "pre", "code", "kbd", "samp", "var", "blockquote",
    "b", "i", "em", "strong", "u", "s", "sub", "sup", "small", "mark", "del", "ins", "abbr", "cite", "q",
    "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "dl", "dt", "dd",
    "a", "img", "figure", "figcaption",
}
# the content of these goes too, not only the tag (a script's text is not something to show)
DROP_WITH_CONTENT = {"script", "style", "svg", "math", "iframe", "frame", "frameset", "object", "embed",
                     "applet", "template", "noscript", "textarea", "select", "button", "form", "video",
                     "audio", "canvas", "link", "meta", "base", "head", "title"}
ATTRIBUTES = {
    "*": {"class", "title", "style", "align", "valign", "lang", "dir"},
    "table": {"border", "cellpadding", "cellspacing", "summary"},
    "td": {"colspan", "rowspan", "headers", "scope"},
    "th": {"colspan", "rowspan", "headers", "scope"},
    "col": {"span", "width"}, "colgroup": {"span", "width"},
    "ol": {"start", "type", "reversed"}, "li": {"value"},
    "a": {"href"}, "img": {"src", "alt", "width", "height"},
    "abbr": set(), "q": set(),
}
STYLE_PROPERTIES = {
    "text-align", "vertical-align", "font-weight", "font-style", "font-size", "font-family",
    "color", "background-color", "text-decoration", "white-space", "width", "min-width", "max-width",
    "height", "padding", "padding-left", "padding-right", "padding-top", "padding-bottom",
    "margin", "margin-left", "margin-right", "margin-top", "margin-bottom",
    "border", "border-collapse", "border-spacing", "border-color", "border-style", "border-width",
    "border-top", "border-bottom", "border-left", "border-right", "line-height", "text-indent",
}
LOADS = re.compile(r"url\s*\(|image(-set)?\s*\(|expression\s*\(|@import|\\|/\*", re.IGNORECASE)
LINK = re.compile(r"^(https?://|mailto:)", re.IGNORECASE)
INLINE_IMAGE = re.compile(r"^data:image/(png|jpeg|gif);base64,[A-Za-z0-9+/=\s]*$", re.IGNORECASE)


def _attribute(tag: str, name: str, value: str) -> str | None:
    """What nh3's allowlist cannot say alone: which URL goes where, and style values that load."""
    if name == "href":
        return value if LINK.match(value.strip()) else None
    if name == "src":
        return value if tag == "img" and INLINE_IMAGE.match(value.strip()) else None
    if name == "style" and LOADS.search(value):
        return None
    return value


_CLEANER = nh3.Cleaner(
    tags=TAGS, clean_content_tags=DROP_WITH_CONTENT, attributes=ATTRIBUTES, attribute_filter=_attribute,
    strip_comments=True, link_rel="noopener noreferrer nofollow", generic_attribute_prefixes=set(),
    url_schemes={"http", "https", "mailto", "data"}, filter_style_properties=STYLE_PROPERTIES,
    url_relative="deny",
)


def sanitize_html(html: str) -> str:
    """HTML cut down to tables and text formatting (see the module docstring)."""
    return _CLEANER.clean(html)


def _image_ok(mime: str, value: str) -> bool:
    try:
        raw = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        return False
    return raw.startswith(IMAGES[mime])


def _text(value: Any) -> str | None:
    """A mime value as text: a string, or nbformat's list of lines."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "".join(value)
    return None


def filter_bundle(data: Any) -> dict[str, str]:
    """A display bundle of allowed, safe values only; what was dropped is named in text/plain."""
    if not isinstance(data, dict):
        return {TEXT: NOTE + f"display data that is not a mime bundle ({type(data).__name__})"}
    out: dict[str, str] = {}
    dropped: list[str] = []
    for mime, raw in data.items():
        value = _text(raw)
        name = str(mime)[:80]
        if value is None or len(value) > MAX_VALUE_CHARS:
            dropped.append(name)
        elif mime == TEXT:
            out[TEXT] = value
        elif mime == HTML:
            out[HTML] = sanitize_html(value)
        elif mime in IMAGES:
            if _image_ok(mime, value):
                out[mime] = "".join(value.split())
            else:
                dropped.append(f"{name} (not a {mime.split('/')[1].upper()} image)")
        elif mime in AS_TEXT:
            out.setdefault(TEXT, value)
        else:
            dropped.append(name)
    if dropped:
        note = NOTE + ", ".join(sorted(dropped))
        out[TEXT] = f"{out[TEXT]}\n{note}" if out.get(TEXT) else note
    return out
