"""Keyword extraction (seed 004): TF-IDF and TextRank mixed by ``alpha``, for Chinese and English.

Scores
    For each text, candidate words are scored twice and each score is divided by its maximum in that
    text (so both lie in [0, 1]): **TF-IDF** (term frequency among the text's candidates x IDF) and
    **TextRank** (weighted PageRank, damping 0.85, over a graph linking candidates that occur within
    ``window`` tokens of each other). The keyword score is ``alpha * tfidf + (1 - alpha) * textrank``:
    ``alpha=1`` is pure TF-IDF, ``alpha=0`` pure TextRank. User-dictionary boosts multiply the score;
    if a boost pushes the maximum above 1, the text's scores are divided by that maximum (order kept).
    Ties are broken by first occurrence, then by the word.

IDF
    With at least ``min_corpus_docs`` (10) documents -- the ``texts`` of one call plus any document
    frequencies passed in (``doc_freq``, what :class:`KeywordModel` stores on ``fit``) -- IDF is the
    corpus' own smoothed ``ln((1 + N) / (1 + df)) + 1``. With fewer documents, Chinese words use jieba's
    bundled IDF table (offline, shipped with jieba) and English words an IDF of 1 (pure TF).

Tokens and candidates
    ``lang="auto"`` picks ``zh`` when at least 20 % of a text's letters are CJK, else ``en``.
    Chinese: jieba's segmentation (a private tokenizer, no global state changed); candidates are words
    of 2+ characters (or Latin words of 2+ letters) that are not stopwords or numbers. English: a
    simple word regex; candidates are words of 2+ letters that are not stopwords or numbers, compared
    in lower case (the reported word is the surface form of the first occurrence).

User dictionary
    ``userdict`` is a mapping ``word -> boost``, an iterable of words (boost 1.0), or a path (``str``
    or ``Path``) to a UTF-8 file with one ``word`` or ``word<TAB>boost`` per line. Dictionary words
    (multi-word phrases too) are matched first, longest first (case-insensitively and at word
    boundaries for Latin text), and kept whole as one token; they are always candidates, even when
    they are one character long or a stopword, and their score is multiplied by the boost.

Output
    :func:`extract_keywords` returns, per text, up to ``top_k`` :class:`Keyword` items. A Keyword *is*
    a ``(word, score)`` tuple and also carries ``start``/``end`` (character offsets of the first
    occurrence, end exclusive) and ``occurrences`` (all of them).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from labelpilot.data.bio import is_cjk, jieba_tokenizer
from labelpilot.errors import InputError
from labelpilot.files import file_format, read_rows

log = logging.getLogger(__name__)

UserDict = Mapping[str, float] | Iterable[str] | str | Path | None

EN_STOPWORDS = frozenset(
    """a about above across after afterwards again against all almost alone along already also although
    always am among amongst an and another any anyhow anyone anything anyway anywhere are around as at
    back be became because become becomes been before beforehand behind being below beside besides
    between beyond both but by can cannot could did do does doing done down during each eg either else
    elsewhere enough etc even ever every everyone everything everywhere except few for former formerly
    from further get gets got had has have having he hence her here hereafter hereby herein hers herself
    him himself his how however i ie if in indeed into is it its itself just least less made make many
    may me meanwhile might mine more moreover most mostly much must my myself namely neither never
    nevertheless next no nobody none noone nor not nothing now nowhere of off often on once one only onto
    or other others otherwise our ours ourselves out over own per perhaps please put rather re really
    said same say says see seem seemed seeming seems several she should since so some somehow someone
    something sometime sometimes somewhere still such than that the their theirs them themselves then
    thence there thereafter thereby therefore therein thereupon these they this those though through
    throughout thru thus to together too toward towards under until up upon us use used using very via
    was we well were what whatever when whence whenever where whereafter whereas whereby wherein
    whereupon wherever whether which while whither who whoever whole whom whose why will with within
    without would yet you your yours yourself yourselves also can't don't doesn't didn't isn't wasn't
    aren't won't it's i'm i've we're they're that's there's let's new like""".split()  # noqa: SIM905
)

ZH_STOPWORDS = frozenset(
    """的 了 和 是 就 都 而 及 与 着 或 一个 没有 我们 你们 他们 她们 它们 我 你 他 她 它 这 那 这个 那个
    这些 那些 这样 那样 这里 那里 这种 那种 什么 怎么 怎样 为什么 如何 哪里 哪些 因为 所以 但是 但 可是 然而
    而且 并且 如果 虽然 即使 还是 还有 或者 以及 以后 以前 之后 之前 之间 其中 其他 其它 可以 能够 可能
    应该 需要 已经 正在 曾经 将要 不是 没有 不会 不能 不要 自己 大家 一些 一样 一直 一起 一下 一种 一定
    非常 十分 特别 比较 更加 最 很 太 也 又 再 还 只 才 就是 只是 还是 不过 而是 对于 关于 根据 通过
    进行 由于 为了 以及 等等 等 之 其 此 该 各 每 某 个 们 来 去 在 从 向 往 到 被 把 让 给 对 为 以
    于 上 下 中 里 外 前 后 时 时候 时间 现在 今天 目前 当前 表示 认为 指出 称 说 说道 问题 方面 情况
    有 有些 有的 没 不 也是 都是 就会 会 要 能 得 地 吗 呢 吧 啊 呀 哦 嗯 之一 不少 很多 许多 所有 一切
    其实 当然 于是 然后 接着 最后 首先 其次 另外 此外 总之 同时 例如 比如 这么 那么 多少 几 多 少""".split()  # noqa: SIM905
)

_CJK_SHARE = 0.2
_EN_WORD = re.compile(r"[^\W\d_](?:[^\W_]|['’\-](?=[^\W_]))*|\d+(?:[.,]\d+)*")
_LETTER = re.compile(r"[^\W\d_]")


class Keyword(tuple):  # a tuple subclass with attributes: (word, score) unpacking keeps working
    """A ``(word, score)`` pair that also knows where the word occurs in its text."""

    start: int
    end: int
    occurrences: tuple[tuple[int, int], ...]

    def __new__(cls, word: str, score: float, occurrences: Sequence[tuple[int, int]] = ()) -> Keyword:
        obj = super().__new__(cls, (word, score))
        occ = tuple(occurrences)
        obj.occurrences = occ
        obj.start, obj.end = occ[0] if occ else (-1, -1)
        return obj

    @property
    def word(self) -> str:
        return self[0]

    @property
    def score(self) -> float:
        return self[1]

    def to_dict(self) -> dict[str, Any]:
        return {"word": self[0], "score": round(self[1], 6), "start": self.start, "end": self.end}


# ------------------------------------------------------------------------------ user dictionary


def load_userdict(userdict: UserDict) -> dict[str, float]:
    """Normalise the accepted user-dictionary forms to ``{word: boost}``."""
    if userdict is None:
        return {}
    if isinstance(userdict, str | Path):
        path = Path(userdict)
        if not path.is_file():
            raise InputError(f"user dictionary file {path} not found", field="userdict")
        out: dict[str, float] = {}
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            word, _, boost = line.partition("\t")
            try:
                out[word.strip()] = float(boost) if boost.strip() else 1.0
            except ValueError as exc:
                raise InputError(f"{path}:{lineno}: boost {boost!r} is not a number", field="userdict") from exc
        return {w: b for w, b in out.items() if w}
    if isinstance(userdict, Mapping):
        return {str(w).strip(): float(b) for w, b in userdict.items() if str(w).strip()}
    return {str(w).strip(): 1.0 for w in userdict if str(w).strip()}


@lru_cache(maxsize=32)
def _userdict_regex(words: tuple[str, ...]) -> re.Pattern[str] | None:
    if not words:
        return None
    parts = []
    for w in sorted(words, key=lambda x: (-len(x), x)):
        p = re.escape(w)
        if re.match(r"\w", w[0]) and not is_cjk(w[0]):
            p = r"(?<![^\W_])" + p
        if re.match(r"\w", w[-1]) and not is_cjk(w[-1]):
            p = p + r"(?![^\W_])"
        parts.append(p)
    return re.compile("|".join(parts), re.IGNORECASE)


# ------------------------------------------------------------------------------------ analysis


def detect_lang(text: str) -> str:
    """``"zh"`` when at least 20 % of the letters are CJK, else ``"en"``."""
    letters = _LETTER.findall(text)
    if not letters:
        return "en"
    cjk = sum(1 for ch in letters if is_cjk(ch))
    return "zh" if cjk / len(letters) >= _CJK_SHARE else "en"


def _segments(text: str, lang: str) -> Iterable[tuple[int, int]]:
    if lang == "zh":
        for _, s, e in jieba_tokenizer().tokenize(text):
            yield s, e
    else:
        for m in _EN_WORD.finditer(text):
            yield m.span()


def analyse(text: str, lang: str, udict: Mapping[str, float]) -> list[tuple[str, int, int, bool]]:
    """Tokens of ``text`` as ``(key, start, end, is_candidate)``; user-dictionary words kept whole."""
    lower_dict = {w.lower(): w for w in udict}
    rx = _userdict_regex(tuple(sorted(udict)))
    pieces: list[tuple[int, int, bool]] = []  # (start, end, is_userdict)
    pos = 0
    if rx is not None:
        for m in rx.finditer(text):
            if m.start() > pos:
                pieces.append((pos, m.start(), False))
            pieces.append((m.start(), m.end(), True))
            pos = m.end()
    if pos < len(text):
        pieces.append((pos, len(text), False))
    out: list[tuple[str, int, int, bool]] = []
    for ps, pe, is_user in pieces:
        if is_user:
            surface = text[ps:pe]
            out.append((lower_dict.get(surface.lower(), surface), ps, pe, True))
            continue
        chunk = text[ps:pe]
        for s, e in _segments(chunk, lang):
            word = chunk[s:e]
            if not word.strip():
                continue
            key = word.lower()
            out.append((key, ps + s, ps + e, _is_candidate(word, key, lang)))
    return out


def _is_candidate(word: str, key: str, lang: str) -> bool:
    if not _LETTER.search(word):
        return False  # numbers, punctuation, emoji
    if lang == "zh" and is_cjk(word[0]):
        return len(word) >= 2 and word not in ZH_STOPWORDS
    return len(word) >= 2 and key not in EN_STOPWORDS and key not in ZH_STOPWORDS


@lru_cache(maxsize=1)
def jieba_idf() -> tuple[dict[str, float], float]:
    """jieba's bundled IDF table (word -> idf) and its median, read once from the installed package."""
    import jieba

    path = Path(jieba.__file__).parent / "analyse" / "idf.txt"
    table: dict[str, float] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            word, _, val = line.rstrip("\n").rpartition(" ")
            if word:
                table[word] = float(val)
    median = float(np.median(list(table.values()))) if table else 1.0
    return table, median


