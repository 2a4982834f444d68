"""From an LLM's free-text answer to the titles it recommends, in order, each with the year written beside it.

Answers come as numbered or bulleted lists, markdown (emphasis, headings, tables), "Title (Year) Genres: ...",
"Title (Year) - genres", or titles inside prose. Reasoning (<think>...</think>) is dropped first, and so are lines
that echo the prompt (the watching history) or sit under a "your history" heading. When the answer has list items
(bullets, numbers, table rows, "Title: ..." lines), only those count, one title per item: a title mentioned in an
item's description, or in the prose around the list, is a comparison, not a recommendation. Without items, titles are
read from the prose: "Title (Year)" patterns, then emphasized or quoted titles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dualrec.config import GENRES
from dualrec.llm.reasoning import split_reasoning

_MARKER = re.compile(r"^(?:[-*•+·–]|\(?\d{1,3}[.):]|#\d{1,3}[.:)]?|[a-z][.)])\s+")
_HEADING = re.compile(r"^#{1,6}\s*")
_EMPHASIS = re.compile(r"(?<![\w*])(\*{1,3}|_{1,3})(?=\S)(.+?)(?<=\S)\1(?![\w*])")  # not the stars of "M*A*S*H"
_LINK = re.compile(r"\[([^\]]+)\]\((?:[^()\s]|\([^()\s]*\))*\)")  # [Jaws](https://.../Jaws_(film))
_INLINE_NUMBER = re.compile(r"[;,]?\s+(?P<number>\d{1,3})[.)]\s+(?=\S)")  # "1. Se7en (1995) 2. Heat (1995)"
_EMPHASIZED_MARKER = re.compile(r"^(\*{1,3}|_{1,3})(\d{1,3}[.)])\1\s*")  # "**1.** Toy Story"
_QUOTED = re.compile(r"[\"“”„]([^\"“”„]{2,80})[\"“”„]")
_MARKED_START = re.compile(r"^(?:(\*{1,3}|_{1,3})(?P<emphasized>.+?)\1|[\"“”„](?P<quoted>[^\"“”„]{2,80})[\"“”„])")
_ABBREVIATION = re.compile(r"^(?:[A-Z][a-z]?\.|(?:[A-Z]\.)+)$")  # "Dr.", "St.", "L.A.", "E.T." inside a title
_YEAR = r"(?:18[89]\d|19\d\d|20[0-3]\d)"
_TITLE_AND_YEAR = re.compile(
    rf"^(?P<title>.+?)\s*(?:\((?P<a>[^()]*?\b{_YEAR}\b[^()]*)\)|\[(?P<b>[^\[\]]*?\b{_YEAR}\b[^\[\]]*)\]|[,–—-]\s*(?P<c>{_YEAR})\b)"
)
_PLACEHOLDER = re.compile(r"\((?:year|yyyy)\)", re.I)  # "1. Title (Year) Genres: ..." copied from a list-k prompt
_PLACEHOLDER_TITLES = {"title", "movie title", "movie", "film"}  # "Title (1999)": the template, filled in halfway
_YEAR_PAREN = re.compile(rf"\((?:[^()]*?\b)?(?P<year>{_YEAR})\b[^()]*\)")  # "(1999)", "(Disney, 1999)"
_YEAR_AFTER = re.compile(rf"\s*[\"”*_]*\s*{_YEAR_PAREN.pattern}")  # '** (1999)' right after an emphasized title
_TITLE_LABEL = re.compile(r"^(?:movie\s+title|title|movie|film|recommendation|pick|suggestion|option)\s*#?\d*\s*[:–—-]\s+", re.I)
_OTHER_LABEL = re.compile(
    r"^(?:genres?|year|release(?:d| year| date)?|why|reason(?:ing)?|description|summary|plot|director|starring|cast|"
    r"rating|runtime|note|because)\s*:",
    re.I,
)
_YEAR_LABEL = re.compile(rf"^(?:year|release(?:d| year| date)?)\s*:\s*.*?(?P<year>{_YEAR})", re.I)
_SEPARATOR = re.compile(r"\s+[-–—]\s+|:\s+|\s+\(")
_HISTORY_WORDS = re.compile(r"\b(?:history|watched|have seen|you've seen|previously|already seen)\b", re.I)
_ANSWER_WORDS = re.compile(r"\b(?:recommend\w*|suggest\w*|you might|you may|you'll|next|picks?|enjoy)\b", re.I)
# Lower-case words inside titles ("Beauty and the Beast"), and words that start a sentence before a title ("Try X").
_SMALL_WORDS = set("a an the and or of in on at to for with from by de la le du vs & is it not but into up".split())
_LEAD_WORDS = set(
    "i you try watch consider check also then finally next lastly definitely maybe perhaps see if since both like "
    "recommend recommended enjoy as while including such plus first second third movie film title".split()
)
_GENRE_WORDS = {g.casefold() for g in GENRES} | {
    "science fiction",
    "sci fi",
    "scifi",
    "family",
    "romantic comedy",
    "biography",
    "history",
    "sport",
    "music",
    "kids",
    "children",
}
_WORD = re.compile(r"[^\W_][\w'’.&-]*")
MAX_TITLE_WORDS = 15


@dataclass(frozen=True)
class ParsedTitle:
    """One recommendation read from an answer."""

    text: str  # the recommendation as written (its item or span, markup removed)
    title: str
    year: int | None


def parse_answer(answer: str, prompt: str | None = None) -> list[ParsedTitle]:
    """The titles an answer recommends, in order, without duplicates; lines echoing `prompt` are ignored."""
    lines = answer_lines(split_reasoning(answer)[1], prompt)
    found = item_titles(lines) or prose_titles([text for _, text in lines])
    unique: dict[tuple[str, int | None], ParsedTitle] = {}
    for parsed in found:
        unique.setdefault((parsed.title.casefold(), parsed.year), parsed)
    return list(unique.values())


def clean(text: str) -> str:
    """A line without markdown links, emphasis markers and surrounding space."""
    return _EMPHASIS.sub(r"\2", _LINK.sub(r"\1", text)).replace("`", "").strip()


def comparable(line: str) -> str:
    """A line reduced for echo detection: no list marker, markup, case or spacing differences."""
    text = clean(_HEADING.sub("", line.strip()))
    return " ".join(_MARKER.sub("", text).casefold().split())


def answer_lines(answer: str, prompt: str | None) -> list[tuple[bool, str]]:
    """(is a list item, text without its marker) for each answer line, minus prompt echoes and history sections."""
    echoed = {comparable(line) for line in (prompt or "").splitlines()} - {""}
    lines: list[tuple[bool, str]] = []
    in_history = False
    for raw in answer.splitlines():
        if not raw.strip() or comparable(raw) in echoed or set(raw.strip()) <= set("-|:= *#_") or _PLACEHOLDER.search(raw):
            continue
        cells = table_cells(raw)
        line = _EMPHASIZED_MARKER.sub(r"\2 ", _HEADING.sub("", raw.strip()))
        marker = _MARKER.match(line)
        text = line[marker.end() :] if marker else line
        if cells is None and is_heading(clean(text), bool(marker), raw.lstrip().startswith("#")):
            in_history = bool(_HISTORY_WORDS.search(text)) and not _ANSWER_WORDS.search(text)
            continue
        if in_history and (marker or cells):
            continue
        in_history = False
        if cells is not None:
            lines.append((True, table_item(cells)))
        elif number := re.match(r"\(?(\d+)", marker[0] if marker else ""):
            lines += [(True, item) for item in run_together(text, int(number[1]))]
        else:
            lines.append((bool(marker), text))
    return lines


def run_together(text: str, number: int) -> list[str]:
    """The items of numbered item `number` that continues with the next numbers on the same line:
    "Se7en (1995) 2. Heat (1995)" -> ["Se7en (1995)", "Heat (1995)"]; "Die Spinnen, 1. Teil" stays whole."""
    items, start = [], 0
    for match in _INLINE_NUMBER.finditer(text):
        if int(match["number"]) == number + 1:
            items.append(text[start : match.start()])
            start, number = match.end(), number + 1
    return items + [text[start:]]


def is_heading(text: str, listed: bool, markdown_heading: bool) -> bool:
    """A line that introduces what follows ("Here are my recommendations:", "## Your history"), not an item
    ("1. The Iron Giant:", "### 1. Tarzan (1999)")."""
    if _YEAR_PAREN.search(text) or listed and looks_like_title(text.rstrip(":")):
        return False
    return text.endswith(":") or markdown_heading


def table_cells(line: str) -> list[str] | None:
    """The cells of a markdown table row, or None for any other line."""
    line = line.strip()
    if not (line.startswith("|") and line.endswith("|") and line.count("|") >= 3):
        return None
    return [clean(cell) for cell in line[1:-1].split("|")]


def table_item(cells: list[str]) -> str:
    """A table row as "Title (Year)": the first cell that is neither a number nor genres, and the row's year."""
    year = next((cell for cell in cells if re.fullmatch(_YEAR, cell)), None)
    words = [cell for cell in cells if cell and not re.fullmatch(r"\d+\.?", cell) and not is_genre_list(cell)]
    title = words[0] if words else ""
    return f"{title} ({year})" if year else title


