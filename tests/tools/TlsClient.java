// A TLS peer for airtrust's tests: Java's JSSE with a truststore airtrust wrote.
//
//   java -Djavax.net.ssl.trustStore=ts -Djavax.net.ssl.trustStoreType=JKS|PKCS12 \
//        -Djavax.net.ssl.trustStorePassword=changeit TlsClient 127.0.0.1 8443 runai.example.test
//
// Connects to the address, sends the name as SNI and checks it as HTTPS
// endpoint identity. Exit 0 when the handshake verified, 1 otherwise.
import java.net.InetSocketAddress;
import java.net.Socket;
import java.util.List;
import javax.net.ssl.SNIHostName;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.SSLSocketFactory;

public class TlsClient {
    public static void main(String[] args) throws Exception {
        String address = args[0];
        int port = Integer.parseInt(args[1]);
        String name = args[2];
        try (Socket plain = new Socket()) {
            plain.connect(new InetSocketAddress(address, port), 10000);
            SSLSocketFactory factory = (SSLSocketFactory) SSLSocketFactory.getDefault();
            SSLSocket socket = (SSLSocket) factory.createSocket(plain, name, port, true);
            SSLParameters params = socket.getSSLParameters();
            params.setServerNames(List.of(new SNIHostName(name)));
            params.setEndpointIdentificationAlgorithm("HTTPS");
            socket.setSSLParameters(params);
            socket.startHandshake();
            System.out.println("verified " + socket.getSession().getPeerPrincipal());
        } catch (javax.net.ssl.SSLException e) {
            System.err.println(e);
            System.exit(1);
        }
    }
}
