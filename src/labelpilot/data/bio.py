"""Token-tag files (CoNLL / BIO) <-> :class:`Example` with character spans, and the tokenizer for tagging.

Pure functions, no global state. Offsets are Python ``str`` indices (code points), end exclusive.

Tag schemes
-----------
``iob2`` (alias ``bio``): ``B-X`` starts every entity, ``I-X`` continues it.
``iob1``: ``I-X`` starts an entity; ``B-X`` only when it directly follows another ``X`` entity
(the original CoNLL-2003 files). ``bioes`` (alias ``iobes``): ``B/I/E`` plus ``S`` for one-token
entities. ``bmes``: ``B/M/E/S`` (common for Chinese). ``bilou``: ``B/I/L/U``.

Reading needs no scheme: one lenient decoder understands all of them. ``B`` opens an entity;
``I``/``M`` continue an open entity of the same type and otherwise open one (so IOB1 and broken IOB2
both decode the way seqeval's default mode does); ``E``/``L`` close the open entity of the same type
(or form a one-token entity); ``S``/``U`` are one-token entities; ``O`` closes. Tags are ``P-TYPE``
or ``P_TYPE`` (the prefix is split off at the first ``-``/``_``).

Text from tokens
----------------
``sep="auto"`` (default): a sentence whose tokens are all one character (Chinese char-level files
such as Weibo NER / MSRA) is joined without separator; otherwise tokens are joined with a space,
except next to a CJK character or full-width punctuation (so a word-segmented Chinese file gets no
spaces). ``sep=" "`` or
``sep=""`` force one behaviour. The token offsets are kept in ``Example.meta["tokens"]`` so the
example can be written back token for token.

Tokens from text (:func:`tokenize`)
-----------------------------------
CJK characters (Han, kana, Hangul syllables) are one token each; runs of letters/digits (any script,
with inner ``' ’ - . &``, abbreviations like ``U.S.``, numbers like ``1,000.5``) are one token; every
other non-space code point (punctuation, full-width punctuation, emoji) is its own token; whitespace is
never part of a token. When a span boundary falls inside a token, :func:`refine_tokens` cuts the token
there, so annotations never lose characters.

Overlaps
--------
A flat tag sequence cannot hold nested or overlapping spans. :func:`resolve_overlaps` keeps the
longest span (ties: the earlier one, then the first given) and drops every span that overlaps a kept
one; the caller decides whether to log or count the dropped ones.
"""

from __future__ import annotations

import bisect
import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from labelpilot.data.types import Example, Span, Target
from labelpilot.errors import InputError

log = logging.getLogger(__name__)

Offsets = list[tuple[int, int]]
Tokenizer = Callable[[str], Offsets]

SCHEMES = ("iob2", "iob1", "bioes", "bmes", "bilou")
_ALIASES = {"bio": "iob2", "iob": "iob2", "iobes": "bioes", "bieos": "bioes"}

# --------------------------------------------------------------------------------------- tokenizer

_CJK_CLASS = (
    "\u3040-\u30ff"  # hiragana, katakana
    "\u3400-\u4dbf"  # CJK ext A
    "\u4e00-\u9fff"  # CJK unified
    "\uac00-\ud7af"  # Hangul syllables
    "\uf900-\ufaff"  # CJK compatibility
    "\U00020000-\U0003134f"  # CJK ext B..G
)
_MARKS = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
_ALNUM = rf"(?:[^\W_{_CJK_CLASS}][{_MARKS}]*)"
_TOKEN_RE = re.compile(
    rf"[{_CJK_CLASS}]"  # one CJK character
    rf"|(?:[^\W\d_{_CJK_CLASS}]\.){{2,}}"  # abbreviations: U.S.  e.g.
    rf"|\d+(?:[.,:/]\d+)+"  # numbers with separators: 1,000.5  12:30  3/4
    rf"|{_ALNUM}+(?:['’\-.&]{_ALNUM}+)*"  # words (any script except CJK), digits
    r"|\S"  # anything else: punctuation, symbols, emoji, one code point each
)
_CJK_RE = re.compile(rf"[{_CJK_CLASS}]")
_NO_SPACE_RE = re.compile(rf"[{_CJK_CLASS}\u3000-\u303f\uff00-\uffef]")  # + CJK / full-width punctuation


def is_cjk(ch: str) -> bool:
    """True for a Han / kana / Hangul character."""
    return bool(_CJK_RE.fullmatch(ch))


def has_cjk(text: str) -> bool:
    """True when ``text`` contains a Han / kana / Hangul character."""
    return _CJK_RE.search(text) is not None


def tokenize(text: str) -> Offsets:
    """Character offsets ``(start, end)`` of the tagging tokens of ``text`` (see module doc)."""
    return [m.span() for m in _TOKEN_RE.finditer(text)]


