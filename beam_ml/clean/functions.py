"""ksqlDB's scalar functions on DuckDB: macros, and rewrites of literal arguments.

Each ksqlDB function a cleaning statement may use maps to a DuckDB macro
(NULL-guarded, vectorised by DuckDB; the MASK family calls the numpy UDF of
`beam_ml.clean.masking`) or to a DuckDB built-in with the same semantics. Statement preparation (`beam_ml.clean.statement`) renames the
calls by name and arity (`FUNCTIONS`), and rewrites the two functions whose
literal argument is itself a little language: the Java date-time pattern of
TIMESTAMPTOSTRING (`java_pattern_parts`) and the JSONPath of
EXTRACTJSONFIELD (`json_pointer`).

    con.execute(MACROS_SQL)                      # once per connection
    SELECT bm_mask_left('Hans', 2)               -- 'Xxns'

Semantics follow ksqlDB's UDF sources and tests (confluentinc/ksql,
ksqldb-engine/.../function/udf): mask defaults X/x/n/-, a NULL mask
character leaves that class unmasked, ROUND rounds halves towards +inf on
the value's decimal representation (BigDecimal.valueOf), SUBSTRING is
1-based with negative positions from the end, TRIM strips every character
<= U+0020 (Java's String.trim), CONCAT skips NULLs.

Known differences, all at the edges: DuckDB counts characters in code points
where Java counts UTF-16 units (LEN, SUBSTRING, MASK_* of characters outside
the BMP); TIMESTAMPTOSTRING without a time zone formats in UTC (ksqlDB uses the
server's zone) and zone names (pattern letter z) are not supported.
"""
from __future__ import annotations

import re
from typing import Optional

from beam_ml.clean.masking import UDF_NAME
from beam_ml.errors import UserError

__all__ = ["MACROS_SQL", "FUNCTIONS", "SUPPORTED_FUNCTIONS", "SAME_NAME", "OPERATORS", "URL_PARTS", "TIME_UNITS",
           "java_parse_format", "java_pattern_parts", "json_pointer"]


def _mask_macros() -> list[str]:
    # The masking itself is beam_ml.clean.masking's vectorised UDF; these give
    # it ksqlDB's names, arities and default mask characters (X, x, n, -).
    out = []
    for name, kind in (("mask", "all"), ("mask_left", "left"), ("mask_right", "right"),
                       ("mask_keep_left", "keep_left"), ("mask_keep_right", "keep_right")):
        n_arg = "" if kind == "all" else ", n"
        n_val = "0" if kind == "all" else "n"
        out.append(f"CREATE OR REPLACE TEMP MACRO bm_{name}(s{n_arg}) AS "
                   f"{UDF_NAME}(s, '{kind}', {n_val}, 'X', 'x', 'n', '-'), "
                   f"(s{n_arg}, u, l, d, o) AS {UDF_NAME}(s, '{kind}', {n_val}, u, l, d, o)")
    return out


# Java's String.trim() strips every character <= U+0020 at both ends.
_JAVA_SPACE = "(" + " || ".join(f"chr({i})" for i in range(0, 33)) + ")"

# ksqlDB ROUND(x, d) rounds BigDecimal.valueOf(x) -- the shortest decimal that
# reads back as x, which is also DuckDB's DOUBLE -> VARCHAR -- half towards
# +inf. That decimal is exact in DECIMAL(38,18) while |x| * 10^d < 1e17; past
# that a double has no digit left to round at that position.
def _round_sql(x: str, d: str) -> str:
    return (f"CASE WHEN {x} IS NULL OR {d} IS NULL THEN NULL "
            f"WHEN NOT isfinite(CAST({x} AS DOUBLE)) THEN CAST({x} AS DOUBLE) "
            f"WHEN {d} >= 0 AND abs(CAST({x} AS DOUBLE)) * power(10, {d}) >= 1e17 THEN CAST({x} AS DOUBLE) "
            f"WHEN {d} >= 0 THEN CAST(floor(CAST(CAST(CAST({x} AS DOUBLE) AS VARCHAR) AS DECIMAL(38, 18)) "
            f"* CAST(power(10, {d}) AS DECIMAL(38, 0)) + 0.5) AS DOUBLE) / power(10, {d}) "
            f"ELSE floor(CAST({x} AS DOUBLE) / power(10, -{d}) + 0.5) * power(10, -{d}) END")

_INTEGER_TYPES = "('TINYINT', 'SMALLINT', 'INTEGER', 'BIGINT', 'UTINYINT', 'USMALLINT', 'UINTEGER', 'HUGEINT')"

# ksqlDB SUBSTRING: a 0-based start from pos (negative counts from the end),
# an end clamped into [start, len].
_SUB_START = "(CASE WHEN p < 0 THEN greatest(length(s) + p, 0) ELSE greatest(least(p - 1, length(s)), 0) END)"

