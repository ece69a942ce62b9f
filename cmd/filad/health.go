package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// health is `filad health`: a probe for container and service managers
// (the Dockerfile's HEALTHCHECK). It asks a running filad's gRPC health
// service, which needs no API key, and succeeds only for SERVING.
func health(args []string) error {
	fs := flag.NewFlagSet("filad health", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:5555", "filad's address")
	caFile := fs.String("tls-ca", "", "CA certificate (PEM) to verify a TLS listener with; plaintext without it")
	timeout := fs.Duration("timeout", 5*time.Second, "how long the probe may take")
	if help, err := parseFlags(fs, args, "usage: filad health [--addr ADDR] [--tls-ca FILE] [--timeout D]"); help || err != nil {
		return err
	}
	creds := insecure.NewCredentials()
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fmt.Errorf("--tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--tls-ca: %s holds no PEM certificate", *caFile)
		}
		creds = credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("health of %s: %w", *addr, err)
	}
	if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health of %s: %s", *addr, s)
	}
	fmt.Println("SERVING")
	return nil
}