_JIEBA: Any = None
_JIEBA_LOCK = threading.Lock()


def jieba_tokenizer() -> Any:
    """The process's one jieba tokenizer (tagging, keywords, the gazetteer, text-linear's word n-grams): a
    private, lazily initialised ``jieba.Tokenizer``, so words that other code adds to jieba's global
    tokenizer (``jieba.add_word``) do not leak into any model, and vice versa; its startup log is
    silenced."""
    global _JIEBA
    if _JIEBA is None:
        with _JIEBA_LOCK:
            if _JIEBA is None:
                import jieba  # heavy (its dictionary): only once Chinese text is segmented

                jieba.setLogLevel(logging.WARNING)
                logging.getLogger("jieba").setLevel(logging.WARNING)
                tok = jieba.Tokenizer()
                tok.initialize()
                _JIEBA = tok
    return _JIEBA


def refine_tokens(offsets: Sequence[tuple[int, int]], cuts: Iterable[int]) -> Offsets:
    """Split tokens at the positions ``cuts`` that fall strictly inside a token."""
    cut_set = sorted(set(cuts))
    if not cut_set:
        return list(offsets)
    out: Offsets = []
    for s, e in offsets:
        lo = bisect.bisect_right(cut_set, s)
        hi = bisect.bisect_left(cut_set, e)
        if lo >= hi:
            out.append((s, e))
            continue
        prev = s
        for c in cut_set[lo:hi]:
            out.append((prev, c))
            prev = c
        out.append((prev, e))
    return out


def resolve_overlaps(spans: Iterable[Span]) -> tuple[list[Span], list[Span]]:
    """Keep the longest of overlapping spans; return ``(kept sorted by start, dropped)``.

    Exact duplicates (same start, end, label) are dropped silently (not returned as dropped).
    """
    seen: set[tuple[int, int, str]] = set()
    uniq: list[Span] = []
    for sp in spans:
        key = (sp.start, sp.end, sp.label)
        if key not in seen:
            seen.add(key)
            uniq.append(sp)
    order = sorted(range(len(uniq)), key=lambda i: (-(uniq[i].end - uniq[i].start), uniq[i].start, i))
    kept: list[Span] = []
    dropped: list[Span] = []
    for i in order:
        sp = uniq[i]
        if any(sp.start < k.end and k.start < sp.end for k in kept):
            dropped.append(sp)
        else:
            kept.append(sp)
    kept.sort(key=lambda s: s.start)
    return kept, dropped


# ---------------------------------------------------------------------------------- tags <-> spans


def normalize_scheme(scheme: str) -> str:
    s = _ALIASES.get(scheme.lower(), scheme.lower())
    if s not in SCHEMES:
        raise InputError(f"unknown tag scheme {scheme!r}; known: {', '.join(SCHEMES)}", field="scheme")
    return s


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER" -> ("B", "PER")``; ``"O" -> ("O", "")``. Raises InputError for other shapes."""
    if tag == "O" or tag == "o":
        return "O", ""
    if len(tag) >= 3 and tag[1] in "-_" and tag[0].upper() in "BIMESLU":
        return tag[0].upper(), tag[2:]
    raise InputError(f"cannot read tag {tag!r} (expected O or B-/I-/M-/E-/S-/L-/U-<type>)", field="tag")


def tags_to_spans(offsets: Sequence[tuple[int, int]], tags: Sequence[str], text: str | None = None) -> list[Span]:
    """Decode a tag sequence of any scheme into character spans (lenient, see module doc)."""
    if len(offsets) != len(tags):
        raise InputError(f"{len(offsets)} tokens but {len(tags)} tags", field="tags")
    spans: list[Span] = []
    cur_type: str | None = None
    cur_start = 0
    cur_end = 0

    def close() -> None:
        nonlocal cur_type
        if cur_type is not None:
            spans.append(Span(cur_start, cur_end, cur_type, text=text[cur_start:cur_end] if text else None))
        cur_type = None

    for (s, e), tag in zip(offsets, tags, strict=True):
        prefix, typ = split_tag(tag)
        if prefix == "O":
            close()
        elif prefix == "B":
            close()
            cur_type, cur_start, cur_end = typ, s, e
        elif prefix in ("I", "M", "E", "L"):  # inside or last: extend a span of the type, else start one
            if cur_type == typ:
                cur_end = e
            else:
                close()
                cur_type, cur_start, cur_end = typ, s, e
            if prefix in ("E", "L"):
                close()
        else:  # S, U
            close()
            cur_type, cur_start, cur_end = typ, s, e
            close()
    close()
    return spans