def textrank(
    tokens: Sequence[tuple[str, int, int, bool]], *, window: int = 5, damping: float = 0.85, iters: int = 100
) -> dict[str, float]:
    """Weighted PageRank over co-occurrence (within ``window`` tokens) of candidate words."""
    keys = sorted({k for k, _, _, c in tokens if c})
    if not keys:
        return {}
    idx = {k: i for i, k in enumerate(keys)}
    n = len(keys)
    weights: Counter[tuple[int, int]] = Counter()
    for i, (k, _, _, c) in enumerate(tokens):
        if not c:
            continue
        for j in range(i + 1, min(i + window, len(tokens))):
            k2, _, _, c2 = tokens[j]
            if c2 and k2 != k:
                a, b = idx[k], idx[k2]
                weights[(a, b)] += 1
                weights[(b, a)] += 1
    if not weights:
        return dict.fromkeys(keys, 1.0)
    from scipy.sparse import csr_matrix

    rows, cols = zip(*weights.keys(), strict=True)
    mat = csr_matrix((np.fromiter(weights.values(), float), (rows, cols)), shape=(n, n))
    out_w = np.asarray(mat.sum(axis=1)).ravel()
    out_w[out_w == 0] = 1.0
    trans = (mat.multiply(1.0 / out_w[:, None])).T.tocsr()  # column-stochastic
    score = np.ones(n)
    for _ in range(iters):
        new = (1 - damping) + damping * (trans @ score)
        if np.abs(new - score).max() < 1e-8:
            score = new
            break
        score = new
    return {k: float(score[i]) for k, i in idx.items()}


