"""PyMySQL through the gateway: a parameterised query, 1,000 rows, an error, a transaction.

Usage: pymysql_case.py HOST PORT USER DATABASE   (the password in TG_PASSWORD)
Prints one JSON object per step. PyMySQL binds parameters on the client (no server-side
prepared statements); what reaches the server is the statement with the values in it.
"""
import json
import os
import sys

import pymysql

host, port, user, database = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
conn = pymysql.connect(host=host, port=port, user=user, password=os.environ["TG_PASSWORD"], database=database, autocommit=True)


def out(**kw):
    print(json.dumps(kw), flush=True)


with conn.cursor() as c:
    c.execute("SELECT id, v FROM items WHERE id > %s ORDER BY id", (995,))
    out(step="prepared", rows=[list(r) for r in c.fetchall()])
    c.execute("SELECT seq, CONCAT('row ', seq) AS label FROM seq_1_to_1000")
    rows = c.fetchall()
    out(step="many", count=len(rows), sum=sum(r[0] for r in rows), last=rows[-1][1])
    try:
        c.execute("SELECT * FROM no_such_table")
        out(step="error", code=None)
    except pymysql.err.MySQLError as e:
        out(step="error", code=e.args[0], message=e.args[1])
    conn.begin()
    c.execute("INSERT INTO items VALUES (2000, 'rolled back')")
    conn.rollback()
    c.execute("SELECT COUNT(*) FROM items WHERE id = 2000")
    rolled = c.fetchone()[0]
    conn.begin()
    c.execute("INSERT INTO items VALUES (2001, 'committed')")
    conn.commit()
    c.execute("SELECT COUNT(*) FROM items WHERE id = 2001")
    out(step="tx", rolledBack=rolled, committed=c.fetchone()[0])
conn.close()