def spans_to_tags(offsets: Sequence[tuple[int, int]], spans: Iterable[Span], scheme: str = "iob2") -> list[str]:
    """Encode non-overlapping spans aligned to ``offsets`` as tags of ``scheme``.

    Raises InputError for a span whose boundaries are not token boundaries, that covers no token,
    or that overlaps another (use :func:`refine_tokens` and :func:`resolve_overlaps` first).
    """
    scheme = normalize_scheme(scheme)
    starts = {s: i for i, (s, _) in enumerate(offsets)}
    ends = {e: i for i, (_, e) in enumerate(offsets)}
    tags = ["O"] * len(offsets)
    owner = [-1] * len(offsets)
    for k, sp in enumerate(sorted(spans, key=lambda x: x.start)):
        i, j = starts.get(sp.start), ends.get(sp.end)
        if i is None or j is None or j < i:
            raise InputError(f"span [{sp.start}, {sp.end}) {sp.label!r} is not aligned to tokens", field="spans")
        if any(o >= 0 for o in owner[i : j + 1]):
            raise InputError(f"span [{sp.start}, {sp.end}) {sp.label!r} overlaps another span", field="spans")
        n = j - i + 1
        for t in range(i, j + 1):
            owner[t] = k
        if scheme in ("iob2", "iob1"):
            first = "B"
            if scheme == "iob1":
                adjacent = i > 0 and owner[i - 1] >= 0 and split_tag(tags[i - 1])[1] == sp.label
                first = "B" if adjacent else "I"
            tags[i] = f"{first}-{sp.label}"
            for t in range(i + 1, j + 1):
                tags[t] = f"I-{sp.label}"
        else:
            b, m, e_, s_ = {"bioes": "BIES", "bmes": "BMES", "bilou": "BILU"}[scheme]
            if n == 1:
                tags[i] = f"{s_}-{sp.label}"
            else:
                tags[i] = f"{b}-{sp.label}"
                for t in range(i + 1, j):
                    tags[t] = f"{m}-{sp.label}"
                tags[j] = f"{e_}-{sp.label}"
    return tags


def convert_tags(tags: Sequence[str], to: str = "iob2") -> list[str]:
    """Rewrite a tag sequence of any scheme into ``to`` (e.g. IOB1 -> IOB2), entity for entity."""
    offsets = [(i, i + 1) for i in range(len(tags))]
    return spans_to_tags(offsets, tags_to_spans(offsets, tags), to)


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """CoNLL-2003's IOB1 -> IOB2 (BIO)."""
    return convert_tags(tags, "iob2")


# ----------------------------------------------------------------------------- sentences <-> text


def join_tokens(tokens: Sequence[str], sep: str = "auto") -> tuple[str, Offsets]:
    """Join tokens into a text; return the text and each token's offsets."""
    if sep == "auto":
        char_level = all(len(t) == 1 for t in tokens)
    parts: list[str] = []
    offsets: Offsets = []
    pos = 0
    for k, tok in enumerate(tokens):
        if k:
            if sep == "auto":
                glue = (
                    ""
                    if char_level or _NO_SPACE_RE.fullmatch(tokens[k - 1][-1:]) or _NO_SPACE_RE.fullmatch(tok[:1])
                    else " "
                )
            else:
                glue = sep
            parts.append(glue)
            pos += len(glue)
        parts.append(tok)
        offsets.append((pos, pos + len(tok)))
        pos += len(tok)
    return "".join(parts), offsets


def tokens_to_example(
    tokens: Sequence[str], tags: Sequence[str], *, sep: str = "auto", meta: dict | None = None
) -> Example:
    """One sentence of tokens and tags (any scheme) -> Example with character spans."""
    text, offsets = join_tokens(tokens, sep)
    spans = tags_to_spans(offsets, tags, text)
    m = dict(meta or {})
    m["tokens"] = offsets
    return Example(text=text, target=Target(spans=tuple(spans)), meta=m)


def example_tokens(example: Example, tokenizer: Tokenizer | None = None) -> Offsets:
    """The token offsets to write ``example`` with: ``meta["tokens"]`` when valid, else ``tokenizer``."""
    text = example.text
    given = example.meta.get("tokens") if example.meta else None
    if given:
        try:
            offs = [(int(s), int(e)) for s, e in given]
        except (TypeError, ValueError):
            offs = []
        if offs and all(0 <= s < e <= len(text) for s, e in offs):
            return offs
    return (tokenizer or tokenize)(text)


