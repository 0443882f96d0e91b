#!/usr/bin/env python3
"""Assembles postbox-sql, the SQL-only flavour, from the same sql/ sources as
the compiled extension:  python3 scripts/sql-flavour.py [OUT_DIR]

Writes, into OUT_DIR (default target/postbox-sql):
  postbox-sql--VERSION.sql   for `psql -v ON_ERROR_STOP=1 -f` by a role that
                             is not a superuser (one transaction);
  postbox-sql--VERSION.tle.sql
                             the same objects as a pg_tle extension script
                             (pgtle.install_extension('postbox', ...));
  postbox-sql--OLD--VERSION.sql and .tle.sql
                             the upgrade into VERSION from each released
                             postbox-sql version that the extension has an
                             upgrade script from (psql: one transaction that
                             checks the installed version; pg_tle: for
                             pgtle.install_update_path): the extension's
                             script with its Rust functions in their flavour
                             forms, sql/flavour/upgrades/ for the flavour's
                             own tables, then every flavour function again,
                             and PUBLIC's EXECUTE revoked as at an install.

A release freezes its install and the upgrade into it in
sql/released/flavour, as they shipped; the upgrade tests
(tests/tests/sql_flavour.rs) take each frozen install to this version.

The order is the extension's: the files extension/src/lib.rs lists with
extension_sql_file!, with the Rust functions' PL/pgSQL forms
(sql/flavour/*.sql) where pgrx puts the Rust ones: after the bootstrap file,
and the triggers before the finalize file. Placeholders in the flavour
files are filled from the Rust sources, so the lists and limits have one
home: /*@codes@*/ (rules/src/codes.rs), /*@reserved_headers@*/
(rules/src/headers.rs), /*@payload_bytes_default|min|max@*/
(rules/src/event.rs), and /*@chunk_bytes@*/ from the extension
(extension/src/trigger.rs). Nothing else is rewritten, but for
pg_extension_config_dump, which exists only inside CREATE EXTENSION: the
psql form leaves those calls out (pg_dump then dumps the rows with the
tables)."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sqltext import statements  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, 'target', 'postbox-sql')


def read(path):
    with open(os.path.join(ROOT, path), encoding='utf-8') as f:
        return f.read()


def version():
    m = re.search(r'\[workspace\.package\][^\[]*?\bversion\s*=\s*"([^"]+)"', read('Cargo.toml'), re.S)
    if not m:
        sys.exit('sql-flavour: no [workspace.package] version in Cargo.toml')
    return m.group(1)


def extension_files():
    """The sql/ files in extension/src/lib.rs order, with their roles."""
    lib = read('extension/src/lib.rs')
    files = re.findall(r'extension_sql_file!\(\s*"\.\./\.\./(sql/[^"]+)"\s*,\s*name\s*=\s*"(\w+)"([^;]*?)\);', lib, re.S)
    if not files:
        sys.exit('sql-flavour: no extension_sql_file! in extension/src/lib.rs')
    return [(path, 'bootstrap' in rest and 'bootstrap' or 'finalize' in rest and 'finalize' or '') for path, _, rest in files]


def codes():
    body = read('rules/src/codes.rs')
    body = body[body.index('codes! {'):]
    rows = re.findall(r'^\s+\w+ = "(\w+)"(?: @ "(\w+)")?,', body, re.M)
    if len(rows) < 10:
        sys.exit('sql-flavour: the codes in rules/src/codes.rs were not found')
    return ', '.join(f"('{name}', '{state or '22023'}')" for name, state in rows)


def reserved_headers():
    body = read('rules/src/headers.rs')
    m = re.search(r'pub const RESERVED: &\[&str\] = &\[(.*?)\];', body, re.S)
    if not m:
        sys.exit('sql-flavour: RESERVED in rules/src/headers.rs was not found')
    names = re.findall(r'"([a-z0-9-]+)"', m.group(1))
    return ', '.join(f"'{n}'" for n in names)


def payload_bytes():
    """The postbox.max_payload_bytes default and range (rules/src/event.rs)."""
    body = read('rules/src/event.rs')
    found = {}
    for name in ('DEFAULT', 'MIN', 'MAX'):
        m = re.search(rf'pub const PAYLOAD_BYTES_{name}: i32 = ([0-9_]+);', body)
        if not m:
            sys.exit(f'sql-flavour: PAYLOAD_BYTES_{name} in rules/src/event.rs was not found')
        found[f'/*@payload_bytes_{name.lower()}@*/'] = m.group(1).replace('_', '')
    return found


def chunk_bytes():
    """The size the statement trigger splits a statement's rows at
    (CHUNK_BYTES in extension/src/trigger.rs)."""
    m = re.search(r'const CHUNK_BYTES: usize = (\d+) << (\d+);', read('extension/src/trigger.rs'))
    if not m:
        sys.exit('sql-flavour: CHUNK_BYTES in extension/src/trigger.rs was not found')
    return str(int(m.group(1)) << int(m.group(2)))


def flavour(path):
    text = read(path)
    text = text.replace('/*@codes@*/', codes()).replace('/*@reserved_headers@*/', reserved_headers())
    text = text.replace('/*@chunk_bytes@*/', chunk_bytes())
    for placeholder, value in payload_bytes().items():
        text = text.replace(placeholder, value)
    if '/*@' in text:
        sys.exit(f'sql-flavour: {path} has a placeholder this script does not fill')
    return text


# The Rust functions' forms, in the order they are loaded (each file's
# SQL-language bodies may use the files before it).
NATIVE = ['settings.sql', 'native.sql', 'validate_url.sql']

# postbox-sql's first version: its upgrade scripts start there.
FIRST = '0.8.0'


def version_key(v):
    return tuple(int(x) for x in v.split('.'))


def flavour_functions():
    """The flavour files' function statements (CREATE as CREATE OR REPLACE,
    and their comments and grants), which every upgrade re-applies: a
    function holds no data, and its body may have changed. Also each
    definition by name, for the Rust functions an upgrade script adds."""
    out, defs = [], {}
    for f in NATIVE + ['triggers.sql']:
        for st in statements(flavour(f'sql/flavour/{f}')):
            m = re.match(r'CREATE FUNCTION postbox\.(\w+)\(', st)
            if m:
                st = 'CREATE OR REPLACE FUNCTION' + st[len('CREATE FUNCTION'):]
                defs[m.group(1)] = st
                out.append(st)
            elif re.match(r'(COMMENT ON|GRANT [A-Z, ]+ ON|REVOKE [A-Z, ]+ ON) FUNCTION ', st):
                out.append(st)
    return out, defs


def upgrade_body(old, new, for_tle):
    """postbox-sql's upgrade from old to new: the extension's upgrade script
    (sql/postbox--OLD--NEW.sql) with each Rust function it creates in its
    flavour's form, then sql/flavour/upgrades/postbox-sql--OLD--NEW.sql
    (what changes in the flavour's own tables, written by hand, if
    anything), then the flavour's functions re-applied."""
    functions, defs = flavour_functions()
    parts = []
    for st in statements(read(f'sql/postbox--{old}--{new}.sql')):
        m = re.match(r'CREATE (?:OR REPLACE )?FUNCTION postbox\."?(\w+)"?\(', st)
        if m and 'MODULE_PATHNAME' in st:
            if m.group(1) not in defs:
                sys.exit(f'sql-flavour: sql/postbox--{old}--{new}.sql creates the Rust function '
                         f'{m.group(1)}, which sql/flavour does not define')
            parts.append(defs[m.group(1)])
        elif not for_tle and st.startswith('SELECT pg_catalog.pg_extension_config_dump('):
            continue
        else:
            parts.append(st)
    own = f'sql/flavour/upgrades/postbox-sql--{old}--{new}.sql'
    if os.path.exists(os.path.join(ROOT, own)):
        parts += statements(flavour(own))
    # As a fresh install ends (sql/native.sql): a function made above keeps
    # no EXECUTE for PUBLIC.
    sweep = [st for st in statements(read('sql/native.sql')) if st.startswith('REVOKE ALL ON ALL ')]
    return (f'-- ===== sql/postbox--{old}--{new}.sql, then the flavour =====\n'
            + '\n\n'.join(parts + functions + sweep) + '\n')


