"""The review app's HTML: plain pages with their CSS and JavaScript inline (no build step,
nothing fetched from the network). Every value from the data is HTML-escaped."""

from __future__ import annotations

import html
import json
import math
from urllib.parse import quote

from faceclean.review.index import KINDS

PER_PAGE = 20
TITLES = {
    "removals": "Removals",
    "borderline": "Borderline kept",
    "merges": "Merged groups",
    "duplicates": "Near-duplicates",
    "overlap": "Overlap with evaluation",
}
HELP = {
    "removals": "k keep · d drop · u undo · j/↓ next · ↑ previous · n/b next/previous page",
    "borderline": "k keep · d drop · u undo · j/↓ next · ↑ previous · n/b next/previous page",
    "merges": "a accept · s split · r reject the weakest link · u undo · j/↓ next · ↑ previous",
    "duplicates": "a accept (copies: one per class) · s split (different photos) · u undo · "
    "j/↓ next · ↑ prev · click 'drop file' to drop one image",
    "overlap": "a accept (one person: stays excluded) · s split (two people: keep the training "
    "class) · u undo · j/↓ next · ↑ previous",
}
STYLE = """<style>
body{font-family:sans-serif;margin:0;background:#f4f4f4;color:#222}
header{background:#234;color:#fff;padding:8px 16px;position:sticky;top:0;z-index:2}
header a{color:#cde;margin-right:14px}header a.on{color:#fff;font-weight:bold}
.help{font-size:12px;color:#cde}main{padding:10px 16px}
.item{background:#fff;border:2px solid #ddd;border-radius:6px;margin:8px 0;padding:8px;
display:flex;gap:14px;align-items:center;flex-wrap:wrap}
.item.cur{border-color:#e8a400;box-shadow:0 0 0 3px #ffd36e}
.item.keep{background:#eef8ee}.item.drop{background:#fbeaea}
.item.accept{background:#eef8ee}.item.split{background:#fbeaea}
.strip{font-size:11px;width:240px}.strip img{width:56px;height:56px;margin:1px}
.strip.own img{outline:2px solid #228833}.strip.neg img{outline:2px solid #4477aa}
.face{text-align:center;font-size:11px;max-width:170px;word-break:break-all}
.face img{width:112px;height:112px;outline:3px solid #cc3311}
.borderline .face img{outline-color:#4477aa}
.scores{font-size:13px;font-family:monospace;min-width:190px}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;background:#999;color:#fff}
.badge.keep,.badge.accept{background:#228833}.badge.drop,.badge.split{background:#cc3311}
.card{border:1px solid #4477aa;border-radius:4px;padding:3px;font-size:11px;max-width:190px}
.card img{width:56px;height:56px;margin:1px}
.links{font-size:12px}.links .rej{text-decoration:line-through;color:#cc3311}
.card.rej{opacity:.4;border-color:#cc3311}
button{margin:2px}nav.pages{margin:10px 0}table.ov td{padding:4px 12px}
</style>"""


def _esc(v) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _num(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"


def _img(path: str, src: str = "") -> str:
    extra = f"&amp;src={src}" if src else ""
    return (
        f"<img loading='lazy' src='/thumb?p={quote(path, safe='')}{extra}' "
        f"title='{_esc(path)}' alt='{_esc(path)}'>"
    )


def _header(kind: str | None, counts: dict, decided: dict) -> str:
    links = [f"<a href='/' class='{'on' if kind is None else ''}'>Overview</a>"]
    for k in KINDS:
        on = "on" if k == kind else ""
        links.append(
            f"<a href='/q/{k}' class='{on}'>{TITLES[k]} (<span id='n-{k}'>"
            f"{decided.get(k, 0)}</span>/{counts[k]})</a>"
        )
    help_line = f"<div class='help'>{HELP[kind]}</div>" if kind else ""
    return f"<header>{''.join(links)}{help_line}</header>"


def page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{_esc(title)}</title>{STYLE}</head><body>{body}</body></html>"
    )


