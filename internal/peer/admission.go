package peer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"time"
)

// Admission makes both ends of every peer connection prove that they know the cluster token
// before anything else on the connection is read: the client sends its proof first, the server
// checks it and only then answers with its own, which the client checks before it writes the
// protocol byte. A server therefore never hands a proof to a dialer that has not given one, so
// a stranger learns nothing it could test guesses of the token against.
//
// A proof is HMAC-SHA256, keyed with a key derived from the token, over a role byte (client
// and server proofs differ, so one cannot be reflected as the other) and 32 bytes of keying
// material exported from the TLS session (RFC 8446 section 7.5). The exporter value is unique
// to the session, so a proof is bound to its channel: one seen by a man in the middle, which
// had to terminate TLS on each side separately, is worthless on the other side. That is also
// why certificates need not be verified when the token is the only credential (EphemeralTLS).
//
// An Admission holds the derived key, never the token. It is safe for concurrent use.
type Admission struct {
	key [sha256.Size]byte
}

// ErrAdmission means the other end of a peer connection did not prove knowledge of the
// cluster token (or spoke another protocol).
var ErrAdmission = errors.New("ember: peer admission refused")

const (
	admissionVersion byte = 1
	// proofSize is a proof message: the version byte and an HMAC-SHA256.
	proofSize = 1 + sha256.Size

	exporterLabel = "EXPORTER-ember-peer-admission"

	roleClient byte = 'C'
	roleServer byte = 'S'
)

// NewAdmission derives the admission key from token, which must not be empty (the caller
// checks).
func NewAdmission(token string) *Admission {
	// A fixed label keeps the key apart from any other use of the same secret.
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write([]byte("ember peer admission key v1"))
	a := &Admission{}
	mac.Sum(a.key[:0])
	return a
}

// String keeps the key out of logs and %v output.
func (a *Admission) String() string { return "peer.Admission{key:redacted}" }

// GoString keeps the key out of %#v output.
func (a *Admission) GoString() string { return a.String() }

// proof is the message role sends on the TLS session cs.
func (a *Admission) proof(cs tls.ConnectionState, role byte) ([]byte, error) {
	ekm, err := cs.ExportKeyingMaterial(exporterLabel, nil, 32)
	if err != nil {
		// TLS 1.2 without the extended master secret extension has no safe exporter.
		return nil, fmt.Errorf("TLS keying material export: %w", err)
	}
	mac := hmac.New(sha256.New, a.key[:])
	mac.Write([]byte{role})
	mac.Write(ekm)
	return mac.Sum([]byte{admissionVersion}), nil
}

// verifyProof checks a received proof message against the expected one, in constant time.
func verifyProof(got, want []byte) error {
	if len(got) != proofSize || got[0] != admissionVersion {
		return fmt.Errorf("%w: not an admission proof of this version", ErrAdmission)
	}
	if !hmac.Equal(got, want) {
		return fmt.Errorf("%w: wrong proof (a different cluster token)", ErrAdmission)
	}
	return nil
}

// admitServer runs the server's side on an established TLS connection: it reads and checks the
// client's proof and, only if it holds, sends its own. On error the caller closes the
// connection without sending anything more.
func (a *Admission) admitServer(c *tls.Conn) error {
	cs := c.ConnectionState()
	want, err := a.proof(cs, roleClient)
	if err != nil {
		return err
	}
	got := make([]byte, proofSize)
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("%w: reading the proof: %w", ErrAdmission, err)
	}
	if err := verifyProof(got, want); err != nil {
		return err
	}
	mine, err := a.proof(cs, roleServer)
	if err != nil {
		return err
	}
	if _, err := c.Write(mine); err != nil {
		return fmt.Errorf("sending the proof: %w", err)
	}
	return nil
}

// admitClient runs the dialer's side on an established TLS connection: it sends its proof and
// checks the server's answer.
func (a *Admission) admitClient(c *tls.Conn) error {
	cs := c.ConnectionState()
	mine, err := a.proof(cs, roleClient)
	if err != nil {
		return err
	}
	want, err := a.proof(cs, roleServer)
	if err != nil {
		return err
	}
	if _, err := c.Write(mine); err != nil {
		return fmt.Errorf("sending the proof: %w", err)
	}
	got := make([]byte, proofSize)
	if _, err := io.ReadFull(c, got); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			// A server refuses a proof by closing the connection.
			return fmt.Errorf("%w: the peer closed the connection (a different cluster token, or none)", ErrAdmission)
		}
		return fmt.Errorf("%w: reading the proof: %w", ErrAdmission, err)
	}
	return verifyProof(got, want)
}

// EphemeralTLS returns TLS 1.3 configurations for a cluster whose only credential is the token:
// the server presents a self-signed certificate made here, and the client accepts any
// certificate. Authentication is the Admission proof, bound to the session; TLS provides the
// encryption and the exporter the proof is bound to.
func EphemeralTLS() (server, client *tls.Config, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("ember: generate peer key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("ember: generate peer certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "ember peer"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(100 * 365 * 24 * time.Hour), // never checked; the member's lifetime
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("ember: create peer certificate: %w", err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	server = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	// Verification is replaced by the admission proof (see Admission).
	client = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	return server, client, nil
}

// admitConn runs adm's side of the proof on conn, which must be a TLS connection.
func admitConn(conn net.Conn, adm *Admission, server bool) error {
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return errors.New("ember: peer admission needs TLS")
	}
	if server {
		return adm.admitServer(tc)
	}
	return adm.admitClient(tc)
}