def _norm(scores: Mapping[str, float]) -> dict[str, float]:
    top = max(scores.values(), default=0.0)
    return {k: (v / top if top > 0 else 0.0) for k, v in scores.items()}


def extract_keywords(
    texts: Sequence[str] | str,
    *,
    alpha: float = 0.5,
    top_k: int = 5,
    userdict: UserDict = None,
    lang: str = "auto",
    window: int = 5,
    doc_freq: Mapping[str, int] | None = None,
    n_docs: int = 0,
    min_corpus_docs: int = 10,
) -> list[list[Keyword]]:
    """Keywords of each text: a list of :class:`Keyword` (``(word, score)`` tuples), best first.

    ``alpha`` weights TF-IDF against TextRank (1 = TF-IDF only, 0 = TextRank only). ``doc_freq`` /
    ``n_docs`` add document frequencies from an earlier corpus (see the module doc for the IDF rule).
    """
    if isinstance(texts, str):
        texts = [texts]
    if not 0.0 <= float(alpha) <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}", field="alpha")
    if int(top_k) < 1:
        raise InputError(f"top_k must be >= 1, got {top_k}", field="top_k")
    if lang not in ("auto", "zh", "en"):
        raise InputError(f"lang must be auto, zh or en, got {lang!r}", field="lang")
    udict = load_userdict(userdict)
    docs = []
    df: Counter[str] = Counter(doc_freq or {})
    for text in texts:
        text = text if isinstance(text, str) else ""
        lg = detect_lang(text) if lang == "auto" else lang
        toks = analyse(text, lg, udict)
        docs.append((text, lg, toks))
        df.update({k for k, _, _, c in toks if c})
    total_docs = len(texts) + int(n_docs)
    use_corpus = total_docs >= min_corpus_docs

    results: list[list[Keyword]] = []
    for text, lg, toks in docs:
        cands = [(k, s, e) for k, s, e, c in toks if c]
        if not cands:
            results.append([])
            continue
        tf = Counter(k for k, _, _ in cands)
        occ: dict[str, list[tuple[int, int]]] = {}
        for k, s, e in cands:
            occ.setdefault(k, []).append((s, e))
        tfidf: dict[str, float] = {}
        if use_corpus:
            for k, c in tf.items():
                tfidf[k] = c / len(cands) * (math.log((1 + total_docs) / (1 + df[k])) + 1.0)
        elif lg == "zh":
            table, median = jieba_idf()
            for k, c in tf.items():
                tfidf[k] = c / len(cands) * table.get(k, median)
        else:
            tfidf = {k: c / len(cands) for k, c in tf.items()}
        tr = textrank(toks, window=window)
        tfidf, tr = _norm(tfidf), _norm(tr)
        lower_boost = {w.lower(): b for w, b in udict.items()}
        mixed = {
            k: (alpha * tfidf.get(k, 0.0) + (1 - alpha) * tr.get(k, 0.0)) * lower_boost.get(k.lower(), 1.0) for k in tf
        }
        top = max(mixed.values())
        if top > 1.0:
            mixed = {k: v / top for k, v in mixed.items()}
        first = {k: v[0][0] for k, v in occ.items()}
        best = sorted(mixed, key=lambda k: (-mixed[k], first[k], k))[: int(top_k)]
        results.append([Keyword(text[occ[k][0][0] : occ[k][0][1]], float(mixed[k]), occ[k]) for k in best])
    return results