def overview(clean_dir: str, summary: dict, counts: dict, decided: dict) -> str:
    rows = "".join(
        f"<tr><td><a href='/q/{k}'>{TITLES[k]}</a></td><td>{counts[k]}</td>"
        f"<td>{decided.get(k, 0)} decided</td></tr>"
        for k in KINDS
    )
    facts = "".join(
        f"<tr><td>{_esc(k)}</td><td>{_esc(summary.get(k))}</td></tr>"
        for k in ("samples", "kept", "dropped", "tau_intra", "tau_inter", "merged_groups")
    )
    body = (
        _header(None, counts, decided) + f"<main><h2>faceclean review: {_esc(clean_dir)}</h2>"
        "<p>Each queue is sorted by doubt, the most doubtful first. Every decision is saved "
        "into review.parquet the moment it is made; <code>faceclean clean --review "
        "review.parquet</code> applies it.</p>"
        f"<table class='ov'>{rows}</table><h3>The clean</h3><table class='ov'>{facts}</table>"
        "</main>"
    )
    return page("faceclean review", body)


def _face_item(r: dict, kind: str, own: list[str], neg: list[str], decision) -> str:
    own = [p for p in own if p != r["path"]][:4]
    return (
        f"<div class='item {kind} {decision or ''}' data-pos='{r['position']}' "
        f"data-decision='{decision or ''}'>"
        f"<div class='strip own'>{''.join(_img(p) for p in own)}<div>class: "
        f"{_esc(r['identity'])} (label {r['label']})</div></div>"
        f"<div class='face'>{_img(r['path'])}<div class='fname'>{_esc(r['path'])}</div></div>"
        f"<div class='strip neg'>{''.join(_img(p) for p in neg[:4])}<div>hardest negative: "
        f"{_esc(r['negative_identity'])} (label {r['hardest_negative']})</div></div>"
        f"<div class='scores'>#{r['position'] + 1}<br>D = {_num(r['discriminability'])}<br>"
        f"cos_pos = {_num(r['cos_pos'])}<br>cos_neg = {_num(r['cos_neg'])}<br>"
        f"norm = {_num(r['norm'], 2)}<br><span class='badge {decision or ''}'>"
        f"{decision or 'undecided'}</span><br>"
        "<button data-d='keep'>keep (k)</button><button data-d='drop'>drop (d)</button></div>"
        "</div>"
    )


def _merge_item(r: dict, faces: dict, decision, rejected: set) -> str:
    cards = "".join(
        f"<div class='card'><div>{_esc(name)} (label {lab})</div>"
        + "".join(_img(p) for p in faces.get(lab, [])[:3])
        + "</div>"
        for lab, name in zip(r["labels"], r["identities"], strict=True)
    )
    names = dict(zip(r["labels"], r["identities"], strict=True))
    order = sorted(range(len(r["link_a"])), key=lambda j: r["link_cosine"][j])
    links = "".join(
        f"<div class='{'rej' if j in rejected else ''}' data-link='{j}'>"
        f"{_esc(names.get(r['link_a'][j]))} – {_esc(names.get(r['link_b'][j]))}: "
        f"{_num(r['link_cosine'][j])} <button data-d='reject_link' data-link='{j}' "
        f"data-on='rejected' data-off='reject link'>"
        f"{'rejected' if j in rejected else 'reject link'}</button></div>"
        for j in order
    )
    return (
        f"<div class='item merges {decision or ''}' data-pos='{r['position']}' "
        f"data-decision='{decision or ''}' data-weakest='{order[0] if order else ''}'>"
        f"<div class='row' style='display:flex;gap:8px;flex-wrap:wrap'>{cards}</div>"
        f"<div class='links'>#{r['position'] + 1}, weakest link margin "
        f"{_num(r['doubt'])}<br>{links}</div><div class='scores'><span class='badge "
        f"{decision or ''}'>{decision or 'undecided'}</span><br>"
        "<button data-d='accept'>accept (a)</button><button data-d='split'>split (s)</button>"
        "</div></div>"
    )


