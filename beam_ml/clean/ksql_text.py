"""ksqlDB spellings around a SELECT: a CREATE STREAM|TABLE ... AS prefix, EMIT CHANGES, a trailing ';'.

    strip_ksql("CREATE STREAM clean AS SELECT V1 FROM events EMIT CHANGES;")   # -> "SELECT V1 FROM events"

Comments are blanked and quoted text is respected; clauses that have no
per-batch meaning (WINDOW, PARTITION BY, WITHIN) are refused with a hint.
"""
from __future__ import annotations

import re

from beam_ml.errors import UserError

__all__ = ["strip_ksql"]

_CREATE_PREFIX = re.compile(r"\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:STREAM|TABLE)\s+(?:IF\s+NOT\s+EXISTS\s+)?"
                            r"(?:\"[^\"]*\"|`[^`]*`|[\w.]+)\s*", re.IGNORECASE)
_EMIT_SUFFIX = re.compile(r"\s*(?:EMIT\s+(?:CHANGES|FINAL)\s*)?;?\s*$", re.IGNORECASE)
_KSQL_ONLY = re.compile(r"\bWINDOW\s+(TUMBLING|HOPPING|SESSION)\b|\bPARTITION\s+BY\b|\bWITHIN\b\s*\(?\s*\d",
                        re.IGNORECASE)



def _strip_comments(sql: str) -> str:
    """Blanks out -- and /* */ comments outside quotes (same length, so offsets hold)."""
    out = list(sql)
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out[i:j] = " " * (j - i)
            i = j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out[i:j] = " " * (j - i)
            i = j
        else:
            i += 1
    return "".join(out)


def _skip_parens(sql: str, i: int) -> int:
    """Index just past the parenthesised group starting at sql[i] == '(' (quotes respected)."""
    depth, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            j = sql.find(c, i + 1)
            while j >= 0 and j + 1 < n and sql[j + 1] == c:
                j = sql.find(c, j + 2)
            i = n if j < 0 else j + 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return n


def _outside_quotes(sql: str) -> str:
    """sql with quoted text blanked, for keyword searches."""
    out, i, n = [], 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            j = i + 1
            while j < n and not (sql[j] == c and not (j + 1 < n and sql[j + 1] == c)):
                j += 2 if sql[j] == c else 1
            out.append(c + " " * (min(j, n) - i - 1) + (c if j < n else ""))
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


_DIGIT_ALIAS = re.compile(r"\bAS\s+(\d\w*)\b", re.IGNORECASE)


def _quote_digit_aliases(sql: str) -> str:
    """`AS 1R` (ksqlDB allows an alias starting with a digit) -> `AS "1R"`, upper-cased as ksqlDB names it."""
    bare = _outside_quotes(sql)
    for m in reversed(list(_DIGIT_ALIAS.finditer(bare))):
        sql = sql[:m.start(1)] + '"' + m.group(1).upper() + '"' + sql[m.end(1):]
    return sql


def strip_ksql(sql: str, flag: str = "--sql") -> str:
    """The SELECT inside a ksqlDB statement: no CREATE ... AS prefix, EMIT CHANGES or ';'.

    Raises:
      UserError: empty text, or a ksqlDB clause with no per-batch meaning.
    """
    text = _strip_comments(sql)
    m = _CREATE_PREFIX.match(text)
    if m:
        i = m.end()
        if re.match(r"WITH\s*\(", text[i:], re.IGNORECASE):
            i = _skip_parens(text, text.index("(", i))
        rest = re.match(r"\s*AS\s+", text[i:], re.IGNORECASE)
        if not rest:
            raise UserError(f"{flag}: expected AS SELECT ... after {text[:i].strip()!r}")
        text = text[i + rest.end():]
    text = _EMIT_SUFFIX.sub("", text).strip()
    text = _quote_digit_aliases(text)
    if not text:
        raise UserError(f"{flag}: the statement is empty")
    k = _KSQL_ONLY.search(_outside_quotes(text))
    if k:
        clause = " ".join(k.group(0).split()).upper()
        hint = ("windowed aggregations are a WindowedAggregation step" if clause.startswith("WINDOW")
                else "drop the clause")
        raise UserError(f"{flag}: {clause} is not supported here: a cleaning statement runs per batch of rows, "
                        f"with no windows or repartitioning ({hint})")
    return text
