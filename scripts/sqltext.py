"""Splitting SQL scripts into statements, for the scripts that rewrite
them (draft-upgrade.py, sql-flavour.py)."""
import re


def statements(text):
    """The statements of a script, each without the comments before it;
    quotes, dollar quotes and BEGIN ATOMIC bodies are kept whole."""
    i, n, start, out = 0, len(text), 0, []
    while i < n:
        if text.startswith('--', i):
            j = text.find('\n', i); i = n if j < 0 else j + 1; continue
        if text.startswith('/*', i):
            i = text.index('*/', i) + 2; continue
        c = text[i]
        if c == "'":
            i += 1
            while True:
                j = text.index("'", i)
                if j + 1 < n and text[j+1] == "'": i = j + 2; continue
                i = j + 1; break
            continue
        if c == '$':
            m = re.match(r'\$([A-Za-z_]*)\$', text[i:])
            if m:
                j = text.index(m.group(0), i + len(m.group(0))); i = j + len(m.group(0)); continue
        if c == ';':
            out.append(text[start:i+1]); start = i + 1
        i += 1
    merged, k = [], 0
    while k < len(out):
        s = out[k]
        if re.search(r'BEGIN ATOMIC', s):
            while not re.search(r'(^|\n)\s*END;\s*$', s):
                k += 1; s += out[k]
        merged.append(s); k += 1
    res = []
    for s in merged:
        # The statement without the comments and pgrx's markers before it
        # (a function's body keeps its own comments: they are part of it).
        lines = s.split('\n')
        k = 0
        while k < len(lines) and (not lines[k].strip() or lines[k].lstrip().startswith('--')
                                  or re.fullmatch(r'\s*/\*.*\*/\s*', lines[k])):
            k += 1
        body = '\n'.join(lines[k:]).strip()
        if body:
            res.append(body)
    return res
