// Command tlsclient is a TLS peer for airtrust's tests: Go's crypto/tls and
// crypto/x509 verify the server the way every Go program on the platform
// does (git-sync, goofys, the Run:ai CLI).
//
//	tlsclient -connect 127.0.0.1:8443 -servername runai.example.test [-cafile ca.pem]
//
// Without -cafile it uses the system roots (SSL_CERT_FILE / SSL_CERT_DIR
// are honoured). Exit 0 when the handshake verified, 1 otherwise.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	connect := flag.String("connect", "", "address to dial")
	serverName := flag.String("servername", "", "name to verify and send as SNI")
	caFile := flag.String("cafile", "", "PEM bundle to trust instead of the system roots")
	flag.Parse()

	config := &tls.Config{ServerName: *serverName}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fmt.Fprintln(os.Stderr, "no certificates in", *caFile)
			os.Exit(2)
		}
		config.RootCAs = pool
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", *connect, config)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer conn.Close()
	state := conn.ConnectionState()
	fmt.Println("verified", state.VerifiedChains[0][0].Subject.String())
}