_OTHER_MACROS = [
    # ROUND(x) is Java's Math.round: a BIGINT; integers come back as they are.
    f"CREATE OR REPLACE TEMP MACRO bm_round(x) AS CASE WHEN typeof(x) IN {_INTEGER_TYPES} THEN CAST(x AS BIGINT) "
    f"ELSE CAST({_round_sql('x', '0')} AS BIGINT) END, (x, d) AS {_round_sql('x', 'd')}",
    f"CREATE OR REPLACE TEMP MACRO bm_substring(s, p) AS CASE WHEN s IS NULL OR p IS NULL THEN NULL "
    f"ELSE substr(s, {_SUB_START} + 1) END, "
    f"(s, p, n) AS CASE WHEN s IS NULL OR p IS NULL OR n IS NULL THEN NULL "
    f"ELSE substr(s, {_SUB_START} + 1, greatest(least({_SUB_START} + n, length(s)), {_SUB_START}) - {_SUB_START}) END",
    f"CREATE OR REPLACE TEMP MACRO bm_trim(s) AS trim(s, {_JAVA_SPACE})",
    "CREATE OR REPLACE TEMP MACRO bm_len(s) AS CAST(length(s) AS INTEGER)",
    # Jackson prints a JSON null found at the path as "null"; a missing path is NULL.
    "CREATE OR REPLACE TEMP MACRO bm_extractjsonfield(j, p) AS CASE WHEN j IS NULL OR p IS NULL THEN NULL "
    "WHEN json_type(j, p) = 'NULL' THEN 'null' ELSE json_extract_string(j, p) END",
    # TIMESTAMPTOSTRING pieces (the statement splits a Java pattern into them).
    "CREATE OR REPLACE TEMP MACRO bm_ts_local(ts, tz) AS timezone(tz, epoch_ms(CAST(ts AS BIGINT))::TIMESTAMPTZ)",
    "CREATE OR REPLACE TEMP MACRO bm_ts_strftime(ts, tz, f) AS strftime(bm_ts_local(ts, tz), f)",
    "CREATE OR REPLACE TEMP MACRO bm_ts_offset_min(ts, tz) AS "
    "CAST((epoch_ms(bm_ts_local(ts, tz)) - CAST(ts AS BIGINT)) // 60000 AS BIGINT)",
    "CREATE OR REPLACE TEMP MACRO bm_offset_text(m, style) AS "
    "CASE WHEN m = 0 AND style IN ('X', 'XX', 'XXX', 'ZZZZZ') THEN 'Z' "
    "WHEN m = 0 AND style = 'ZZZZ' THEN 'GMT' ELSE "
    "(CASE WHEN style = 'ZZZZ' THEN 'GMT' ELSE '' END) || (CASE WHEN m < 0 THEN '-' ELSE '+' END) "
    "|| lpad(CAST(abs(m) // 60 AS VARCHAR), 2, '0') "
    "|| (CASE WHEN style IN ('X', 'x') AND abs(m) % 60 = 0 THEN '' "
    "WHEN style IN ('XXX', 'xxx', 'ZZZZ', 'ZZZZZ') THEN ':' ELSE '' END) "
    "|| (CASE WHEN style IN ('X', 'x') AND abs(m) % 60 = 0 THEN '' "
    "ELSE lpad(CAST(abs(m) % 60 AS VARCHAR), 2, '0') END) END",
    "CREATE OR REPLACE TEMP MACRO bm_ts_offset(ts, tz, style) AS bm_offset_text(bm_ts_offset_min(ts, tz), style)",
    "CREATE OR REPLACE TEMP MACRO bm_ts_guard(ts, tz, v) AS CASE WHEN ts IS NULL OR tz IS NULL THEN NULL ELSE v END",
]

# INSTR(s, sub, pos, n): the n-th occurrence from 1-based pos (a negative pos
# searches backwards from length + pos, Java's lastIndexOf); 0 when none or a
# NULL string. Occurrences may overlap, as with String.indexOf.
_INSTR_ALL = ("list_filter(range(0, length(s) + 1), lambda i: substr(s, i + 1, length(sub)) = sub "
              "AND i + length(sub) <= length(s))")
_INSTR = ("CASE WHEN s IS NULL OR sub IS NULL THEN 0 WHEN p IS NULL OR n IS NULL THEN NULL "
          "ELSE CAST(coalesce(CASE WHEN p >= 0 "
          f"THEN list_filter({_INSTR_ALL}, lambda i: i >= p - 1)[n] "
          f"ELSE list_reverse(list_filter({_INSTR_ALL}, lambda i: i <= length(s) + p))[n] END + 1, 0) AS INTEGER) END")

