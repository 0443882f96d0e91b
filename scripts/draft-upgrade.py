"""Drafts an upgrade script: python3 scripts/draft-upgrade.py OLD NEW [HEAD.sql]

Compares the frozen install script of OLD (sql/released/postbox--OLD.sql)
with the one pgrx generated for NEW (installed: `cargo pgrx install` first)
and writes sql/postbox--OLD--NEW.sql: HEAD.sql (the script's own words;
without it, the leading comment of the script there now),
then every function, view, comment and grant that is new or changed (as
CREATE OR REPLACE), new Rust functions, drops of what is gone, and the
sweeping REVOKE from PUBLIC a fresh install ends with. It does not write
table changes: it lists what else differs on stderr, to be written by hand.
The upgrade tests (tests/tests/extension.rs) compare the result with a fresh
install; a shipped script is frozen."""
import os, re, subprocess, sys
from sqltext import statements
OLD_V, NEW_V = sys.argv[1:3]
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
TARGET = f'{ROOT}/sql/postbox--{OLD_V}--{NEW_V}.sql'
if len(sys.argv) > 3:
    HEAD = open(sys.argv[3]).read()
else:
    lines = open(TARGET).read().split('\n') if os.path.exists(TARGET) else []
    HEAD = '\n'.join(l for l in lines[:next((i for i, l in enumerate(lines) if not l.startswith('--')), len(lines))]) + '\n'

PG_CONFIG = os.environ.get('PG_CONFIG', '/usr/lib/postgresql/15/bin/pg_config')
SHARE = subprocess.check_output([PG_CONFIG, '--sharedir'], text=True).strip()
OLD = open(f'{ROOT}/sql/released/postbox--{OLD_V}.sql').read()
NEW = open(f'{SHARE}/extension/postbox--{NEW_V}.sql').read()
if 'CREATE SCHEMA IF NOT EXISTS tests' in NEW:
    sys.exit('the installed script is a pg_test build (it has the tests schema): '
             'run `cargo pgrx install` in extension/ first')

def nparams(sig):
    depth, q, count, nonempty = 0, False, 0, False
    for c in sig:
        if q:
            if c == "'": q = False
            continue
        if c == "'": q = True; continue
        if c == '(':
            depth += 1
            if depth == 1: continue
        if c == ')':
            depth -= 1
            if depth == 0: break
        if depth == 1 and c == ',': count += 1
        if depth >= 1 and not c.isspace(): nonempty = True
    return count + 1 if nonempty else 0

def norm(s):
    return re.sub(r'\s+', ' ', s).strip()

def key(s):
    m = re.match(r'CREATE\s+(?:OR REPLACE\s+)?FUNCTION\s+postbox\."?(\w+)"?\s*(\(.*)', s, re.S)
    if m: return ('fn', m.group(1), nparams(m.group(2)))
    m = re.match(r'CREATE\s+(?:OR REPLACE\s+)?VIEW\s+postbox\.(\w+)', s)
    if m: return ('view', m.group(1))
    m = re.match(r'COMMENT ON FUNCTION postbox\.(\w+)(\(.*?\)) IS', s, re.S)
    if m: return ('comment-fn', m.group(1), nparams(m.group(2)))
    m = re.match(r'COMMENT ON (VIEW|TABLE|SCHEMA) postbox\.?(\w*)', s)
    if m: return ('comment-' + m.group(1).lower(), m.group(2))
    if s.startswith('GRANT') or s.startswith('REVOKE'): return ('grant', norm(s))
    return ('other', norm(s))

def grant_pairs(s):
    """(object, role, privilege) triples of a GRANT with a list of objects."""
    m = re.match(r'GRANT (.*?) ON (FUNCTION )?(.*) TO (.*);$', norm(s))
    if not m: return None
    priv, isfn, objs, roles = m.groups()
    if isfn:
        objs = re.findall(r'postbox\.\w+\([^)]*\)', objs)
        objs = ['FUNCTION ' + re.sub(r'\s*--.*', '', o) for o in objs]
    else:
        objs = [o.strip() for o in objs.split(',')] if not objs.startswith('ALL') else [objs]
    return {(o, r.strip(), priv) for o in objs for r in roles.split(',')}

def index(stmts):
    d, grants, others = {}, set(), []
    for s in stmts:
        k = key(s)
        if k[0] == 'grant':
            g = grant_pairs(s)
            if g is None: others.append(norm(s))
            else: grants |= g
        elif k[0] == 'other':
            others.append(k[1])
        else:
            d[k] = s
    return d, grants, others

old, old_grants, old_other = index(statements(OLD))
new, new_grants, new_other = index(statements(NEW))
# Tables, indexes, roles, dumps: must be the same.
so, sn = set(old_other), set(new_other)
for x in sorted(sn - so): print('NEW OTHER (by hand):', x[:200], file=sys.stderr)
for x in sorted(so - sn): print('GONE OTHER (by hand):', x[:200], file=sys.stderr)

out = []
# New functions written in Rust (pgrx's own statements).
for x in sorted(sn - so):
    if x.startswith('CREATE FUNCTION') or x.startswith('CREATE  FUNCTION'):
        out.append(re.sub(r'^CREATE\s+FUNCTION "', 'CREATE FUNCTION postbox."', x))
def replace(s):
    s = re.sub(r'^CREATE\s+FUNCTION', 'CREATE OR REPLACE FUNCTION', s)
    s = re.sub(r'^CREATE\s+VIEW', 'CREATE OR REPLACE VIEW', s)
    return s
changed_objs = []
# Functions first (views may call new ones), in the new script's order.
for k, s in new.items():
    if k[0] == 'fn' and norm(old.get(k, '')) != norm(s):
        out.append(replace(s) + ';' if not s.endswith(';') else replace(s))
        changed_objs.append(k)
for k, s in new.items():
    if k[0] == 'view' and norm(old.get(k, '')) != norm(s):
        out.append(replace(s))
        changed_objs.append(k)
for k in old:
    if k not in new and k[0] == 'fn':
        m = re.match(r'CREATE\s+(?:OR REPLACE\s+)?FUNCTION\s+(postbox\.\w+)\s*\(', old[k])
        sig = [o for (o, r, p) in old_grants if o.startswith('FUNCTION ' + m.group(1) + '(')]
        out.append(f'DROP {sig[0]};')
    if k not in new and k[0] == 'view':
        out.append(f'DROP VIEW postbox.{k[1]};')
for k, s in new.items():
    if k[0].startswith('comment') and norm(old.get(k, '')) != norm(s):
        out.append(s)
for g in sorted(new_grants - old_grants):
    o, r, p = g
    out.append(f'GRANT {p} ON {o} TO {r};')
for g in sorted(old_grants - new_grants):
    o, r, p = g
    print('REVOKE?', g, file=sys.stderr)
out.append('''-- As at the end of a fresh install (sql/native.sql): PUBLIC keeps no
-- EXECUTE on the functions made above.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA postbox FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA postbox FROM PUBLIC;''')
open(TARGET, 'w').write(HEAD + '\n' + '\n\n'.join(out) + '\n')
print(len(out), 'statements', file=sys.stderr)
for k in changed_objs: print('new or changed:', k, file=sys.stderr)