def item_titles(lines: list[tuple[bool, str]]) -> list[ParsedTitle]:
    """One title per list item or "Title: ..." line; a "Year: 1999" line completes a title without a year."""
    found: list[ParsedTitle] = []
    for listed, text in lines:
        year_label = _YEAR_LABEL.match(text)
        if year_label and found and found[-1].year is None:
            found[-1] = ParsedTitle(found[-1].text, found[-1].title, int(year_label["year"]))
        elif (listed or _TITLE_LABEL.match(text)) and (parsed := read_item(text)):
            found.append(parsed)
    return found


def read_item(text: str) -> ParsedTitle | None:
    """The title (and year) a list item starts with."""
    text = _TITLE_LABEL.sub("", text.strip())
    marked = _MARKED_START.match(text)
    text = clean(text)
    if not text or _OTHER_LABEL.match(text) or is_genre_list(text):
        return None
    with_year = _TITLE_AND_YEAR.match(text)
    if with_year:
        title = strip_title(with_year["title"])
        year = int(re.search(_YEAR, with_year["a"] or with_year["b"] or with_year["c"])[0])
        return ParsedTitle(text, title, year) if has_content(title) and len(title.split()) <= MAX_TITLE_WORDS else None
    title = strip_title(clean(marked["emphasized"] or marked["quoted"])) if marked else title_head(text)
    return ParsedTitle(text, title, None) if has_content(title) and looks_like_title(title) else None