# ksqlDB's LOG(base, x): NaN for a base <= 0 or 1, else Math.log(x) / Math.log(base).
_LOG_BASE = ("CASE WHEN b IS NULL OR x IS NULL THEN NULL WHEN b <= 0 OR b = 1 THEN CAST('nan' AS DOUBLE) "
             "ELSE ln(CAST(x AS DOUBLE)) / ln(CAST(b AS DOUBLE)) END")

# RFC 3986's regular expression for a URI's parts (groups: 1 scheme, 3 host, 4 port, 5 path, 6 query, 7 fragment).
_URL_RE = (r"^(?:([a-zA-Z][a-zA-Z0-9+.-]*):)?(?://(?:([^@/?#]*)@)?([^:/?#]*)(?::([0-9]*))?)?"
           r"([^?#]*)(?:\?([^#]*))?(?:#(.*))?$")

# A Java pattern that comes from a column is translated per row: each letter run becomes a
# private-use placeholder, then the placeholder the timestamp's field (strftime needs a constant format).
_JAVA_RUNTIME_RULES = [("yyyy", "%Y"), ("yy", "%y"), ("MMMM", "%B"), ("MMM", "%b"), ("MM", "%m"), ("dd", "%d"),
                       ("HH", "%H"), ("hh", "%I"), ("mm", "%M"), ("ss", "%S"), ("SSS", "%g"), ("EEEE", "%A"),
                       ("EEE", "%a"), ("a", "%p")]
_TOKENS = "p"
_FILL = "q"
for _i, (_java, _code) in enumerate(_JAVA_RUNTIME_RULES):
    _TOKENS = f"replace({_TOKENS}, '{_java}', '{chr(0xE000 + _i)}')"
    _FILL = f"replace({_FILL}, '{chr(0xE000 + _i)}', strftime(t, '{_code}'))"

