"""Small HTML builders shared by the report's sections. Every string from data goes through `text` or `attr`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape


def text(value: object) -> str:
    """Data as HTML text: titles are user content and may hold markup."""
    return escape(str(value), quote=False)


def attr(value: object) -> str:
    """Data as an HTML attribute value (quotes escaped too)."""
    return escape(str(value), quote=True)


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}">\n<h2>{text(title)}</h2>\n{body}\n</section>\n'


def empty(message: str) -> str:
    """What a section says when it has no data, in place of its content."""
    return f'<p class="empty">{text(message)}</p>'


def image(uri: str | None, alt: str, css: str = "") -> str:
    """An inline image, or a placeholder when the bytes were not a readable image."""
    if uri is None:
        return f'<div class="{" ".join(("noimage", css)).strip()}">image unreadable</div>'
    return f'<img{_class(css)} src="{uri}" alt="{attr(alt)}">'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], css: str = "", numeric: Sequence[int] = ()) -> str:
    """A table of already-escaped cells; `numeric` columns are right-aligned."""
    head = _cells("th", headers, numeric)
    body = "".join(f"<tr>{_cells('td', row, numeric)}</tr>\n" for row in rows)
    return f"<table{_class(css)}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def _cells(tag: str, cells: Sequence[str], numeric: Sequence[int]) -> str:
    return "".join(
        f'<{tag} class="num">{c}</{tag}>' if i in numeric else f"<{tag}>{c}</{tag}>" for i, c in enumerate(cells)
    )


def _class(css: str) -> str:
    return f' class="{css}"' if css else ""
