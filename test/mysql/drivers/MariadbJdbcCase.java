import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;

/**
 * MariaDB Connector/J through the gateway: a server-side prepared statement, 1,000 rows, an
 * error, a transaction. Usage: java -cp mariadb-java-client.jar MariadbJdbcCase.java URL
 * (the password in TG_PASSWORD). Prints one JSON object per step.
 */
public class MariadbJdbcCase {
  static void out(String json) { System.out.println(json); System.out.flush(); }

  static String q(String s) { return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\""; }

  public static void main(String[] args) throws Exception {
    try (Connection c = DriverManager.getConnection(args[0], args[1], System.getenv("TG_PASSWORD"))) {
      try (PreparedStatement ps = c.prepareStatement("SELECT id, v FROM items WHERE id > ? ORDER BY id")) {
        ps.setInt(1, 995);
        StringBuilder rows = new StringBuilder();
        try (ResultSet rs = ps.executeQuery()) {
          while (rs.next()) rows.append(rows.length() > 0 ? "," : "").append("[").append(rs.getInt(1)).append(",").append(q(rs.getString(2))).append("]");
        }
        out("{\"step\":\"prepared\",\"rows\":[" + rows + "]}");
      }
      try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT seq, CONCAT('row ', seq) AS label FROM seq_1_to_1000")) {
        long n = 0, sum = 0;
        String last = "";
        while (rs.next()) { n++; sum += rs.getLong(1); last = rs.getString(2); }
        out("{\"step\":\"many\",\"count\":" + n + ",\"sum\":" + sum + ",\"last\":" + q(last) + "}");
      }
      try (Statement st = c.createStatement()) {
        st.executeQuery("SELECT * FROM no_such_table");
        out("{\"step\":\"error\",\"code\":null}");
      } catch (SQLException e) {
        out("{\"step\":\"error\",\"code\":" + e.getErrorCode() + ",\"state\":" + q(e.getSQLState()) + ",\"message\":" + q(e.getMessage()) + "}");
      }
      c.setAutoCommit(false);
      long rolled, committed;
      try (Statement st = c.createStatement()) {
        st.executeUpdate("INSERT INTO items VALUES (2000, 'rolled back')");
        c.rollback();
        try (ResultSet rs = st.executeQuery("SELECT COUNT(*) FROM items WHERE id = 2000")) { rs.next(); rolled = rs.getLong(1); }
        st.executeUpdate("INSERT INTO items VALUES (2001, 'committed')");
        c.commit();
        try (ResultSet rs = st.executeQuery("SELECT COUNT(*) FROM items WHERE id = 2001")) { rs.next(); committed = rs.getLong(1); }
      }
      c.setAutoCommit(true);
      out("{\"step\":\"tx\",\"rolledBack\":" + rolled + ",\"committed\":" + committed + "}");
    }
  }
}