_KSQL_MACROS = [
    "CREATE OR REPLACE TEMP MACRO bm_instr(s, sub) AS CASE WHEN s IS NULL OR sub IS NULL THEN 0 "
    "ELSE CAST(instr(s, sub) AS INTEGER) END, "
    f"(s, sub, p) AS {_INSTR.replace('[n]', '[1]').replace(' OR n IS NULL', '')}, (s, sub, p, n) AS {_INSTR}",
    f"CREATE OR REPLACE TEMP MACRO bm_log(x) AS ln(CAST(x AS DOUBLE)), (b, x) AS {_LOG_BASE}",
    "CREATE OR REPLACE TEMP MACRO bm_ln(x) AS ln(CAST(x AS DOUBLE))",
    # Java's String.replace: an empty target matches before every character and at the end.
    "CREATE OR REPLACE TEMP MACRO bm_replace(s, a, b) AS CASE WHEN s IS NULL OR a IS NULL OR b IS NULL THEN NULL "
    "WHEN a = '' THEN b || array_to_string(list_transform(string_split(s, ''), lambda c: c || b), '') "
    "ELSE replace(s, a, b) END",
    "CREATE OR REPLACE TEMP MACRO bm_regexp_replace(s, p, r) AS regexp_replace(s, p, r, 'g')",
    # ksqlDB splits keeping trailing empty strings; '' split by '' is [''].
    "CREATE OR REPLACE TEMP MACRO bm_split(s, d) AS CASE WHEN s IS NULL OR d IS NULL THEN NULL "
    "WHEN d = '' AND s = '' THEN [''] ELSE string_split(s, d) END",
    "CREATE OR REPLACE TEMP MACRO bm_regexp_split_to_array(s, d) AS CASE WHEN s IS NULL OR d IS NULL THEN NULL "
    "WHEN d = '' AND s = '' THEN [''] ELSE regexp_split_to_array(s, d) END",
    "CREATE OR REPLACE TEMP MACRO bm_chr_code(c) AS CASE WHEN c IS NULL OR c < 0 OR c > 1114111 THEN NULL "
    "ELSE chr(CAST(c AS INTEGER)) END",
    # A UTF-16 surrogate pair spelled \\uD8xx\\uDCxx is one code point.
    r"CREATE OR REPLACE TEMP MACRO bm_chr_text(c) AS CASE WHEN regexp_full_match(c, "
    r"'\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}') THEN chr(65536 + "
    r"(CAST(('0x' || substr(c, 3, 4)) AS INTEGER) - 55296) * 1024 + CAST(('0x' || substr(c, 9, 4)) AS INTEGER) "
    r"- 56320) WHEN regexp_full_match(c, '\\?u[0-9a-fA-F]{4}') "
    "THEN chr(CAST(('0x' || right(c, 4)) AS INTEGER)) ELSE NULL END",
    "CREATE OR REPLACE TEMP MACRO bm_unix_timestamp() AS epoch_ms(current_timestamp), (ts) AS epoch_ms(ts)",
    "CREATE OR REPLACE TEMP MACRO bm_unix_date() AS CAST(current_date - DATE '1970-01-01' AS INTEGER), "
    "(d) AS CAST(d - DATE '1970-01-01' AS INTEGER)",
    # ksqlDB's TIMESTAMP is epoch milliseconds shown in UTC: DuckDB's naive TIMESTAMP in UTC.
    "CREATE OR REPLACE TEMP MACRO bm_as_date(t) AS CAST(t AS DATE)",
    "CREATE OR REPLACE TEMP MACRO bm_date_ts(d) AS CAST(d AS TIMESTAMP)",
    "CREATE OR REPLACE TEMP MACRO bm_ms_to_ts(ms) AS make_timestamp(CAST(ms AS BIGINT) * 1000)",
    "CREATE OR REPLACE TEMP MACRO bm_convert_tz(ts, a, b) AS "
    "CAST(timezone(b, timezone(a, CAST(ts AS TIMESTAMP))) AS TIMESTAMP)",
    # ksqlDB: text the pattern does not read gives NULL (its UDF throws; the expression is NULL).
    "CREATE OR REPLACE TEMP MACRO bm_parse_guard(s, f, v) AS CASE WHEN s IS NULL OR f IS NULL THEN NULL ELSE v END",
    "CREATE OR REPLACE TEMP MACRO bm_elt(n, l) AS CASE WHEN n IS NULL OR n < 1 OR n > len(l) THEN NULL "
    "ELSE l[n] END",
    "CREATE OR REPLACE TEMP MACRO bm_url_encode_param(s) AS "
    "replace(replace(url_encode(s), '%20', '+'), '*', '%2A')",
    "CREATE OR REPLACE TEMP MACRO bm_url_decode_param(s) AS url_decode(replace(s, '+', ' '))",
    # java.net.URI: an absent part is NULL, but the path is '' when empty.
    f"CREATE OR REPLACE TEMP MACRO bm_url_part(u, part) AS CASE WHEN u IS NULL THEN NULL WHEN part = 5 "
    f"THEN regexp_extract(u, '{_URL_RE}', part) ELSE nullif(regexp_extract(u, '{_URL_RE}', part), '') END",
    "CREATE OR REPLACE TEMP MACRO bm_as_value(x) AS x",
    # ENCODE(s, from, to) with ksqlDB's encodings hex, utf8, ascii, base64 (others: NULL).
    # ksqlDB's hex text: digits, 0x-prefixed (an odd count gets a leading 0) or X'...'; else NULL.
    r"CREATE OR REPLACE TEMP MACRO bm_hex(s) AS CASE "
    r"WHEN regexp_full_match(s, '0x[0-9a-fA-F]*') THEN CASE WHEN length(s) % 2 = 1 THEN '0' || substr(s, 3) "
    r"ELSE substr(s, 3) END "
    r"WHEN regexp_full_match(s, '[xX]''[0-9a-fA-F]*''') AND length(s) % 2 = 1 THEN substr(s, 3, length(s) - 3) "
    r"WHEN regexp_full_match(s, '[0-9a-fA-F]*') AND length(s) % 2 = 0 THEN s ELSE NULL END",
    r"CREATE OR REPLACE TEMP MACRO bm_to_blob(s, enc) AS CASE lower(enc) WHEN 'hex' THEN unhex(bm_hex(s)) "
    r"WHEN 'utf8' THEN encode(s) WHEN 'ascii' THEN encode(regexp_replace(s, '[^\x00-\x7F]', '?', 'g')) "
    r"WHEN 'base64' THEN from_base64(s) ELSE NULL END",
    "CREATE OR REPLACE TEMP MACRO bm_blob_ascii(b) AS array_to_string(list_transform(range(0, octet_length(b)), "
    "lambda i: CASE WHEN CAST(('0x' || substr(hex(b), 2 * i + 1, 2)) AS INTEGER) < 128 "
    "THEN chr(CAST(('0x' || substr(hex(b), 2 * i + 1, 2)) AS INTEGER)) ELSE chr(65533) END), '')",
    "CREATE OR REPLACE TEMP MACRO bm_from_blob(b, enc) AS CASE lower(enc) WHEN 'hex' THEN lower(hex(b)) "
    "WHEN 'utf8' THEN decode(b) WHEN 'ascii' THEN bm_blob_ascii(b) WHEN 'base64' THEN to_base64(b) ELSE NULL END",
    "CREATE OR REPLACE TEMP MACRO bm_encode(s, a, b) AS CASE WHEN s IS NULL OR a IS NULL OR b IS NULL THEN NULL "
    "ELSE bm_from_blob(bm_to_blob(s, a), b) END",
    f"CREATE OR REPLACE TEMP MACRO bm_java_tokens(p) AS {_TOKENS}",
    "CREATE OR REPLACE TEMP MACRO bm_java_fill(t, q, p) AS CASE WHEN q IS NULL THEN NULL "
    "WHEN regexp_matches(q, '[A-Za-z'']') THEN error('pattern ' || p || ': from a column, only the letters "
    "yyyy yy MMMM MMM MM dd HH hh mm ss SSS EEEE EEE a are translated (use a literal pattern)') "
    f"ELSE {_FILL} END",
    # Quoted text ('...') is kept as it is: the odd pieces of the pattern split on quotes.
    "CREATE OR REPLACE TEMP MACRO bm_ts_runtime(ts, tz, p) AS array_to_string(list_transform(string_split(p, ''''), "
    "lambda x, i: CASE WHEN i % 2 = 1 THEN bm_java_fill(bm_ts_local(ts, tz), bm_java_tokens(x), p) ELSE x END), '')",
    "CREATE OR REPLACE TEMP MACRO bm_time_ts(t) AS CAST(DATE '1970-01-01' + t AS TIMESTAMP)",
    # ksqlDB counts down when end < start (step -1 by default).
    "CREATE OR REPLACE TEMP MACRO bm_generate_series(a, b) AS CASE WHEN a <= b THEN generate_series(a, b) "
    "ELSE generate_series(a, b, -1) END, (a, b, st) AS CASE WHEN st = 0 THEN error('GENERATE_SERIES step cannot "
    "be zero') ELSE generate_series(a, b, st) END",
    # ksqlDB's LPAD/RPAD: NULL for an empty padding or a negative length (DuckDB raises).
    "CREATE OR REPLACE TEMP MACRO bm_lpad(s, n, p) AS CASE WHEN s IS NULL OR n IS NULL OR p IS NULL OR p = '' "
    "OR n < 0 THEN NULL ELSE lpad(s, n, p) END",
    "CREATE OR REPLACE TEMP MACRO bm_rpad(s, n, p) AS CASE WHEN s IS NULL OR n IS NULL OR p IS NULL OR p = '' "
    "OR n < 0 THEN NULL ELSE rpad(s, n, p) END",
    # Haversine on a sphere of radius 6371 km (3959 miles), as ksqlDB's GEO_DISTANCE.
    "CREATE OR REPLACE TEMP MACRO bm_haversine(la1, lo1, la2, lo2, r) AS r * 2 * asin(sqrt("
    "power(sin(radians(CAST(la2 AS DOUBLE) - la1) / 2), 2) + cos(radians(CAST(la1 AS DOUBLE))) * "
    "cos(radians(CAST(la2 AS DOUBLE))) * power(sin(radians(CAST(lo2 AS DOUBLE) - lo1) / 2), 2)))",
    "CREATE OR REPLACE TEMP MACRO bm_geo_distance(la1, lo1, la2, lo2) AS bm_haversine(la1, lo1, la2, lo2, 6371.0), "
    "(la1, lo1, la2, lo2, u) AS bm_haversine(la1, lo1, la2, lo2, CASE WHEN lower(u) IN ('mi', 'miles', 'mile') "
    "THEN 3959.0 WHEN lower(u) IN ('km', 'kilometers', 'kilometer', 'kms') THEN 6371.0 "
    "ELSE error('GEO_DISTANCE: unit must be KM or MI, got ' || u) END)",
    "CREATE OR REPLACE TEMP MACRO bm_field(s, l) AS CASE WHEN s IS NULL THEN 0 "
    "ELSE coalesce(CAST(list_position(l, s) AS INTEGER), 0) END",
    "CREATE OR REPLACE TEMP MACRO bm_is_json_string(s) AS coalesce(json_valid(s) AND trim(s) <> '', false)",
    "CREATE OR REPLACE TEMP MACRO bm_json_array_length(s) AS CASE WHEN json_valid(s) AND json_type(s) = 'ARRAY' "
    "THEN CAST(json_array_length(s) AS INTEGER) ELSE NULL END",
    "CREATE OR REPLACE TEMP MACRO bm_json_keys(s) AS CASE WHEN json_valid(s) AND json_type(s) = 'OBJECT' "
    "THEN json_keys(s) ELSE NULL END",
    "CREATE OR REPLACE TEMP MACRO bm_to_json_string(x) AS CASE WHEN x IS NULL THEN 'null' "
    "ELSE CAST(to_json(x) AS VARCHAR) END",
    "CREATE OR REPLACE TEMP MACRO bm_to_json_timestamp(x) AS CASE WHEN x IS NULL THEN 'null' "
    "ELSE '\"' || strftime(x, '%Y-%m-%dT%H:%M:%S.%g') || '\"' END",
    # ksqlDB's argument order is (pattern, string); no match is NULL.
    "CREATE OR REPLACE TEMP MACRO bm_regexp_extract(p, s) AS CASE WHEN regexp_matches(s, p) "
    "THEN regexp_extract(s, p) ELSE NULL END, (p, s, g) AS CASE WHEN regexp_matches(s, p) "
    "THEN regexp_extract(s, p, g) ELSE NULL END",
    "CREATE OR REPLACE TEMP MACRO bm_regexp_extract_all(p, s) AS regexp_extract_all(s, p), "
    "(p, s, g) AS regexp_extract_all(s, p, g)",
    "CREATE OR REPLACE TEMP MACRO bm_url_extract_port(u) AS TRY_CAST(bm_url_part(u, 4) AS INTEGER)",
    "CREATE OR REPLACE TEMP MACRO bm_url_extract_parameter(u, name) AS CASE WHEN u IS NULL OR name IS NULL "
    "THEN NULL ELSE list_extract(list_transform(list_filter(list_transform(string_split("
    "coalesce(bm_url_part(u, 6), ''), '&'), lambda x: string_split(x, '=')), "
    "lambda p: bm_url_decode_param(p[1]) = name), lambda p: bm_url_decode_param(coalesce(p[2], ''))), 1) END",
]