# ------------------------------------------------------------------------------------- files


def _read_rows(path: Path, column: str) -> list[dict[str, Any]]:
    """Every row of a CSV/TSV, JSONL (``.json`` too: one object a line) or text file (one text a line, also
    for unknown endings), through :func:`labelpilot.files.read_rows`; a malformed row, or one without the
    text ``column``, stops with an error naming its line."""
    name = path.name.lower()
    fmt = "jsonl" if name.endswith((".json", ".json.gz")) else None
    try:
        fmt = fmt or file_format(path)
    except InputError:
        fmt = "txt"

    def need_column(header: list[str]) -> None:
        if column not in header:
            raise InputError(f"{path}: no column {column!r} (columns: {header})", field="column")

    rows: list[dict[str, Any]] = []
    for row in read_rows(path, fmt, on_header=need_column):
        if row.error:
            raise InputError(f"{path}:{row.line}: {row.error}", field="line")
        if fmt == "txt":
            rows.append({column: row.values["text"]})
            continue
        if fmt == "jsonl" and not isinstance(row.values.get(column), str):
            raise InputError(f"{path}:{row.line}: no string field {column!r}", field="column")
        rows.append(row.values)
    return rows


def keywords_file(
    input_path: str | Path,
    output_path: str | Path,
    column: str = "text",
    *,
    alpha: float = 0.5,
    top_k: int = 5,
    userdict: UserDict = None,
    lang: str = "auto",
    append_cols: Sequence[str] = ("id",),
) -> int:
    """Extract keywords for every row of a CSV/TSV (header row), JSONL, or TXT (one text per line)
    file; write JSON lines ``{"row": i, <append_cols>..., "keywords": [{"word", "score", "start",
    "end"}, ...]}``. All rows form the IDF corpus. Returns the number of rows written."""
    src = Path(input_path)
    if not src.is_file():
        raise InputError(f"input file {src} not found", field="input_path")
    rows = _read_rows(src, column)
    texts = [str(r.get(column) or "") for r in rows]
    found = extract_keywords(texts, alpha=alpha, top_k=top_k, userdict=userdict, lang=lang)
    with Path(output_path).open("w", encoding="utf-8") as out:
        for i, (row, kws) in enumerate(zip(rows, found, strict=True)):
            rec: dict[str, Any] = {"row": i}
            for col in append_cols:
                if col in row:
                    rec[col] = row[col]
            rec["keywords"] = [k.to_dict() for k in kws]
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return len(rows)
