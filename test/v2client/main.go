// Command v2client is an SDS v2 client that behaves like Envoy 1.16 (the last App Mesh Envoys
// speak only v2), built on the upstream generated v2 types and validators of
// github.com/envoyproxy/go-control-plane v0.9.9, so the proof does not rest on our own .proto files.
//
// Like Envoy outside ADS (source/common/secret/sds_api.cc, grpc_mux_impl.cc of Envoy 1.16) it opens
// one envoy.service.discovery.v2.SecretDiscoveryService/StreamSecrets stream per secret name, all
// on one HTTP/2 connection to the Unix socket; the first request carries the node
// (user_agent_name "envoy", a 1.16 build version), later ones omit it
// (set_node_on_first_message_only). Every response is checked as Envoy checks it: exactly one
// resource of the Secret type, named as asked, the upstream PGV Validate(), then the content: a
// tls_certificate's chain must parse and its private key must match the leaf; a
// validation_context's trusted_ca must hold at least one certificate. A good response is ACKed
// (version_info = its version, response_nonce = its nonce); a bad one is NACKed (version_info =
// the last accepted version, error_detail code INTERNAL with the reason), as Envoy does.
//
// Usage: v2client -socket /path/sds.sock -names a,b,c [-node-id id]
//
// Output: one JSON object per line on stdout, for the test that drives it:
//
//	{"event":"accepted","name":"default","version":"...","kind":"tls_certificate","serial":"0a1b...","changed":true}
//	{"event":"nacked","name":"x","version":"...","reason":"..."}
//	{"event":"closed","name":"x","code":"InvalidArgument","message":"..."}
//
// It runs until stdin is closed (or SIGTERM), then exits 0. Exit code 2: bad arguments or no
// connection.
package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	apiv2 "github.com/envoyproxy/go-control-plane/envoy/api/v2"
	authv2 "github.com/envoyproxy/go-control-plane/envoy/api/v2/auth"
	corev2 "github.com/envoyproxy/go-control-plane/envoy/api/v2/core"
	discoveryv2 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v2"
	typev2 "github.com/envoyproxy/go-control-plane/envoy/type"
	"github.com/golang/protobuf/ptypes"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// SecretTypeURL is the v2 Secret type (resource.TypeURL of Envoy's v2 SDS).
const SecretTypeURL = "type.googleapis.com/envoy.api.v2.auth.Secret"

var out = struct {
	sync.Mutex
	enc *json.Encoder
}{enc: json.NewEncoder(os.Stdout)}

func emit(event map[string]interface{}) {
	out.Lock()
	defer out.Unlock()
	_ = out.enc.Encode(event)
}

// envoyNode is the node Envoy 1.16.0 sends: user_agent_name "envoy", user_agent_build_version
// 1.16.0 and the deprecated build_version string Envoy still filled in then.
func envoyNode(id string) *corev2.Node {
	return &corev2.Node{
		Id:            id,
		Cluster:       "v2client",
		UserAgentName: "envoy",
		UserAgentVersionType: &corev2.Node_UserAgentBuildVersion{UserAgentBuildVersion: &corev2.BuildVersion{
			Version: &typev2.SemanticVersion{MajorNumber: 1, MinorNumber: 16, Patch: 0},
		}},
		BuildVersion: "e98e41a8e168af7acae8079fc0cd68155f699aa3/1.16.0/Clean/RELEASE/BoringSSL",
	}
}

// checkSecret applies Envoy's checks to one response; it returns the decoded Secret or the reason
// Envoy would give for its NACK.
func checkSecret(name string, res *apiv2.DiscoveryResponse) (*authv2.Secret, error) {
	if res.GetTypeUrl() != SecretTypeURL {
		return nil, fmt.Errorf("unexpected type_url %q", res.GetTypeUrl())
	}
	switch n := len(res.GetResources()); {
	case n == 0:
		return nil, errors.New("Missing SDS resources for " + name + " in envoy.api.v2.auth.Secret")
	case n > 1:
		return nil, fmt.Errorf("Unexpected SDS secrets length: %d", n)
	}
	anyRes := res.GetResources()[0]
	if anyRes.GetTypeUrl() != SecretTypeURL {
		return nil, fmt.Errorf("Unexpected resource type %q", anyRes.GetTypeUrl())
	}
	secret := &authv2.Secret{}
	if err := ptypes.UnmarshalAny(anyRes, secret); err != nil {
		return nil, fmt.Errorf("cannot decode the Secret: %v", err)
	}
	if err := secret.Validate(); err != nil {
		return nil, fmt.Errorf("Proto constraint validation failed (%v)", err)
	}
	if secret.GetName() != name {
		return nil, fmt.Errorf("Unexpected SDS secret (expecting %s): %s", name, secret.GetName())
	}
	switch {
	case secret.GetTlsCertificate() != nil:
		tc := secret.GetTlsCertificate()
		chain := tc.GetCertificateChain().GetInlineBytes()
		if chain == nil {
			chain = []byte(tc.GetCertificateChain().GetInlineString())
		}
		key := tc.GetPrivateKey().GetInlineBytes()
		if key == nil {
			key = []byte(tc.GetPrivateKey().GetInlineString())
		}
		// Parses every certificate of the chain and fails when the key does not match the leaf
		// (Envoy: SSL_CTX_use_PrivateKey).
		if _, err := tls.X509KeyPair(chain, key); err != nil {
			return nil, fmt.Errorf("Failed to load certificate chain and private key: %v", err)
		}
	case secret.GetValidationContext() != nil:
		ca := secret.GetValidationContext().GetTrustedCa()
		data := ca.GetInlineBytes()
		if data == nil {
			data = []byte(ca.GetInlineString())
		}
		certs, err := parseCertificates(data)
		if err != nil {
			return nil, fmt.Errorf("Failed to load trusted CA certificates from <inline>: %v", err)
		}
		if len(certs) == 0 {
			return nil, errors.New("Failed to load trusted CA certificates from <inline>")
		}
	default:
		return nil, errors.New("Secret has neither tls_certificate nor validation_context")
	}
	return secret, nil
}

