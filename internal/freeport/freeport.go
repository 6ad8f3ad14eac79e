// Package freeport hands out loopback addresses for test and demo members to bind, never the
// same one twice in a process and never one the kernel may give an outgoing connection.
//
// The usual trick, a listener on port 0 closed again, fails two ways once members restart on
// their address and clusters are built in a loop: the kernel may return the same free port on
// the next call (two members of one cluster then share an address), and it takes the source
// ports of outgoing connections from the same ephemeral range, so a member that is down for a
// moment can find its port held by someone's dial. Addr therefore picks ports at random below
// the ephemeral range, checks each by binding it, and remembers what it returned.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

const (
	// lowest is the first candidate port: above the well-known and most registered services.
	lowest = 10000
	// defaultEphemeralLow is the start of the ephemeral range where it cannot be read: Linux's
	// default, below the IANA range macOS and Windows use.
	defaultEphemeralLow = 32768
	maxAttempts         = 1000
)

var (
	// mu guards given.
	mu    sync.Mutex
	given = map[int]bool{}
)

// Addr returns "127.0.0.1:port" with a port that was free a moment ago, lies outside the
// kernel's ephemeral range where that range leaves room, and was not returned by an earlier
// call in this process. It is safe for concurrent use.
func Addr() (string, error) {
	mu.Lock()
	defer mu.Unlock()
	hi := ephemeralLow()
	if hi-lowest < 1000 {
		return kernelAddr()
	}
	for range maxAttempts {
		port := lowest + rand.IntN(hi-lowest)
		if given[port] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // in use by someone else
		}
		l.Close()
		given[port] = true
		return l.Addr().String(), nil
	}
	return "", fmt.Errorf("freeport: no free port in [%d, %d) after %d attempts", lowest, hi, maxAttempts)
}

// kernelAddr lets the kernel pick, for systems whose ephemeral range starts too low to leave
// room below it; ports it returned before are held open while it asks again.
func kernelAddr() (string, error) {
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for range maxAttempts {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("freeport: %w", err)
		}
		held = append(held, l)
		if port := l.Addr().(*net.TCPAddr).Port; !given[port] {
			given[port] = true
			return l.Addr().String(), nil
		}
	}
	return "", fmt.Errorf("freeport: no unused port after %d attempts", maxAttempts)
}

// ephemeralLow returns the first port of the range the kernel picks source ports from.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return defaultEphemeralLow
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return defaultEphemeralLow
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return defaultEphemeralLow
	}
	return n
}
