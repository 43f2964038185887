"""A strict-enough HTML check for the dashboard's pages: every element closed in order, nothing
loaded from anywhere (no script, no external URL, no font), text and links collected."""

from __future__ import annotations

import re
from html.parser import HTMLParser

VOID = {"meta", "link", "br", "hr", "img", "input", "area", "base", "col", "embed", "source",
        "track", "wbr"}
SVG_VOID_OK = {"line", "polyline", "polygon", "circle", "rect", "path"}  # written as <x/>


class Page(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []
        self.links: list[str] = []
        self.text_parts: list[str] = []
        self.svgs = 0
        self.meta_refresh: str | None = None
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed at end: {self.stack}")

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "svg":
            self.svgs += 1
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag == "meta" and (a.get("http-equiv") or "").lower() == "refresh":
            self.meta_refresh = a.get("content")
        for k, v in attrs:
            if k in ("src", "srcset", "data") or (k == "href" and tag != "a"):
                self.errors.append(f"<{tag} {k}={v!r}> loads something")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in VOID and tag not in SVG_VOID_OK:
            self.errors.append(f"self-closed <{tag}/>")

    def handle_endtag(self, tag):
        if tag in VOID:
            self.errors.append(f"end tag for void <{tag}>")
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            if tag in self.stack:
                while self.stack and self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1] in ("style", "script"):
            return
        self.text_parts.append(data)

    @property
    def text(self) -> str:
        return re.sub(r"\s+", " ", " ".join(self.text_parts))


def check(text: str) -> Page:
    """Parse and assert the page is well formed and self-contained."""
    page = Page(text)
    assert text.startswith("<!doctype html>")
    assert page.errors == [], page.errors
    assert "script" not in page.tags
    assert not re.search(r"@import|url\(|@font-face", text), "CSS loads something"
    assert not [h for h in page.links if re.match(r"(?i)[a-z]+://", h)], page.links
    return page
