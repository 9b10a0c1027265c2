"""Display data from a sandbox, as an attacker would shape it, and what reaches the notebook page.

Each payload is one way hostile output has run script in (or acted for) a Jupyter user; the filter
(joblet_nb/core/untrusted.py, the same code on the agent and in the kernel) must leave nothing of it
that a browser could act on, and still let pandas tables and matplotlib plots through intact."""

from __future__ import annotations

import base64
import io
import re

import pytest

from joblet_nb.core.untrusted import NOTE, filter_bundle, sanitize_html

ACTIVE = re.compile(r"<\s*(script|svg|iframe|object|embed|form|button|input|style|math|link|meta|base)\b"
                    r"|\son\w+\s*=|javascript:|\s(id|name|data-[\w-]*|formaction|action)\s*=|srcdoc|xlink",
                    re.IGNORECASE)

PAYLOADS = {
    "script": "<script>window.jnbPwned = 1</script><p>text</p>",
    "script in a table cell": "<table><tr><td><script>window.jnbPwned=1</script>x</td></tr></table>",
    "event handler": '<img src="x" onerror="window.jnbPwned=1"><div onmouseover="window.jnbPwned=1">hover</div>',
    "event handler, odd case and spacing": '<b OnClIcK = "window.jnbPwned=1">b</b>',
    "javascript: link": '<a href="javascript:window.jnbPwned=1">click</a>',
    "javascript: link, entity-encoded": '<a href="jav&#x09;ascript:window.jnbPwned=1">click</a>',
    "javascript: link, leading space and case": '<a href=" JaVaScRiPt:window.jnbPwned=1">click</a>',
    "data: html link": '<a href="data:text/html;base64,PHNjcmlwdD53aW5kb3cuam5iUHduZWQ9MTwvc2NyaXB0Pg==">x</a>',
    "data: svg image": '<img src="data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+">',
    "svg with script": '<svg><script>window.jnbPwned=1</script><circle r="5"/></svg>',
    "svg onload": '<svg onload="window.jnbPwned=1"><a xlink:href="javascript:1">s</a></svg>',
    "iframe srcdoc": '<iframe srcdoc="<script>parent.jnbPwned=1</script>"></iframe>',
    "object and embed": '<object data="evil.swf"></object><embed src="evil.swf">',
    "meta refresh and base": '<meta http-equiv="refresh" content="0;url=javascript:1"><base href="https://evil">',
    "style element": "<style>body { background: url(https://evil/track) }</style>",
    "style attribute that loads": '<div style="background-image: url(https://evil/track)">d</div>',
    "style attribute with expression": '<div style="width: expression(window.jnbPwned=1)">d</div>',
    "style attribute hiding an import": '<div style="color: red; @import \'https://evil\'">d</div>',
    # CVE-2021-32797: a form whose action posts to the notebook server as the user
    "CVE-2021-32797 form action": ('<form action="/api/contents" method="post"><input name="x" value="1">'
                                   '<button formaction="/api/terminals">Save</button></form>'),
    # CVE-2024-43805: DOM clobbering through id/name shadows the page's globals
    "CVE-2024-43805 DOM clobbering": ('<img id="jupyterapp" name="jupyterapp" src="data:image/png;base64,iVBORw0KGgo=">'
                                      '<a id="defaults" name="defaults">x</a>'),
    # CVE-2026-42557: one click on a button runs a JupyterLab command through its command linker
    "CVE-2026-42557 command linker button": ('<button data-commandlinker-command="terminal:create-new" '
                                             'data-commandlinker-args="{}">Run</button>'
                                             '<span data-commandlinker-command="help:open">help</span>'),
    "comment hiding markup": "<!--><script>window.jnbPwned=1</script>-->",
    "unclosed tags": '<table><tr><td><img src=x onerror=window.jnbPwned=1',
    "template": "<template><script>window.jnbPwned=1</script></template>",
    "noscript mutation": '<noscript><p title="</noscript><img src=x onerror=window.jnbPwned=1>"></noscript>',
}


