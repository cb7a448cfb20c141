"""The document as one self-contained HTML page (charts inlined), laid out like the PDF."""
from __future__ import annotations

import base64
import html

from .document import Document, Figure, Section, Table

_CSS = """
@page{size:A4;margin:20mm 15mm 20mm 30mm}
body{font-family:"Liberation Serif","Times New Roman",Times,serif;font-size:13pt;line-height:1.3;color:#000;
     max-width:170mm;margin:1.5em auto;padding:0 1em}
.head{display:grid;grid-template-columns:40% 60%;text-align:center;margin-bottom:1em}
.head p{margin:0}.upper{text-transform:uppercase}.b{font-weight:bold}.i{font-style:italic}
.rule{width:35%;margin:2px auto 6px;border-top:1px solid #000}.rule.wide{width:62%}
.date{font-style:italic;text-align:right;margin-top:.4em}
.kind{text-align:center;font-weight:bold;font-size:14pt;margin:1.2em 0 0}
.subject{text-align:center;font-weight:bold;margin:.2em 8% 0}
.notice{text-align:center;font-style:italic;margin:.5em 0;border:1px solid #000;padding:.3em}
h2{font-size:13pt;font-weight:bold;margin:1em 0 .4em}h3{font-size:13pt;font-weight:bold;font-style:italic;margin:.8em 0 .3em}
p.t{text-align:justify;text-indent:1cm;margin:.3em 0}p.bold{font-weight:bold;margin:.5em 0 .2em}
ul{margin:.2em 0 .4em 1cm;padding:0}li{text-align:justify;margin:.15em 0}
table{border-collapse:collapse;width:100%;font-size:11pt;margin:.2em 0 .4em}th,td{border:1px solid #000;padding:2px 4px;vertical-align:top}
th{font-weight:bold;text-align:center}td{text-align:left}
.cap{text-align:center;font-weight:bold;font-size:12pt;margin:.8em 0 .2em}.note{font-style:italic;font-size:11pt}
figure{margin:.6em 0;text-align:center}figure img{max-width:100%}figcaption{font-weight:bold;font-size:12pt}
.sign{display:grid;grid-template-columns:50% 50%;margin-top:1.5em}.sign .who{text-align:center}
.recv{font-size:11pt}.recv .t{font-weight:bold;font-style:italic;font-size:12pt}
.appendix{break-before:page;margin-top:2em}h2.app{text-align:center}
"""


def _e(s) -> str:
    return html.escape(str(s))


def _blocks(sec: Section, out: list[str]) -> None:
    bullets: list[str] = []

    def flush():
        if bullets:
            out.append("<ul>" + "".join(f"<li>{_e(b)}</li>" for b in bullets) + "</ul>")
            bullets.clear()

    for b in sec.blocks:
        if isinstance(b, tuple) and b[0] == "bullet":
            bullets.append(b[1])
            continue
        flush()
        if isinstance(b, Table):
            out.append(f'<p class="cap">{_e(b.caption)}</p><table><thead><tr>'
                       + "".join(f"<th>{_e(c)}</th>" for c in b.frame.columns) + "</tr></thead><tbody>")
            for row in b.frame.itertuples(index=False):
                out.append("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>")
            out.append("</tbody></table>")
            if b.note:
                out.append(f'<p class="note">{_e(b.note)}</p>')
        elif isinstance(b, Figure):
            data = base64.b64encode(b.png).decode()
            out.append(f'<figure><img alt="{_e(b.caption)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{_e(b.caption)}</figcaption></figure>")
        elif isinstance(b, str) and b.startswith("**"):
            out.append(f'<p class="bold">{_e(b[2:])}</p>')
        elif b:
            out.append(f'<p class="t">{_e(b)}</p>')
    flush()


def to_html(doc: Document) -> bytes:
    h, c = doc.head, doc.closing
    out = [f'<!DOCTYPE html><html lang="{doc.lang}"><head><meta charset="utf-8"><title>{_e(doc.title)}</title>',
           f"<style>{_CSS}</style></head><body>",
           '<div class="head"><div>',
           f'<p class="upper">{_e(h.parent)}</p><p class="upper b">{_e(h.unit)}</p><div class="rule"></div>',
           f"<p>{_e(h.number_line)}</p></div><div>",
           f'<p class="upper b">{_e(h.nation)}</p><p class="b">{_e(h.motto)}</p><div class="rule wide"></div>',
           f'<p class="date">{_e(h.date_line)}</p></div></div>',
           f'<p class="kind">{_e(h.kind)}</p><p class="subject">{_e(h.subject)}</p><div class="rule"></div>']
    if h.notice:
        out.append(f'<p class="notice">{_e(h.notice)}</p>')
    for sec in doc.body:
        out.append(f"<section><h{1 + sec.level}>{_e(sec.title)}</h{1 + sec.level}>")
        _blocks(sec, out)
        out.append("</section>")
    out.append('<div class="sign"><div class="recv">'
               f'<p class="t">{_e(c.recipients_title)}</p>' + "".join(f"<p>{_e(r)}</p>" for r in c.recipients)
               + f'</div><div class="who"><p class="upper b">{_e(c.signer_title)}</p><p>&nbsp;</p><p>&nbsp;</p><p>&nbsp;</p>'
               f'<p class="b">{_e(c.signer_name)}</p></div></div>')
    for sec in doc.appendix:
        cls = ' class="appendix"' if sec.level == 1 else ""
        hcls = ' class="app"' if sec.level == 1 else ""
        out.append(f"<section{cls}><h{1 + sec.level}{hcls}>{_e(sec.title)}</h{1 + sec.level}>")
        _blocks(sec, out)
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out).encode("utf-8")