MACROS_SQL = ";\n".join(_mask_macros() + _OTHER_MACROS + _KSQL_MACROS) + ";"

# ksqlDB name -> {arity: the DuckDB function the call becomes}; arity None: any.
FUNCTIONS: dict[str, dict[Optional[int], str]] = {
    "mask": {1: "bm_mask", 5: "bm_mask"},
    "mask_left": {2: "bm_mask_left", 6: "bm_mask_left"},
    "mask_right": {2: "bm_mask_right", 6: "bm_mask_right"},
    "mask_keep_left": {2: "bm_mask_keep_left", 6: "bm_mask_keep_left"},
    "mask_keep_right": {2: "bm_mask_keep_right", 6: "bm_mask_keep_right"},
    "round": {1: "bm_round", 2: "bm_round"},
    "substring": {2: "bm_substring", 3: "bm_substring"},
    "trim": {1: "bm_trim"},
    "len": {1: "bm_len"},
    "extractjsonfield": {2: "bm_extractjsonfield"},
    # Rewritten at preparation (Rewriter.function): Java patterns, units, variadic lists.
    "timestamptostring": {2: "bm_ts_guard", 3: "bm_ts_guard"},
    "format_timestamp": {2: "bm_ts_guard", 3: "bm_ts_guard"},
    "format_date": {2: "bm_ts_guard"},
    "stringtotimestamp": {2: "bm_parse_guard", 3: "bm_parse_guard"},
    "parse_timestamp": {2: "bm_parse_guard", 3: "bm_parse_guard"},
    "parse_date": {2: "bm_parse_guard"},
    "dateadd": {3: "+"}, "datesub": {3: "-"}, "timestampadd": {3: "+"}, "timestampsub": {3: "-"},
    "elt": {None: "bm_elt"},
    "chr": {1: "bm_chr_code"},
    "url_extract_protocol": {1: "bm_url_part"}, "url_extract_host": {1: "bm_url_part"},
    "url_extract_path": {1: "bm_url_part"}, "url_extract_query": {1: "bm_url_part"},
    "url_extract_fragment": {1: "bm_url_part"},
    "to_json_string": {1: "bm_to_json_string"},
    "as_value": {1: "bm_as_value"},
    "encode": {3: "bm_encode"},
    "datetostring": {2: "bm_ts_guard"},   # rewritten like TIMESTAMPTOSTRING (days since 1970-01-01)
    "format_time": {2: "bm_ts_guard"},    # rewritten likewise
    "generate_series": {2: "bm_generate_series", 3: "bm_generate_series"},
    "lpad": {3: "bm_lpad"}, "rpad": {3: "bm_rpad"},
    "geo_distance": {4: "bm_geo_distance", 5: "bm_geo_distance"},
    "field": {None: "bm_field"},  # rewritten: FIELD(s, a, b, ...) -> bm_field(s, [a, b, ...])
    "is_json_string": {1: "bm_is_json_string"},
    "json_array_length": {1: "bm_json_array_length"},
    "json_keys": {1: "bm_json_keys"},
    "regexp_extract": {2: "bm_regexp_extract", 3: "bm_regexp_extract"},
    "regexp_extract_all": {2: "bm_regexp_extract_all", 3: "bm_regexp_extract_all"},
    # Macros.
    "instr": {2: "bm_instr", 3: "bm_instr", 4: "bm_instr"},
    "log": {1: "bm_log", 2: "bm_log"},
    "ln": {1: "bm_ln"},
    "replace": {3: "bm_replace"},
    "regexp_replace": {3: "bm_regexp_replace"},
    "split": {2: "bm_split"},
    "regexp_split_to_array": {2: "bm_regexp_split_to_array"},
    "unix_timestamp": {0: "bm_unix_timestamp", 1: "bm_unix_timestamp"},
    "unix_date": {0: "bm_unix_date", 1: "bm_unix_date"},
    "convert_tz": {3: "bm_convert_tz"},
    "url_encode_param": {1: "bm_url_encode_param"},
    "url_decode_param": {1: "bm_url_decode_param"},
    "url_extract_port": {1: "bm_url_extract_port"},
    "url_extract_parameter": {2: "bm_url_extract_parameter"},
}
# URL_EXTRACT_* -> the group of _URL_RE holding that part.
URL_PARTS = {"url_extract_protocol": 1, "url_extract_host": 3, "url_extract_path": 5, "url_extract_query": 6,
             "url_extract_fragment": 7}