def upgrades(current):
    """(old, current) for the extension's upgrade script into the current
    version, if postbox-sql had the old one. Upgrades into released
    versions are frozen in sql/released/flavour, as they shipped (they were generated
    from the flavour's sources of their day)."""
    found = []
    for f in os.listdir(os.path.join(ROOT, 'sql')):
        m = re.fullmatch(r'postbox--([0-9.]+)--([0-9.]+)\.sql', f)
        if m and m.group(2) == current and version_key(m.group(1)) >= version_key(FIRST):
            found.append((m.group(1), m.group(2)))
    return found


def version_function(v):
    return (f"CREATE OR REPLACE FUNCTION postbox._sql_flavour_version() RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT '{v}' $$;\n"
            "COMMENT ON FUNCTION postbox._sql_flavour_version() IS "
            "'Internal (SQL flavour installed with psql): the installed version, which an extension keeps in pg_extension.';\n"
            # PUBLIC keeps no EXECUTE, as on every other function (sql/native.sql).
            'REVOKE ALL ON FUNCTION postbox._sql_flavour_version() FROM PUBLIC;\n'
            'GRANT EXECUTE ON FUNCTION postbox._sql_flavour_version() TO postbox_admin, postbox_emitter, postbox_worker;\n')


def body(for_tle):
    parts = ['CREATE SCHEMA postbox;\n']
    on_disk = sorted(f for f in os.listdir(os.path.join(ROOT, 'sql', 'flavour')) if f.endswith('.sql'))
    if on_disk != sorted(NATIVE + ['triggers.sql']):
        sys.exit(f'sql-flavour: sql/flavour has {on_disk}; this script knows {NATIVE} and triggers.sql')
    natives = [f'sql/flavour/{f}' for f in NATIVE]
    for path, role in extension_files():
        if role == 'finalize':
            parts.append(f'-- ===== sql/flavour/triggers.sql =====\n' + flavour('sql/flavour/triggers.sql'))
        text = read(path)
        if not for_tle:
            text = re.sub(r"^SELECT pg_catalog\.pg_extension_config_dump\([^;]*\);\n", '', text, flags=re.M)
        parts.append(f'-- ===== {path} =====\n' + text)
        if role == 'bootstrap':
            for f in natives:
                parts.append(f'-- ===== {f} =====\n' + flavour(f))
    return '\n'.join(parts)


