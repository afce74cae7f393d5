#!/usr/bin/env python3
"""Product databases for the quickstart and the SQLite benchmark: SQLite files shaped like
a multi-tenant SaaS (identity, tracker, wiki), and a writer that keeps changing them.

    product_data.py create DIR TENANTS
    product_data.py write DIR TENANTS SECONDS [SEED]   (prints transactions committed)
"""
import os
import random
import sqlite3
import sys
import time

SCHEMAS = {
    "identity": """
        PRAGMA journal_mode = WAL;
        CREATE TABLE sites (id INTEGER PRIMARY KEY, url TEXT NOT NULL, edition TEXT);
        CREATE TABLE users (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL, email TEXT, avatar BLOB);
        CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT);
    """,
    "tracker": """
        PRAGMA journal_mode = WAL;
        CREATE TABLE issues (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL, title TEXT, estimate REAL);
        CREATE TABLE comments (id INTEGER PRIMARY KEY, issue_id INTEGER NOT NULL REFERENCES issues(id) ON DELETE CASCADE, body TEXT);
    """,
    "wiki": """
        PRAGMA journal_mode = WAL;
        CREATE TABLE pages (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL, title TEXT, body TEXT);
    """,
}


def connect(directory, name):
    conn = sqlite3.connect(os.path.join(directory, name + ".db"), timeout=30, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def create(directory, tenants):
    rng = random.Random(1)
    for name, schema in SCHEMAS.items():
        conn = connect(directory, name)
        conn.executescript(schema)
        conn.execute("BEGIN")
        for site in range(1, tenants + 1):
            if name == "identity":
                conn.execute("INSERT INTO sites VALUES (?, ?, ?)", (site, f"https://site{site}.example.net", rng.choice(["free", "standard", "premium"])))
                for u in range(3):
                    conn.execute("INSERT INTO users (site_id, email, avatar) VALUES (?, ?, ?)", (site, f"user{u}@site{site}.example.net", bytes([u, site % 256])))
            elif name == "tracker":
                for i in range(5):
                    cur = conn.execute("INSERT INTO issues (site_id, title, estimate) VALUES (?, ?, ?)", (site, f"issue {i}", rng.random() * 10))
                    conn.execute("INSERT INTO comments (issue_id, body) VALUES (?, ?)", (cur.lastrowid, "first"))
            else:
                conn.execute("INSERT INTO pages (site_id, title, body) VALUES (?, 'Home', 'Welcome')", (site,))
        if name == "identity":
            conn.execute("INSERT INTO settings VALUES ('theme', 'dark')")
        conn.execute("COMMIT")
        conn.close()


def write(directory, tenants, seconds, seed):
    rng = random.Random(seed)
    conns = {name: connect(directory, name) for name in SCHEMAS}
    deadline = time.monotonic() + seconds
    committed = 0
    while time.monotonic() < deadline:
        site = rng.randint(1, tenants)
        op = rng.randrange(6)
        try:
            if op == 0:
                t = conns["tracker"]
                t.execute("BEGIN")
                cur = t.execute("INSERT INTO issues (site_id, title, estimate) VALUES (?, 'new', ?)", (site, rng.random()))
                t.execute("INSERT INTO comments (issue_id, body) VALUES (?, 'hello')", (cur.lastrowid,))
                t.execute("COMMIT")
            elif op == 1:
                conns["tracker"].execute("UPDATE issues SET title = title || '!' WHERE id = (SELECT max(id) FROM issues WHERE site_id = ?)", (site,))
            elif op == 2:
                conns["tracker"].execute("DELETE FROM issues WHERE id = (SELECT min(id) FROM issues WHERE site_id = ?)", (site,))
            elif op == 3:
                conns["wiki"].execute("UPDATE pages SET body = ? WHERE site_id = ?", (f"edited {rng.randrange(1000)}", site))
            elif op == 4:
                w = conns["wiki"]
                w.execute("BEGIN")
                w.execute("INSERT INTO pages (site_id, title, body) VALUES (?, 'Notes', 'text')", (site,))
                w.execute("DELETE FROM pages WHERE id = (SELECT min(id) FROM pages WHERE site_id = ? AND title = 'Notes') AND (SELECT count(*) FROM pages WHERE site_id = ?) > 3", (site, site))
                w.execute("COMMIT")
            else:
                conns["identity"].execute("UPDATE users SET email = 'changed' || email WHERE id = (SELECT max(id) FROM users WHERE site_id = ?)", (site,))
            committed += 1
        except sqlite3.OperationalError:
            for c in conns.values():
                if c.in_transaction:
                    c.execute("ROLLBACK")
    print(committed)


if __name__ == "__main__":
    command, directory, tenants = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if command == "create":
        create(directory, tenants)
    elif command == "write":
        write(directory, tenants, float(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else 7)
    else:
        sys.exit(f"unknown command {command}")
