// A TLS peer for airtrust's tests: Java's HttpsURLConnection with the JVM's default
// truststore (the image's cacerts), as a researcher's Java client would connect.
//
//   java -cp DIR Fetch https://host:port/path
//
// Exit 0 on HTTP 200, 1 on an HTTP error, 2 when the connection fails (the
// exception, e.g. PKIX path building failed, is printed on stderr).
import java.net.URL;
import javax.net.ssl.HttpsURLConnection;

public class Fetch {
    public static void main(String[] args) throws Exception {
        try {
            HttpsURLConnection connection = (HttpsURLConnection) new URL(args[0]).openConnection();
            connection.setConnectTimeout(10000);
            connection.setReadTimeout(10000);
            int status = connection.getResponseCode();
            connection.getInputStream().readAllBytes();
            System.out.println("HTTP " + status);
            System.exit(status == 200 ? 0 : 1);
        } catch (java.io.IOException e) {
            System.err.println(e);
            System.exit(2);
        }
    }
}