def title_head(text: str) -> str:
    """The part of an item before its description: 'Tarzan - a classic' -> 'Tarzan', while 'Star Wars: The Empire
    Strikes Back - a classic' keeps its title-cased subtitle."""
    separators = list(_SEPARATOR.finditer(text))
    for separator, following in zip(separators, separators[1:] + [None]):
        segment = text[separator.end() : following.start() if following else len(text)]
        if is_genre_list(segment.rstrip(")")) or not looks_like_title(segment):
            return strip_title(text[: separator.start()])
    return strip_title(text)


def strip_title(title: str) -> str:
    """A title without surrounding quotes, markup, trailing punctuation or a parenthesis left open."""
    title = re.sub(r"\s*\([^)]*$", "", title).strip().strip('"“”„*_`').strip()
    return title.rstrip(",;:-–— ").strip().strip('"“”„').strip()


def is_genre_list(text: str) -> bool:
    """'Animation, Children's, Comedy' or 'Action/Sci-Fi': only genre names."""
    parts = [p.strip().casefold() for p in re.split(r"[,/|]|\band\b", text.strip().rstrip(".")) if p.strip()]
    return bool(parts) and all(p in _GENRE_WORDS for p in parts)


def looks_like_title(text: str) -> bool:
    """Short and capitalized like a title, not a sentence: most words that are not small words start upper case
    (alternate titles in parentheses aside: "The Emperor and the Assassin (Jing ke ci qin wang)")."""
    words = _WORD.findall(re.sub(r"\([^()]*\)", "", text))
    if not words or len(words) > MAX_TITLE_WORDS or (text.rstrip().endswith((".", "?")) and len(words) > 6):
        return False
    if not (words[0][0].isupper() or words[0][0].isdigit()):
        return False
    content = [w for w in words if w.casefold() not in _SMALL_WORDS]
    capitalized = sum(1 for w in content if w[0].isupper() or w[0].isdigit())
    return bool(content) and capitalized >= 0.75 * len(content)


def has_content(title: str) -> bool:
    """More than small words or a placeholder: "The" (a cut-off answer) and "Title" (the template) are no titles."""
    return title.casefold() not in _PLACEHOLDER_TITLES and any(w.casefold() not in _SMALL_WORDS for w in _WORD.findall(title))


def prose_titles(texts: list[str]) -> list[ParsedTitle]:
    """Titles inside sentences: each "Title (Year)", then emphasized or quoted titles, in the order they appear."""
    found: list[tuple[int, int, ParsedTitle]] = []
    for number, raw in enumerate(texts):
        for match in _YEAR_PAREN.finditer(raw):
            title = title_before(raw[: match.start()])
            if title:
                found.append((number, match.start(), ParsedTitle(f"{title} {match[0]}", title, int(match["year"]))))
        for match in list(_EMPHASIS.finditer(raw)) + list(_QUOTED.finditer(raw)):
            title = strip_title(match[2] if match.re is _EMPHASIS else match[1])
            if looks_like_title(title) and not title.endswith(":") and not _YEAR_PAREN.search(title):
                found.append((number, match.start(), ParsedTitle(title, title, year_after(raw[match.end() :]))))
    return [parsed for _, _, parsed in sorted(found, key=lambda entry: entry[:2])]


def title_before(text: str) -> str | None:
    """The run of title-cased words that ends a piece of prose: 'I suggest The Iron Giant' -> 'The Iron Giant'."""
    words = text.rstrip().split(" ")
    start = len(words)
    while start > 0:
        word = words[start - 1].strip('"“”*_')
        ends_sentence = word.endswith((")", ".", "!", "?", ";")) and not _ABBREVIATION.match(word)
        if not word or ends_sentence or not (word[0].isupper() or word[0].isdigit() or word.casefold() in _SMALL_WORDS):
            break
        start -= 1
    kept = words[start:]
    while kept and kept[0].strip('"“”*_,:;').casefold() in (_SMALL_WORDS | _LEAD_WORDS) - {"the", "a", "an"}:
        kept = kept[1:]
    title = strip_title(" ".join(kept))
    return title if title and looks_like_title(title) else None


def year_after(text: str) -> int | None:
    """The year in a parenthesis right after a title: '** (1999)'."""
    match = _YEAR_AFTER.match(text)
    return int(match["year"]) if match else None