def main():
    v = version()
    os.makedirs(OUT, exist_ok=True)
    head = (f'-- postbox-sql {v}: postbox as plain SQL and PL/pgSQL, for PostgreSQL 14 to 18\n'
            '-- where a compiled extension cannot be installed (docs/managed.md).\n'
            '-- Generated by scripts/sql-flavour.py from sql/; do not edit.\n')
    psql = os.path.join(OUT, f'postbox-sql--{v}.sql')
    with open(psql, 'w', encoding='utf-8') as f:
        f.write(head + '-- Install: psql -v ON_ERROR_STOP=1 -f this file, as the role that will own postbox.\n\n'
                'BEGIN;\n\n' + body(False) + '\n' + version_function(v).replace('CREATE OR REPLACE', 'CREATE')
                + '\nCOMMIT;\n')
    tle = os.path.join(OUT, f'postbox-sql--{v}.tle.sql')
    with open(tle, 'w', encoding='utf-8') as f:
        f.write(head + '-- The extension script pg_tle runs (pgtle.install_extension).\n\n' + body(True))
    print(psql)
    print(tle)
    for old, new in upgrades(v):
        uhead = (f'-- postbox-sql {old} -> {new}. Generated by scripts/sql-flavour.py from\n'
                 f'-- sql/postbox--{old}--{new}.sql and sql/flavour; do not edit.\n')
        path = os.path.join(OUT, f'postbox-sql--{old}--{new}.sql')
        with open(path, 'w', encoding='utf-8') as f:
            f.write(uhead + '-- Upgrade: psql -v ON_ERROR_STOP=1 -f this file, as the role that owns postbox.\n\n'
                    'BEGIN;\n\n'
                    "DO $guard$ BEGIN\n"
                    f"    IF postbox._sql_flavour_version() IS DISTINCT FROM '{old}' THEN\n"
                    f"        RAISE EXCEPTION 'postbox-sql: this script upgrades {old} to {new}; % is installed',\n"
                    "            postbox._sql_flavour_version();\n"
                    "    END IF;\n"
                    "END $guard$;\n\n"
                    + upgrade_body(old, new, False) + '\n' + version_function(new) + '\nCOMMIT;\n')
        print(path)
        path = os.path.join(OUT, f'postbox-sql--{old}--{new}.tle.sql')
        with open(path, 'w', encoding='utf-8') as f:
            f.write(uhead + '-- The update script pg_tle runs (pgtle.install_update_path).\n\n'
                    + upgrade_body(old, new, True))
        print(path)


if __name__ == '__main__':
    main()