# Time units of DATEADD/TIMESTAMPADD (java.util.concurrent.TimeUnit) -> DuckDB interval units.
TIME_UNITS = {"milliseconds": "millisecond", "seconds": "second", "minutes": "minute", "hours": "hour",
              "days": "day"}

# ksqlDB functions DuckDB runs under the same name with ksqlDB's semantics
# (checked by beam_ml.clean.conformance against ksqlDB's tests).
SAME_NAME = frozenset({
    "ifnull", "coalesce", "ucase", "lcase", "concat", "nullif", "abs", "ceil", "floor", "exp", "sqrt", "sign",
    "greatest", "least", "initcap", "concat_ws", "md5", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "cot",
    "sinh", "cosh", "tanh", "degrees", "radians", "pi", "cbrt", "random", "power", "trunc",
})
# Operators (DuckDB's names for them) that mean in DuckDB what they mean in ksqlDB.
OPERATORS = frozenset({"+", "-", "*", "/", "%", "||", "~~", "!~~", "//", "like_escape", "not_like_escape"})

SUPPORTED_FUNCTIONS = frozenset(FUNCTIONS) | SAME_NAME
# --------------------------------------------------------------------------
# TIMESTAMPTOSTRING: java.time.format.DateTimeFormatter pattern -> strftime.

