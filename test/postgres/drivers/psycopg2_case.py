"""The driver workload with psycopg2 (Debian python3-psycopg2): a server-side prepared statement,
1,000 rows through a named (server-side) cursor, an error, a rolled-back and a committed
transaction. Prints one JSON object per step; the DSN comes from TG_DSN."""
import json
import os
import select
import sys
import time

import psycopg2
import psycopg2.errors


def out(**kw):
    print(json.dumps(kw), flush=True)


conn = psycopg2.connect(os.environ["TG_DSN"])
out(step="connect", server_version=conn.server_version, user=conn.get_dsn_parameters().get("user"))
cur = conn.cursor()
cur.execute("SELECT current_user")
out(step="whoami", user=cur.fetchone()[0])

cur.execute("PREPARE by_id(int) AS SELECT name FROM accounts WHERE id = $1")
names = []
for i in [1, 2, 3, 1, 2, 3, 1]:
    cur.execute("EXECUTE by_id(%s)", (i,))
    names.append(cur.fetchone()[0])
out(step="prepared", names=names)
conn.commit()

big = conn.cursor(name="big_rows")
big.itersize = 100
big.execute("SELECT g AS n, md5(g::text) AS h FROM generate_series(1, 1000) AS g")
n = 0
total = 0
last = None
for row in big:
    n += 1
    total += row[0]
    last = row[1]
big.close()
conn.commit()
out(step="rows", count=n, sum=total, last=last)

try:
    cur.execute("SELECT 1/0")
    out(step="error", code=None)
except psycopg2.Error as e:
    out(step="error", code=e.pgcode, message=e.pgerror.strip().splitlines()[0] if e.pgerror else str(e))
    conn.rollback()
cur.execute("SELECT 41 + 1")
out(step="after_error", value=cur.fetchone()[0])

cur.execute("CREATE TEMP TABLE drv (id int)")
conn.commit()
cur.execute("INSERT INTO drv VALUES (1)")
conn.rollback()
cur.execute("INSERT INTO drv VALUES (2), (3)")
conn.commit()
cur.execute("SELECT array_agg(id ORDER BY id) FROM drv")
out(step="transaction", ids=cur.fetchone()[0])

if os.environ.get("TG_MALFORMED"):
    # A driver whose connection carries a malformed message: an unknown message type 'y'. The
    # answer (a FATAL ErrorResponse, then the close) arrives while the connection is idle, so libpq
    # hands it to the notice processor, exactly as for the same message sent to PostgreSQL itself.
    os.write(conn.fileno(), b"y\x00\x00\x00\x04")
    select.select([conn.fileno()], [], [], 10)
    time.sleep(0.2)
    try:
        conn.poll()
        polled = None
    except psycopg2.Error as e:
        polled = str(e).strip().splitlines()[0]
    out(step="malformed", notices=[n.strip() for n in conn.notices], polled=polled, closed=conn.closed)
    sys.exit(0)
conn.close()
out(step="done")