@pytest.mark.parametrize("html", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_hostile_html_keeps_nothing_a_browser_could_act_on(html):
    clean = filter_bundle({"text/html": html})["text/html"]
    assert not ACTIVE.search(clean), clean
    assert sanitize_html(clean) == clean  # the notebook side's second pass changes nothing


def test_only_allowed_mime_types_pass_and_the_rest_is_named():
    out = filter_bundle({
        "text/plain": "42",
        "application/javascript": "window.jnbPwned = 1",
        "application/vnd.jupyter.widget-view+json": {"model_id": "x"},
        "image/svg+xml": "<svg onload='x'/>",
        "text/html; charset=utf-8": "<script>1</script>",
        "TEXT/HTML": "<script>1</script>",
    })
    assert set(out) == {"text/plain"}
    note = out["text/plain"].split("\n", 1)[1]
    assert note.startswith(NOTE)
    for mime in ("application/javascript", "application/vnd.jupyter.widget-view+json", "image/svg+xml",
                 "text/html; charset=utf-8", "TEXT/HTML"):
        assert mime in note


def test_a_forged_image_type_is_dropped():
    html_as_png = base64.b64encode(b"<html><script>window.jnbPwned=1</script></html>").decode()
    svg_as_gif = base64.b64encode(b"<svg onload='1'/>").decode()
    out = filter_bundle({"image/png": html_as_png, "image/gif": svg_as_gif, "image/jpeg": "not base64 !!"})
    assert set(out) == {"text/plain"}
    assert "image/png (not a PNG image)" in out["text/plain"] and "image/jpeg (not a JPEG image)" in out["text/plain"]


def test_markdown_with_raw_html_and_latex_travel_as_plain_text():
    md = "# title\n<img src=x onerror=window.jnbPwned=1>"
    assert filter_bundle({"text/markdown": md}) == {"text/plain": md}
    assert filter_bundle({"text/latex": r"$\href{javascript:1}{x}$", "text/plain": "x"}) == {"text/plain": "x"}


def test_values_that_are_not_text_and_bundles_that_are_not_dicts_are_refused():
    assert filter_bundle({"text/html": {"nested": 1}})["text/plain"].startswith(NOTE)
    assert filter_bundle(["text/html"])["text/plain"].startswith(NOTE)
    assert filter_bundle({"text/plain": ["a", "b"]}) == {"text/plain": "ab"}


def test_filtering_twice_changes_nothing():
    once = filter_bundle({"text/plain": "x", "application/javascript": "1", "text/html": PAYLOADS["script"]})
    assert filter_bundle(once) == once


def test_links_and_text_formatting_stay():
    html = ('<p><b>bold</b> <i>it</i> <code>code</code> <a href="https://example.org/x">link</a></p>'
            '<ul><li>one</li></ul><pre>pre</pre>')
    clean = sanitize_html(html)
    for kept in ("<b>bold</b>", "<i>it</i>", "<code>code</code>", 'href="https://example.org/x"', "<li>one</li>",
                 "<pre>pre</pre>"):
        assert kept in clean
    assert 'rel="noopener noreferrer nofollow"' in clean
    assert "href" not in sanitize_html('<a href="/files/secret">relative</a>')


def test_a_pandas_table_comes_through_intact():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"city": ["Oslo", "Lima"], "temp": [3.5, 19.0]}, index=["a", "b"])
    html = df._repr_html_()
    clean = filter_bundle({"text/html": html, "text/plain": repr(df)})["text/html"]
    assert '<table border="1" class="dataframe">' in clean
    for cell in ("<th>city</th>", "<th>temp</th>", "<td>Oslo</td>", "<td>19.0</td>", "<th>b</th>"):
        assert cell in clean
    assert 'style="text-align:right"' in clean  # pandas' header alignment, normalised
    assert clean.count("<tr") == html.count("<tr") and clean.count("<td") == html.count("<td")


def test_a_matplotlib_png_comes_through_byte_for_byte():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 3, 2])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    png = base64.b64encode(buf.getvalue()).decode()
    assert filter_bundle({"image/png": png, "text/plain": "<Figure>"}) == {"image/png": png, "text/plain": "<Figure>"}
    wrapped = "\n".join(png[i:i + 76] for i in range(0, len(png), 76))   # base64 with line breaks
    assert filter_bundle({"image/png": wrapped})["image/png"] == png