# Letter -> {count: strftime}; counts not listed use the largest listed below.
_PATTERN_LETTERS: dict[str, dict[int, str]] = {
    "y": {1: "%Y", 2: "%y", 3: "%Y", 4: "%Y"},
    "u": {1: "%Y", 2: "%y", 3: "%Y", 4: "%Y"},
    "M": {1: "%-m", 2: "%m", 3: "%b", 4: "%B"},
    "L": {1: "%-m", 2: "%m", 3: "%b", 4: "%B"},
    "d": {1: "%-d", 2: "%d"},
    "D": {1: "%-j", 3: "%j"},
    "H": {1: "%-H", 2: "%H"},
    "h": {1: "%-I", 2: "%I"},
    "m": {1: "%-M", 2: "%M"},
    "s": {1: "%-S", 2: "%S"},
    "S": {3: "%g", 6: "%f", 9: "%n"},
    "a": {1: "%p"},
    "E": {1: "%a", 2: "%a", 3: "%a", 4: "%A"},
}
# Offset letters -> the bm_offset_text style for each count.
_OFFSET_LETTERS = {
    "X": {1: "X", 2: "XX", 3: "XXX"},
    "x": {1: "x", 2: "xx", 3: "xxx"},
    "Z": {1: "xx", 2: "xx", 3: "xx", 4: "ZZZZ", 5: "ZZZZZ"},
}
# Letters DateTimeFormatter knows but this translation does not.
_JAVA_LETTERS = set("GuyDMLdQqYwWEecFaBhKkHmsSAnNVvzOXxZp")