def _duplicate_item(r: dict, decision, dropped: set) -> str:
    """A duplicate group; each file can also be dropped on its own (which class is right,
    when a photo is filed under two people)."""
    cards = "".join(
        f"<div class='card {'rej' if j in dropped else ''}' data-link='{j}'>{_img(p)}<div>"
        f"{_esc(name)} (label {lab})<br>cos {_num(c)}<br><span class='fname'>{_esc(p)}"
        f"</span></div><button data-d='drop' data-link='{j}' data-on='dropped' "
        f"data-off='drop file'>{'dropped' if j in dropped else 'drop file'}</button></div>"
        for j, (p, lab, name, c) in enumerate(
            zip(r["files"], r["labels"], r["identities"], r["cosines"], strict=True)
        )
    )
    where = "within one class" if r["within_class"] else "ACROSS CLASSES"
    return (
        f"<div class='item duplicates {decision or ''}' data-pos='{r['position']}' "
        f"data-decision='{decision or ''}'><div style='display:flex;gap:8px;flex-wrap:wrap'>"
        f"{cards}</div><div class='scores'>#{r['position'] + 1} {where}<br>"
        f"<span class='badge {decision or ''}'>{decision or 'undecided'}</span><br>"
        "<button data-d='accept'>accept (a)</button><button data-d='split'>split (s)</button>"
        "</div></div>"
    )


def _overlap_item(r: dict, decision) -> str:
    def card(title: str, faces: list[str], src: str) -> str:
        imgs = "".join(_img(p, src) for p in faces)
        return f"<div class='card'><div>{_esc(title)}</div>{imgs}</div>"

    train = card(f"train: {r['train_identity']} (label {r['train_label']})", r["train_faces"], "")
    ev = card(f"eval: {r['eval_identity']} (label {r['eval_label']})", r["eval_faces"], "eval")
    return (
        f"<div class='item overlap {decision or ''}' data-pos='{r['position']}' "
        f"data-decision='{decision or ''}'>{train}<div class='scores'>cosine "
        f"{_num(r['cosine'])}<br>margin {_num(r['doubt'])}</div>{ev}<div class='scores'>"
        f"#{r['position'] + 1}<br><span class='badge {decision or ''}'>"
        f"{decision or 'undecided'}</span><br><button data-d='accept'>accept (a)</button>"
        "<button data-d='split'>split (s)</button></div></div>"
    )


