// The driver workload with pgJDBC (Debian libpostgresql-jdbc-java, the driver DBeaver and DataGrip
// use): a PreparedStatement run 7 times (past prepareThreshold=5, so pgJDBC switches to a named
// server-side statement), 1,000 rows fetched 100 at a time (a portal with a row limit), an error, a
// rolled-back and a committed transaction. One JSON object per line; URL, user, password in args.
import java.sql.*;
import java.util.*;

public class PgJdbcCase {
  static void out(String json) { System.out.println(json); System.out.flush(); }
  static String q(String s) { return s == null ? "null" : "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\""; }

  public static void main(String[] a) throws Exception {
    Properties p = new Properties();
    p.setProperty("user", a[1]);
    p.setProperty("password", a[2]);
    try (Connection c = DriverManager.getConnection(a[0], p)) {
      out("{\"step\":\"connect\",\"version\":" + q(c.getMetaData().getDatabaseProductVersion()) + "}");
      try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT current_user")) {
        r.next();
        out("{\"step\":\"whoami\",\"user\":" + q(r.getString(1)) + "}");
      }
      List<String> names = new ArrayList<>();
      boolean serverPrepared = false;
      try (PreparedStatement ps = c.prepareStatement("SELECT name FROM accounts WHERE id = ?")) {
        for (int id : new int[] {1, 2, 3, 1, 2, 3, 1}) {
          ps.setInt(1, id);
          try (ResultSet r = ps.executeQuery()) { r.next(); names.add(q(r.getString(1))); }
        }
        serverPrepared = ps.unwrap(org.postgresql.PGStatement.class).isUseServerPrepare();
      }
      out("{\"step\":\"prepared\",\"names\":" + names + ",\"serverPrepared\":" + serverPrepared + "}");

      c.setAutoCommit(false);
      long n = 0, sum = 0;
      String last = null;
      try (PreparedStatement ps = c.prepareStatement("SELECT g AS n, md5(g::text) AS h FROM generate_series(1, 1000) AS g")) {
        ps.setFetchSize(100);
        try (ResultSet r = ps.executeQuery()) {
          while (r.next()) { n++; sum += r.getLong(1); last = r.getString(2); }
        }
      }
      c.commit();
      out("{\"step\":\"rows\",\"count\":" + n + ",\"sum\":" + sum + ",\"last\":" + q(last) + "}");

      try (Statement s = c.createStatement()) {
        s.executeQuery("SELECT 1/0");
        out("{\"step\":\"error\",\"code\":null}");
      } catch (SQLException e) {
        out("{\"step\":\"error\",\"code\":" + q(e.getSQLState()) + ",\"message\":" + q(e.getMessage().split("\n")[0]) + "}");
        c.rollback();
      }
      try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT 41 + 1")) {
        r.next();
        out("{\"step\":\"after_error\",\"value\":" + r.getInt(1) + "}");
      }
      c.commit();

      try (Statement s = c.createStatement()) {
        s.execute("CREATE TEMP TABLE drv (id int)");
        c.commit();
        s.executeUpdate("INSERT INTO drv VALUES (1)");
        c.rollback();
        s.executeUpdate("INSERT INTO drv VALUES (2), (3)");
        c.commit();
        try (ResultSet r = s.executeQuery("SELECT array_agg(id ORDER BY id)::text FROM drv")) {
          r.next();
          out("{\"step\":\"transaction\",\"ids\":" + q(r.getString(1)) + "}");
        }
        c.commit();
      }
    }
    out("{\"step\":\"done\"}");
  }
}