def example_to_tags(
    example: Example, *, scheme: str = "iob2", tokenizer: Tokenizer | None = None
) -> tuple[list[str], list[str]]:
    """Example -> (token strings, tags). Tokens are cut at span boundaries; whitespace-only tokens
    are dropped; overlapping spans are resolved with :func:`resolve_overlaps` (dropped ones logged)."""
    text = example.text
    spans = list(example.target.spans) if example.target else []
    good = [s for s in spans if 0 <= s.start < s.end <= len(text)]
    if len(good) < len(spans):
        log.warning("example %s: %d span(s) outside the text left out", example.id, len(spans) - len(good))
    kept, dropped = resolve_overlaps(good)
    if dropped:
        log.warning("example %s: %d overlapping span(s) left out", example.id, len(dropped))
    offs = refine_tokens(example_tokens(example, tokenizer), [c for s in kept for c in (s.start, s.end)])
    offs = [(s, e) for s, e in offs if text[s:e].strip()]
    # a span may start/end on whitespace: shrink it to the tokens it covers
    aligned: list[Span] = []
    for sp in kept:
        inside = [(s, e) for s, e in offs if s >= sp.start and e <= sp.end]
        if inside:
            aligned.append(Span(inside[0][0], inside[-1][1], sp.label))
    tags = spans_to_tags(offs, aligned, scheme)
    return [text[s:e] for s, e in offs], tags


# ------------------------------------------------------------------------------------ CoNLL files

_SEG_SUFFIX = re.compile(r"^(.+?)(\d+)$", re.S)


def strip_seg_index(token: str) -> str:
    """Weibo NER tokens carry their word-segmentation position: ``科0`` -> ``科``, ``Z10`` -> ``Z``."""
    m = _SEG_SUFFIX.match(token)
    return m.group(1) if m else token


def parse_conll(
    text: str,
    *,
    token_col: int = 0,
    tag_col: int = -1,
    sep: str = "auto",
    token_transform: Callable[[str], str] | None = None,
    label_map: Callable[[str], str | None] | None = None,
    source: str | None = None,
) -> list[Example]:
    """Parse CoNLL-style text: one ``token ... tag`` line per token, blank line between sentences.

    Columns are split on TAB when the line has one, else on whitespace. ``-DOCSTART-`` lines (anywhere,
    also at the end of a file) end the sentence and are skipped. Any tag scheme is read (IOB1 included);
    the spans come out the same. ``label_map`` renames entity types (None drops the entity).
    Raises InputError with the line number for a line without token and tag.
    """
    examples: list[Example] = []
    tokens: list[str] = []
    tags: list[str] = []
    first_line = 0
    doc = 0

    def flush() -> None:
        if tokens:
            meta: dict = {"doc": doc, "line": first_line}
            if source:
                meta["source"] = source
            ex = tokens_to_example(tokens, tags, sep=sep, meta=meta)
            if label_map is not None and ex.target is not None:
                spans = []
                for sp in ex.target.spans:
                    new = label_map(sp.label)
                    if new is not None:
                        spans.append(Span(sp.start, sp.end, new, text=sp.text))
                ex.target = Target(spans=tuple(spans))
            ex.id = f"{source or 'conll'}:{first_line}"
            examples.append(ex)
        tokens.clear()
        tags.clear()

    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            flush()
            continue
        if line.startswith("-DOCSTART-"):
            flush()
            doc += 1
            continue
        cols = line.split("\t") if "\t" in line else line.split()
        if len(cols) < 2:
            raise InputError(f"line {lineno}: expected '<token> ... <tag>', got {line[:80]!r}", field="line")
        tok = cols[token_col]
        if token_transform is not None:
            tok = token_transform(tok)
        try:
            split_tag(cols[tag_col].strip())
        except InputError as exc:
            raise InputError(f"line {lineno}: {exc.message}", field="tag") from exc
        if not tokens:
            first_line = lineno
        tokens.append(tok)
        tags.append(cols[tag_col].strip())
    flush()
    return examples


def read_conll(path: str | Path, **kwargs: object) -> list[Example]:
    """Read a CoNLL/BIO file (UTF-8); keyword arguments as :func:`parse_conll`."""
    p = Path(path)
    return parse_conll(p.read_text(encoding="utf-8"), source=p.name, **kwargs)  # type: ignore[arg-type]


def read_weibo(path: str | Path) -> list[Example]:
    """Weibo NER (``<char><segpos>\\t<tag>``): char-level, segmentation index stripped."""
    return read_conll(path, token_transform=strip_seg_index, sep="")


def format_conll(
    examples: Iterable[Example],
    *,
    scheme: str = "iob2",
    tokenizer: Tokenizer | None = None,
    column_sep: str = "\t",
) -> str:
    """Examples -> CoNLL text (``token<column_sep>tag``, blank line after each sentence)."""
    out: list[str] = []
    for ex in examples:
        toks, tags = example_to_tags(ex, scheme=scheme, tokenizer=tokenizer)
        for tok, tag in zip(toks, tags, strict=True):
            out.append(f"{tok}{column_sep}{tag}")
        out.append("")
    return "\n".join(out) + ("\n" if out else "")