def queue_page(
    kind: str,
    rows: list[dict],
    page_no: int,
    counts: dict,
    decided: dict,
    token: str,
    faces: dict,
    decision_of,
    rejected_of,
) -> str:
    """One page of a queue. ``decision_of(row)`` is the decision recorded for an item
    (or None), ``rejected_of(row)`` the set of its rejected links (a merged group) or
    dropped files (a duplicate group), by index."""
    pages = max(1, -(-counts[kind] // PER_PAGE))
    items = []
    for r in rows:
        if kind in ("removals", "borderline"):
            own = faces.get(r["label"], [])
            neg = faces.get(r["hardest_negative"], [])
            items.append(_face_item(r, kind, own, neg, decision_of(r)))
        elif kind == "merges":
            items.append(_merge_item(r, faces, decision_of(r), rejected_of(r)))
        elif kind == "duplicates":
            items.append(_duplicate_item(r, decision_of(r), rejected_of(r)))
        else:
            items.append(_overlap_item(r, decision_of(r)))
    nav = (
        f"<nav class='pages'>page {page_no + 1} of {pages} "
        + (f"<a href='/q/{kind}?page={page_no - 1}'>previous (b)</a> " if page_no > 0 else "")
        + (f"<a href='/q/{kind}?page={page_no + 1}'>next (n)</a>" if page_no + 1 < pages else "")
        + "</nav>"
    )
    empty = "" if items else "<p>Nothing to review here.</p>"
    state = json.dumps({"token": token, "kind": kind, "page": page_no, "pages": pages})
    body = (
        _header(kind, counts, decided)
        + f"<main>{nav}{empty}{''.join(items)}{nav}</main>"
        + f"<script>const STATE = {state};</script><script>{SCRIPT}</script>"
    )
    return page(f"{TITLES[kind]} – faceclean review", body)


SCRIPT = r"""
const items = [...document.querySelectorAll('.item')];
const undo = JSON.parse(sessionStorage.getItem('undo') || '[]');
let cur = Math.max(0, items.findIndex(e => !e.dataset.decision));
function focusItem(i) {
  if (!items.length) return;
  cur = Math.max(0, Math.min(items.length - 1, i));
  items.forEach((e, j) => e.classList.toggle('cur', j === cur));
  items[cur].scrollIntoView({block: 'center'});
}
function go(page) { location.href = '/q/' + STATE.kind + '?page=' + page; }
function next() {
  if (cur + 1 < items.length) focusItem(cur + 1);
  else if (STATE.page + 1 < STATE.pages) go(STATE.page + 1);
}
async function post(pos, decision, link) {
  const r = await fetch('/decide', {method: 'POST', headers: {
      'Content-Type': 'application/json', 'X-Review-Token': STATE.token},
    body: JSON.stringify({kind: STATE.kind, position: pos, decision: decision, link: link})});
  if (!r.ok) { alert('not saved: ' + await r.text()); return null; }
  return r.json();
}
function show(el, res) {
  if (res.link !== undefined && res.link !== null) {
    const row = el.querySelector("div[data-link='" + res.link + "']");
    row.classList.toggle('rej', !!res.decision);
    const b = row.querySelector('button');
    b.textContent = res.decision ? b.dataset.on : b.dataset.off;
    return;
  }
  const n = document.getElementById('n-' + STATE.kind);
  n.textContent = +n.textContent + (!!res.decision - !!el.dataset.decision);
  el.dataset.decision = res.decision || '';
  el.classList.remove('keep', 'drop', 'accept', 'split');
  if (res.decision) el.classList.add(res.decision);
  const b = el.querySelector('.badge');
  b.className = 'badge ' + (res.decision || ''); b.textContent = res.decision || 'undecided';
}
async function decide(i, decision, link) {
  const el = items[i]; if (!el) return;
  const pos = +el.dataset.pos;
  let before;
  if (link !== undefined && link !== null) {
    const rej = el.querySelector("div[data-link='" + link + "']").classList.contains('rej');
    before = rej ? decision : null;
    if (rej) decision = null;  // a second press on a rejected link or dropped file: back
  } else before = el.dataset.decision || null;
  const res = await post(pos, decision, link);
  if (!res) return;
  show(el, res);
  undo.push({page: STATE.page, pos: pos, i: i, before: before, link: link});
  sessionStorage.setItem('undo', JSON.stringify(undo.slice(-200)));
  if (link === undefined || link === null) next();
}
async function undoLast() {
  const u = undo.pop(); if (!u) return;
  sessionStorage.setItem('undo', JSON.stringify(undo));
  const res = await post(u.pos, u.before, u.link);
  if (!res) return;
  if (u.page !== STATE.page) { go(u.page); return; }
  show(items[u.i], res); focusItem(u.i);
}
items.forEach((el, i) => el.querySelectorAll('button[data-d]').forEach(b =>
  b.addEventListener('click', () => { focusItem(i);
    decide(i, b.dataset.d, b.dataset.link === undefined ? null : +b.dataset.link); })));
document.addEventListener('keydown', e => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const face = STATE.kind === 'removals' || STATE.kind === 'borderline';
  const k = e.key;
  if (face && k === 'k') decide(cur, 'keep');
  else if (face && k === 'd') decide(cur, 'drop');
  else if (!face && k === 'a') decide(cur, 'accept');
  else if (!face && k === 's') decide(cur, 'split');
  else if (STATE.kind === 'merges' && k === 'r' && items[cur].dataset.weakest !== '')
    decide(cur, 'reject_link', +items[cur].dataset.weakest);
  else if (k === 'u') undoLast();
  else if (k === 'j' || k === 'ArrowDown') next();
  else if (k === 'ArrowUp') focusItem(cur - 1);
  else if (k === 'n' && STATE.page + 1 < STATE.pages) go(STATE.page + 1);
  else if (k === 'b' && STATE.page > 0) go(STATE.page - 1);
  else return;
  e.preventDefault();
});
focusItem(cur);
"""