func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// summary: the kind of secret, the serial of its leaf (tls_certificate) or first CA, and a hash of
// its content (Envoy ignores an update whose content hash did not change).
func summary(s *authv2.Secret) (kind, serial, hash string) {
	var pemData []byte
	if tc := s.GetTlsCertificate(); tc != nil {
		kind, pemData = "tls_certificate", tc.GetCertificateChain().GetInlineBytes()
	} else {
		kind, pemData = "validation_context", s.GetValidationContext().GetTrustedCa().GetInlineBytes()
	}
	if certs, err := parseCertificates(pemData); err == nil && len(certs) > 0 {
		serial = certs[0].SerialNumber.Text(16)
	}
	sum := sha256.Sum256([]byte(s.String()))
	return kind, serial, hex.EncodeToString(sum[:])
}

// watch runs one StreamSecrets stream for one name until ctx ends or the server ends the stream.
func watch(ctx context.Context, client discoveryv2.SecretDiscoveryServiceClient, node *corev2.Node, name string) {
	stream, err := client.StreamSecrets(ctx)
	if err != nil {
		emit(map[string]interface{}{"event": "closed", "name": name, "code": status.Code(err).String(), "message": err.Error()})
		return
	}
	if err := stream.Send(&apiv2.DiscoveryRequest{Node: node, ResourceNames: []string{name}, TypeUrl: SecretTypeURL}); err != nil {
		emit(map[string]interface{}{"event": "closed", "name": name, "code": status.Code(err).String(), "message": err.Error()})
		return
	}
	acceptedVersion, acceptedHash := "", ""
	for {
		res, err := stream.Recv()
		if err != nil {
			if err == io.EOF {
				err = status.Error(codes.OK, "stream ended by the server")
			}
			if ctx.Err() == nil {
				emit(map[string]interface{}{"event": "closed", "name": name, "code": status.Code(err).String(), "message": status.Convert(err).Message()})
			}
			return
		}
		req := &apiv2.DiscoveryRequest{ResourceNames: []string{name}, TypeUrl: SecretTypeURL, ResponseNonce: res.GetNonce()}
		secret, problem := checkSecret(name, res)
		if problem != nil {
			req.VersionInfo = acceptedVersion
			req.ErrorDetail = &rpcstatus.Status{Code: int32(codes.Internal), Message: problem.Error()}
			emit(map[string]interface{}{"event": "nacked", "name": name, "version": res.GetVersionInfo(), "reason": problem.Error()})
		} else {
			kind, serial, hash := summary(secret)
			req.VersionInfo = res.GetVersionInfo()
			emit(map[string]interface{}{"event": "accepted", "name": name, "version": res.GetVersionInfo(), "kind": kind, "serial": serial, "changed": hash != acceptedHash})
			acceptedVersion, acceptedHash = res.GetVersionInfo(), hash
		}
		if err := stream.Send(req); err != nil && ctx.Err() == nil {
			emit(map[string]interface{}{"event": "closed", "name": name, "code": status.Code(err).String(), "message": err.Error()})
			return
		}
	}
}

func main() {
	socket := flag.String("socket", "", "path of the SDS server's Unix socket")
	names := flag.String("names", "", "comma-separated secret names, one stream each")
	nodeID := flag.String("node-id", "v2client", "node id")
	flag.Parse()
	if *socket == "" || *names == "" {
		fmt.Fprintln(os.Stderr, "usage: v2client -socket PATH -names a,b,c")
		os.Exit(2)
	}
	conn, err := grpc.Dial("passthrough:///sds", grpc.WithInsecure(),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", *socket)
		}))
	if err != nil {
		fmt.Fprintf(os.Stderr, "v2client: %v\n", err)
		os.Exit(2)
	}
	defer conn.Close()

	ctx, cancel := context.WithCancel(context.Background())
	go func() { // stdin closed or SIGTERM: stop
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		cancel()
	}()

	client := discoveryv2.NewSecretDiscoveryServiceClient(conn)
	node := envoyNode(*nodeID)
	if err := node.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "v2client: node: %v\n", err)
		os.Exit(2)
	}
	var wg sync.WaitGroup
	for _, name := range strings.Split(*names, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		wg.Add(1)
		go func(name string) {
			defer wg.Done()
			watch(ctx, client, node, name)
		}(name)
	}
	emit(map[string]interface{}{"event": "started", "names": *names})
	<-ctx.Done()
	wg.Wait()
}