def java_pattern_parts(pattern: str, where: str = "TIMESTAMPTOSTRING") -> list[tuple[str, str]]:
    """Splits a Java DateTimeFormatter pattern into ('strftime', fmt) and ('offset', style) parts.

    Args:
      pattern: e.g. "yyyy-MM-dd'T'HH:mm:ss.SSSXXX".
      where: names the call in errors.

    Returns:
      Parts in order; consecutive strftime text is merged.

    Raises:
      UserError: an unknown or unsupported pattern letter, or an unclosed quote.
    """
    parts: list[tuple[str, str]] = []

    def emit(kind: str, text: str) -> None:
        if kind == "strftime" and parts and parts[-1][0] == "strftime":
            parts[-1] = ("strftime", parts[-1][1] + text)
        else:
            parts.append((kind, text))

    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "'":
            j = i + 1
            lit = []
            while True:
                if j >= n:
                    raise UserError(f"{where}: unclosed quote in pattern {pattern!r}")
                if pattern[j] == "'":
                    if j + 1 < n and pattern[j + 1] == "'":
                        lit.append("'")
                        j += 2
                        continue
                    break
                lit.append(pattern[j])
                j += 1
            text = "".join(lit) if j > i + 1 else "'"  # '' alone is a quote
            emit("strftime", text.replace("%", "%%"))
            i = j + 1
            continue
        if ("a" <= c <= "z") or ("A" <= c <= "Z"):
            j = i
            while j < n and pattern[j] == c:
                j += 1
            count = j - i
            if c in _PATTERN_LETTERS:
                table = _PATTERN_LETTERS[c]
                code = table.get(count)
                if code is None and c not in "S":
                    code = table[max(k for k in table if k <= count)] if any(k <= count for k in table) else None
                if code is None:
                    raise UserError(f"{where}: pattern {pattern!r}: {c * count} is not supported "
                                    f"(use {', '.join(c * k for k in table)})")
                emit("strftime", code)
            elif c in _OFFSET_LETTERS and count in _OFFSET_LETTERS[c]:
                emit("offset", _OFFSET_LETTERS[c][count])
            elif c in _JAVA_LETTERS:
                raise UserError(f"{where}: pattern {pattern!r}: letter {c!r} ({c * count}) is not supported "
                                "here; zone offsets are X, XX, XXX, x, Z")
            else:
                raise UserError(f"{where}: pattern {pattern!r}: Unknown pattern letter: {c}")
            i = j
            continue
        if c in "[]{}#":
            raise UserError(f"{where}: pattern {pattern!r}: {c!r} is reserved; quote it as '{c}'")
        emit("strftime", "%%" if c == "%" else c)
        i += 1
    return parts


# --------------------------------------------------------------------------
# EXTRACTJSONFIELD: ksqlDB's JSONPath subset -> an RFC 6901 JSON Pointer.
#
# ksqlDB (JsonPathTokenizer) reads `$` then `.name`, `["name"]` or `[name]`
# segments, and applies a segment to an array as an index when it is a number
# -- what a JSON Pointer does, so `$.array.1` works as in ksqlDB.

_SEGMENT_CHARS = re.compile(r"[^\s.\[\]\"\\]")


def json_pointer(path: str, where: str = "EXTRACTJSONFIELD") -> str:
    """Converts ksqlDB's JSONPath (`$.a.b`, `$.a[0]`, `$["a b"]`) to a JSON Pointer ('/a/b').

    Raises:
      UserError: the path is not one ksqlDB accepts.
    """
    def bad() -> UserError:
        return UserError(f"{where}: Invalid JSON path: {path!r}")

    if not path.startswith("$"):
        raise bad()
    tokens: list[str] = []
    i, n = 1, len(path)
    while i < n:
        c = path[i]
        if c == ".":
            j = i + 1
            while j < n and (path[j] in ":@" or _SEGMENT_CHARS.match(path[j])):
                j += 1
            if j == i + 1:
                raise bad()
            tokens.append(path[i + 1:j])
            i = j
        elif c == "[":
            j = i + 1
            if j < n and path[j] == '"':
                j += 1
                tok = []
                while j < n and path[j] != '"':
                    if path[j] == "\\" and j + 1 < n:
                        j += 1
                    tok.append(path[j])
                    j += 1
                if j >= n:
                    raise bad()
                j += 1
                token = "".join(tok)
            else:
                k = j
                while j < n and _SEGMENT_CHARS.match(path[j]):
                    j += 1
                token = path[k:j]
                if not token:
                    raise bad()
            if j >= n or path[j] != "]":
                raise bad()
            tokens.append(token)
            i = j + 1
        else:
            raise bad()
    return "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)


def literal_string(node: dict) -> Optional[str]:
    """The text of a string-constant AST node, else None."""
    if node.get("class") == "CONSTANT" and node.get("literal", {}).get("kind") in ("STRING", "VARCHAR"):
        return node["literal"].get("text")
    return None



def java_parse_format(pattern: str, where: str = "PARSE_TIMESTAMP") -> tuple[str, bool, bool]:
    """A Java DateTimeFormatter pattern as a DuckDB strptime format, for parsing.

    Returns:
      (format, has_offset, has_date): has_offset when the text carries its zone
      offset (then the zone argument is ignored, as in Java); has_date when the
      pattern reads a year, month or day (else ksqlDB's default date, 1970-01-01,
      is prepended).

    Raises:
      UserError: a letter the translation does not support (see java_pattern_parts).
    """
    fmt, has_offset = [], False
    for kind, text in java_pattern_parts(pattern, where):
        if kind == "offset":
            fmt.append("%z")
            has_offset = True
        else:
            fmt.append(text.replace("%-", "%"))
    has_date = any(c in _strip_quoted(pattern) for c in "yuMLdD")
    return "".join(fmt), has_offset, has_date


def _strip_quoted(pattern: str) -> str:
    return re.sub(r"'[^']*'", "", pattern)
